"""The controller: switch sessions, the model and the fabric, reconciled.

The os-ken shim (``app``) turns OpenFlow events into calls here; so do the
API, the ticker and the migration coordinator.  Every call takes ``self.lock``
while it reads or changes the state; the reconciler thread plans under the
lock and sends outside it, so a reconcile waiting for barriers never holds up
packet-ins, the API or the ticker.  Threads: os-ken's (events), the API's,
the ticker and the reconciler.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from .. import status
from ..config import Config
from ..fabric import Fabric
from ..metrics import Metrics, Snapshot, StateCollector
from ..model import Location, Model
from ..plan.flows import ETH_TYPE_LLDP, Flow, Owner, cookie_owner, is_ours
from ..plan.pipeline import meters, plan, recover_locations
from ..plan.reconcile import Batches, Tables, Verb, reconcile
from ..plan.services import Group
from ..store import Store
from . import locate, migrations, ofmsg, packets, probes, stats
from .discovery import Discovery
from .sender import Sender
from .session import SwitchSession

LOG = logging.getLogger("sdnvirt.controller")

DEBOUNCE = 0.01     # gathers a burst of events into one reconcile
TICK = 0.05
RESYNC_BACKOFF = 5.0
FLOWS, GROUPS, METERS = "flows", "groups", "meters"


class Controller:
    def __init__(self, config: Config, metrics: Metrics, store: Store | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.lock = threading.RLock()
        self.clock = clock
        self.settings = config.controller.fabric
        self.model = Model(config)
        self.fabric = Fabric()
        self.sessions: dict[int, SwitchSession] = {}
        self.discovery = Discovery()
        self.counters = stats.SwitchCounters()
        self.metrics = metrics
        self.metrics.errors_known(ofmsg.ERROR_TYPES.values())
        self.sender = Sender(lambda kind: self.metrics.openflow_sent.labels(kind).inc())
        self.prober = probes.Prober(self.model, self.send_frame, self.request, self.metrics.probe_latency)
        self.reinject: list[tuple[int, int, bytes]] = []
        now = clock()
        self.started = now
        self.last_topology_change = now
        self.dirty = threading.Event()
        # Reconcile requests are numbered: a migration step waits until a
        # reconcile that started after its request is in the switches.
        self.wanted = 0
        self.migrations = migrations.Coordinator(self, store)
        self.metrics.registry.register(StateCollector(self.lock, self._metrics_snapshot))

    def start(self) -> None:
        for target, name in ((self._reconcile_loop, "reconcile"), (self._tick_loop, "ticker")):
            threading.Thread(target=target, name=f"sdnvirt-{name}", daemon=True).start()

    def reload(self, config: Config) -> None:
        with self.lock:
            self.settings = config.controller.fabric
            self.model.set_config(config)
            self.migrations.config_changed()
        LOG.info("config applied: %d tenants, %d VMs", len(config.tenants), sum(1 for _ in self.model.vms()))
        self.request()

    def request(self, topology: bool = False) -> int:
        """Ask for a reconcile; the request's number."""
        with self.lock:
            self.wanted += 1
            if topology:
                self.last_topology_change = self.clock()
            self.dirty.set()
            return self.wanted

    # -- switches and ports ----------------------------------------------------
    def switch_connected(self, dp: Any, dpid: int) -> None:
        with self.lock:
            session = self.sessions[dpid] = SwitchSession(dp, dpid, name=self.counters.names.get(dpid, ""))
            self.counters.names.setdefault(dpid, f"{dpid:016x}")
            self.fabric.add_switch(dpid)
        LOG.info("switch %016x connected", dpid)
        self.send(session, parser.OFPPortDescStatsRequest(dp, 0))
        self._read(session, METERS, GROUPS, FLOWS)
        self.request(topology=True)

    def switch_gone(self, dp: Any) -> None:
        with self.lock:
            session = self.session(dp)
            if session is None:
                return
            del self.sessions[session.dpid]
            self.fabric.remove_switch(session.dpid)
            self.migrations.switch_gone(session.dpid)
            # Its VMs stay where they are (the switch keeps forwarding if it
            # is up), but as backends they take no new connection until
            # probes reach them again.
            for vm in [self.model.vm(n) for n, loc in self.model.locations.items() if loc.dpid == session.dpid]:
                for svc, backend in self.model.backends_down(vm.name, "its switch disconnected"):
                    LOG.warning("backend %s of %s/%s is DOWN (its switch disconnected)",
                                backend.key, svc.tenant, svc.name)
            self.discovery.switch_gone(session.dpid)
        LOG.warning("switch %016x disconnected; it keeps its flows (fail-secure)", session.dpid)
        self.request(topology=True)

    def session(self, dp: Any) -> SwitchSession | None:
        """The session of a switch that finished its handshake on this connection.

        Events of a connection still in its handshake (no dpid yet) or of one
        replaced by a newer connection are ignored; a new connection reads
        the switch's ports and flows afresh.
        """
        session = self.sessions.get(dp.id) if dp.id is not None else None
        return session if session is not None and session.dp is dp else None

    def ports_described(self, dp: Any, ports: list) -> None:
        with self.lock:
            session = self.session(dp)
            if session is None:
                return
            sw = self.fabric.add_switch(session.dpid)
            for port in ports:
                if port.port_no == ofp.OFPP_LOCAL:
                    sw.name = session.name = self.counters.names[session.dpid] = port.name.decode(errors="replace")
                elif port.port_no <= ofp.OFPP_MAX:
                    self._port_changed(session.dpid, port)
        self._announce(session)
        self.request(topology=True)

    def port_status(self, dp: Any, port: Any, deleted: bool) -> None:
        if port.port_no > ofp.OFPP_MAX:
            return
        with self.lock:
            session = self.session(dp)
            if session is None:
                return
            if deleted:
                self.fabric.remove_port(session.dpid, port.port_no)
                self._unbind_port(session.dpid, port.port_no, deleted=True)
            else:
                self._port_changed(session.dpid, port)
        self._announce(session, [port.port_no])
        self.request(topology=True)

    def _port_changed(self, dpid: int, port: Any) -> None:
        up = not (port.config & ofp.OFPPC_PORT_DOWN) and not (port.state & ofp.OFPPS_LINK_DOWN)
        self.fabric.set_port(dpid, port.port_no, up)
        if up:
            self.migrations.port_up(Location(dpid, port.port_no))
        else:
            self._unbind_port(dpid, port.port_no)

    def _unbind_port(self, dpid: int, port: int, deleted: bool = False) -> None:
        # A VM whose port went down is no longer there; if it comes back, here
        # or elsewhere, it is learnt again, and its port is free for another VM.
        # A migration decides for the ports it moves a VM between.
        if self.migrations.port_gone(Location(dpid, port), deleted):
            return
        vm = self.model.vm_at(Location(dpid, port))
        if vm is not None:
            LOG.info("VM %s (%s) left %016x port %d", vm.name, vm.tenant, dpid, port)
            for svc, backend in self.model.unbind(vm.name, "its VM left its port"):
                LOG.warning("backend %s of %s/%s is DOWN (its VM left its port)", backend.key, svc.tenant, svc.name)

    # -- what the switch holds ---------------------------------------------------
    def _read(self, session: SwitchSession, *what: str) -> None:
        dp = session.dp
        with self.lock:
            reqs = []
            for kind in what:
                # A newer read replaces an unfinished older one.
                session.multipart = {x: e for x, e in session.multipart.items() if e[0] != kind}
                if kind == FLOWS:
                    session.generation += 1
                    session.installed_flows = None
                    req = parser.OFPFlowStatsRequest(dp, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY, ofp.OFPG_ANY,
                                                     0, 0, parser.OFPMatch())
                elif kind == GROUPS:
                    session.installed_groups = None
                    req = parser.OFPGroupDescStatsRequest(dp, 0)
                else:
                    session.installed_meters = None
                    req = parser.OFPMeterConfigStatsRequest(dp, 0, ofp.OFPM_ALL)
                session.request(req, kind)
                reqs.append(req)
        for req in reqs:
            self.send(session, req)

    def multipart_reply(self, msg: Any) -> None:
        """A part of a flow, group, meter, port or table stats reply."""
        with self.lock:
            session = self.session(msg.datapath)
            if session is None:
                return
            if isinstance(msg, parser.OFPPortStatsReply):
                self.counters.ports(self.model, session, msg.body)
                return
            if isinstance(msg, parser.OFPTableStatsReply):
                self.counters.tables(session, msg.body)
                return
            whole = session.reply_part(msg, bool(msg.flags & ofp.OFPMPF_REPLY_MORE))
            if whole is None:
                return
            kind, body = whole
            if kind == stats.COUNTERS:
                self.counters.flows(self.model, session, body)
                return
            if kind == GROUPS:
                session.installed_groups = {g.group_id: g for g in map(ofmsg.installed_group, body)}
            elif kind == METERS:
                session.installed_meters = {m.meter_id: m for m in map(ofmsg.installed_meter, body)}
            else:
                self._flows_read(session, body)
        self.request()

    def _flows_read(self, session: SwitchSession, body: list) -> None:
        flows = {f.key: f for f in map(ofmsg.installed_flow, body)}
        first_read = session.generation == 1
        session.installed_flows = flows
        if first_read and any(is_ours(f.cookie) for f in flows.values()):
            session.warm = True
        for name, loc in recover_locations(self.model, session.dpid, set(flows.values())).items():
            if name not in self.model.locations:
                self.model.bind(name, loc)
                LOG.info("VM %s found at %016x port %d in the switch's own flows", name, session.dpid, loc.port)
        LOG.info("switch %016x holds %d flows%s", session.dpid, len(flows),
                 " (warm: left as is until the fabric settles)" if session.warm else "")

    def error(self, dp: Any, err_type: int, code: int) -> None:
        LOG.error("switch %016x refused a message: type %d code %d", dp.id, err_type, code)
        self.metrics.openflow_errors.labels(ofmsg.ERROR_TYPES.get(err_type, str(err_type))).inc()
        with self.lock:
            session = self.session(dp)
            if session is None:
                return
            # The shadow copy of its tables may now be wrong: read the truth again.
            now = self.clock()
            if now - session.last_resync < RESYNC_BACKOFF:
                return
            session.last_resync = now
        self._read(session, METERS, GROUPS, FLOWS)

    # -- reconcile ---------------------------------------------------------------
    def _reconcile_loop(self) -> None:
        # Runs as long as the process: the daemon ends with os._exit.
        while True:
            self.dirty.wait()
            time.sleep(DEBOUNCE)
            self.dirty.clear()
            started = self.clock()
            try:
                self.reconcile()
            except Exception:    # noqa: BLE001 - the daemon must outlive a bad reconcile
                LOG.exception("reconcile failed; retrying")
                self.metrics.reconciled("failure", self.clock() - started)
                time.sleep(0.5)
                self.dirty.set()
            else:
                self.metrics.reconciled("success", self.clock() - started)

    def _settled(self) -> bool:
        return self.clock() - max(self.started, self.last_topology_change) >= self.settings.settle

    def reconcile(self) -> None:
        """Make every switch hold its planned flows, groups and meters, touching only what differs."""
        started = self.clock()
        with self.lock:
            covers = self.wanted
            desired = plan(self.model, self.fabric)
            want_meters = meters(self.settings)
            work: dict[int, tuple[SwitchSession, Batches]] = {}
            planned: dict[int, tuple[Tables, int]] = {}
            held = False
            for dpid, session in self.sessions.items():
                if not session.ready or (session.warm and not self._settled()):
                    held = True     # not read yet, or warm and the fabric not settled
                    continue
                session.warm = False
                want = Tables.of(desired.flows.get(dpid, ()), desired.groups.get(dpid, {}), want_meters)
                batches = reconcile(want, session.tables())
                if batches:
                    work[dpid] = (session, batches)
                    planned[dpid] = (want, session.generation)
                    if LOG.isEnabledFor(logging.DEBUG):
                        for change in (c for b in batches.phases.values() for c in b):
                            LOG.debug("%016x %s %s", dpid, change.verb.value, change.entry)
            reinject, self.reinject = self.reinject, []

        self.sender.send_batches(work)
        for _, batches in work.values():
            for kind, name in ((Flow, "flow"), (Group, "group")):
                n = batches.count(kind)
                self.metrics.changed(name, add=n[Verb.ADD], modify=n[Verb.MODIFY], delete=n[Verb.DELETE])
        with self.lock:
            for dpid, (want, generation) in planned.items():
                session = self.sessions.get(dpid)
                if session is not None and session is work[dpid][0] and session.generation == generation:
                    session.installed(want)
        for dpid, port, data in reinject:
            self.packet_out(dpid, data, port, in_port=port, to_table=True)
        self.migrations.reconciled(covers)
        with self.lock:
            fresh = [s for s in (self.sessions.get(d) for d in work) if s is not None and s.unannounced]
            for s in fresh:
                s.unannounced = False
            everyone = list(self.sessions.values()) if fresh else []
        # A switch without flows dropped its neighbours' LLDP and its VMs'
        # answers to probes; now that it has them, ask again instead of
        # waiting for the next rounds.
        for session in everyone:
            self._send_frames(self.discovery.frames(self.fabric, session.dpid))
        for session in fresh:
            self._locate(session)
        if work:
            LOG.info("reconciled %d switches, %d flow and %d group changes in %.1f ms", len(work),
                     sum(len(b.entries(v)) for _, b in work.values() for v in Verb),
                     sum(len(b.entries(v, Group)) for _, b in work.values() for v in Verb),
                     (self.clock() - started) * 1000)
            if not held:
                with self.lock:
                    located, total = len(self.model.locations), sum(1 for _ in self.model.vms())
                LOG.info("fabric programmed: %d switches, %d flows, %d of %d VMs located",
                         len(desired.flows), sum(len(f) for f in desired.flows.values()), located, total)

    def barrier_reply(self, xid: int) -> None:
        self.sender.barrier_reply(xid)

    # -- sending -------------------------------------------------------------------
    def send(self, session: SwitchSession, msg: Any) -> None:
        """Every OpenFlow message sdnvirt sends goes out through the sender
        (os-ken's own handshake and echoes do not)."""
        self.sender.send(session.dp, msg)

    def packet_out(self, dpid: int, data: bytes, port: int, in_port: int = ofp.OFPP_CONTROLLER,
                   to_table: bool = False) -> None:
        session = self.sessions.get(dpid)
        if session is None:
            return
        out = ofp.OFPP_TABLE if to_table else port
        self.send(session, parser.OFPPacketOut(session.dp, buffer_id=ofp.OFP_NO_BUFFER, in_port=in_port,
                                               actions=[parser.OFPActionOutput(out, 0)], data=data))

    def send_frame(self, dpid: int, port: int, data: bytes) -> None:
        self.packet_out(dpid, data, port)

    def _send_frames(self, frames: list[tuple[int, int, bytes]]) -> None:
        for frame in frames:
            self.send_frame(*frame)

    def _announce(self, session: SwitchSession, ports: list[int] | None = None) -> None:
        """LLDP out of the ports (to find links) and probes for this hypervisor's silent VMs."""
        with self.lock:
            frames = self.discovery.frames(self.fabric, session.dpid, ports)
        self._send_frames(frames)
        self._locate(session, ports)

    def _locate(self, session: SwitchSession, ports: list[int] | None = None) -> None:
        with self.lock:
            frames = locate.probes(self.model, self.fabric, session.dpid, ports)
            locate.soon(session, self.clock())
        self._send_frames(frames)

    # -- packets -------------------------------------------------------------------
    def packet_in(self, msg: Any) -> None:
        """Dispatched by the owner of the flow that sent it (its cookie's kind)."""
        session = self.session(msg.datapath)
        if session is None:
            return
        started = time.perf_counter()
        purpose = "learn"
        dpid = session.dpid
        try:
            in_port = msg.match["in_port"]
            owner = cookie_owner(msg.cookie)[0]
            if owner == Owner.TENANT:
                purpose = "probe_reply"
                with self.lock:
                    answers = self.prober.on_reply(dpid, in_port, msg.match.get("metadata", 0), msg.data)
                self._send_frames(answers)
            elif owner == Owner.SERVICE:
                purpose = "reject"
                with self.lock:
                    answer = probes.reject(self.model, msg.match.get("metadata", 0), msg.data)
                if answer is not None:
                    self.packet_out(dpid, answer, in_port)
            elif _ethertype(msg.data) == ETH_TYPE_LLDP:
                purpose = "lldp"
                self._lldp_in(dpid, in_port, msg.data)
            else:
                self._learn(dpid, in_port, msg.data)
        except packets.BadFrame as err:
            LOG.debug("switch %016x: %s", dpid, err)
        except Exception:    # noqa: BLE001 - no packet may stop the daemon
            LOG.exception("switch %016x: packet-in not handled", dpid)
        finally:
            self.metrics.packet_in(ofmsg.PACKET_IN_REASONS.get(msg.reason, str(msg.reason)), purpose,
                                   time.perf_counter() - started)

    def _lldp_in(self, dpid: int, in_port: int, data: bytes) -> None:
        with self.lock:
            src = self.discovery.heard(self.fabric, dpid, in_port, data, self.settings.lldp_interval, self.clock())
            if src is not None:
                for end in (src, (dpid, in_port)):
                    self._unbind_port(*end)
        if src is not None:
            LOG.info("link %016x:%d -> %016x:%d", src[0], src[1], dpid, in_port)
            self.request(topology=True)

    def _learn(self, dpid: int, in_port: int, data: bytes) -> None:
        frame = packets.parse_frame(data)
        if frame.tagged:
            raise packets.BadFrame(f"tagged frame on access port {in_port} dropped")
        with self.lock:
            if self.fabric.is_fabric_port(dpid, in_port):
                return
            seen = self.model.observe(frame.src, frame.sender_ip, Location(dpid, in_port),
                                      lambda loc: self.fabric.port_live(loc.dpid, loc.port))
            if seen.vm is None or not seen.bound or seen.reason == "already there":
                if seen.vm is not None and not seen.bound:
                    LOG.warning("frame claiming VM %s on %016x port %d ignored: %s",
                                seen.vm.name, dpid, in_port, seen.reason)
                return
            self.reinject.append((dpid, in_port, data))
        LOG.info("VM %s (%s) is at %016x port %d%s", seen.vm.name, seen.vm.tenant, dpid, in_port,
                 f", moved from {seen.moved_from}" if seen.moved_from else "")
        self.request()

    # -- periodic work -----------------------------------------------------------
    def _tick_loop(self) -> None:
        next_lldp = next_stats = self.clock()
        while True:
            time.sleep(TICK)
            try:
                next_lldp, next_stats = self.tick(next_lldp, next_stats)
            except Exception:    # noqa: BLE001
                LOG.exception("periodic work failed")

    def tick(self, next_lldp: float, next_stats: float) -> tuple[float, float]:
        now = self.clock()
        with self.lock:
            sessions = list(self.sessions.values())
            frames = []
            if now >= next_lldp:
                next_lldp = now + self.settings.lldp_interval
                frames += [f for s in sessions for f in self.discovery.frames(self.fabric, s.dpid)]
            for s in sessions:
                lost = locate.due(s, now, self.settings.locate_interval)
                if lost is not None:
                    frames += locate.probes(self.model, self.fabric, s.dpid, lost=lost)
            requests = []
            if now >= next_stats:
                next_stats = now + stats.INTERVAL
                requests = [(s, req) for s in sessions for req in self.counters.requests(s)]
            gone = self.discovery.expire(self.fabric, now, self.settings.link_timeout)
            frames += self.prober.tick(now)
            warm = any(s.warm for s in sessions)
        for src in gone:
            LOG.warning("link from %016x:%d timed out", *src)
        self._send_frames(frames)
        for session, req in requests:
            self.send(session, req)
        if gone:
            self.request(topology=True)
        if warm and self._settled():
            self.dirty.set()
        self.migrations.tick()
        return next_lldp, next_stats

    # -- the migration coordinator's port (migrations.Network) ---------------------
    def connected(self) -> dict[int, str]:
        return {dpid: s.name for dpid, s in self.sessions.items() if s.name}

    # -- the API's view (sdnvirt.api.facade.Controller) -----------------------------
    def backend_counters(self) -> dict[tuple, dict]:
        return stats.backend_counters(self.model, self.sessions)

    def installed_flows(self) -> dict[int, list[Flow]]:
        return {dpid: list(s.installed_flows.values()) for dpid, s in self.sessions.items()
                if s.installed_flows is not None}

    def _flow_counts(self) -> dict[int, int]:
        return {dpid: len(s.installed_flows) for dpid, s in self.sessions.items() if s.installed_flows is not None}

    def _metrics_snapshot(self) -> Snapshot:
        return Snapshot(self.model, self.fabric, self.counters.names, set(self.sessions),
                        {dpid: s.table_flows for dpid, s in self.sessions.items()},
                        self.backend_counters(), self.counters.vm_traffic, self.counters.spoofed,
                        self.migrations.records())

    def snapshot(self) -> dict:
        with self.lock:
            return status.snapshot(self.model, self.fabric, self._flow_counts(), self.backend_counters())

    def topology(self) -> dict:
        with self.lock:
            return status.topology(self.model, self.fabric, self._flow_counts())

    def migrate(self, vm: str, target: str, mode: str) -> dict:
        return self.migrations.request(vm, target, mode)

    def migration_records(self) -> list[dict]:
        return self.migrations.records()

    def migration_record(self, mid: int) -> dict | None:
        return self.migrations.record(mid)

    def migration_event(self, mid: int, event: str, **fields: Any) -> dict:
        return self.migrations.event(mid, event, **fields)


def _ethertype(data: bytes) -> int:
    if len(data) < 14:
        raise packets.BadFrame(f"runt frame of {len(data)} bytes")
    return int.from_bytes(data[12:14], "big")
