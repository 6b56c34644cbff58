"""The controller: switch sessions, the model and the fabric, reconciled.

Every method here runs on the controller's loop (``loop.Loop``), the one
thread that owns this state: the os-ken shim (``app``), the API (``view``),
the store's watch and the timers post their work to it.  A reconcile plans
on the loop and hands its batches to the sender, which moves them into the
switches phase by phase as barrier replies come back, so the loop is never
held up waiting for a switch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from ..config import Config
from ..events import Cause, Events, Found, Handler, Kind, LinkDown
from ..fabric import Fabric
from ..metrics import Metrics
from ..model import Location, Model, Service
from ..plan.encap import VlanEncap, label_mac
from ..plan.engine import Engine
from ..plan.features.port_security import recover_locations
from ..plan.flows import Flow, is_ours
from ..store import Store
from . import backends, locate, migrations, ofmsg, packet_in, periodic, probes, rounds, stats
from .discovery import Discovery
from .loop import Loop
from .sender import Sender
from .session import SwitchSession

LOG = logging.getLogger("sdnvirt.controller")

DEBOUNCE = 0.01     # gathers a burst of events into one reconcile
RETRY = 0.5         # after a reconcile that failed
RESYNC_BACKOFF = 5.0


class Controller:
    def __init__(self, config: Config, metrics: Metrics, events: Events, failed: Callable[[Handler], None],
                 store: Store | None = None, clock: Callable[[], float] = time.monotonic):
        self.loop = Loop(clock, on_error=self._work_failed)
        self.event_hub = events
        self.failed = failed
        self.clock: Callable[[], float] = self.loop.clock
        self.settings = config.controller.fabric
        self.model = Model(config)
        self.fabric = Fabric()
        self.engine = Engine()
        self.sessions: dict[int, SwitchSession] = {}
        self.discovery = Discovery(lambda: self.settings)
        self.counters = stats.SwitchCounters()
        self.metrics = metrics
        self.metrics.errors_known(ofmsg.ERROR_TYPES.values())
        self.sender = Sender(self.loop, self.metrics.sent, self.metrics.withheld)
        self.prober = probes.Prober(self.model, self.send_frame, self.request, self.metrics.probe_latency, events)
        self.reinject: list[tuple[int, int, bytes]] = []
        self.started = self.last_topology_change = now = self.clock()
        self.incomplete: Callable[[], bool] = lambda: False    # switches known to exist are still to connect
        self.before_plan: Callable[[], object] = lambda: None   # in a cluster: the health of backends exchanged
        self.next_lldp = self.next_stats = now
        # Reconcile requests are numbered: a migration step waits until a
        # reconcile that started after its request is in the switches.
        self.wanted = 0
        self.dirty = self.urgent = False
        self.scheduled: float | None = None    # when the next reconcile is due
        cluster = config.controller.cluster
        self.migrations = migrations.Coordinator(self, store, cluster.name if cluster is not None else None)

    def _work_failed(self, fn: Callable[..., Any]) -> None:
        self.failed(Handler.PACKET_IN if fn is packet_in.handle else Handler.PERIODIC if fn is periodic.tick
                    else Handler.OPENFLOW)

    def start(self) -> None:
        self.loop.after(periodic.TICK, periodic.tick, self)
        self.loop.start()

    def reload(self, config: Config) -> None:
        self.settings = config.controller.fabric
        self.model.set_config(config)
        self.migrations.config_changed()
        LOG.info("config applied: %d tenants, %d VMs", len(config.tenants), sum(1 for _ in self.model.vms()))
        self.request()

    def after(self, delay: float, fn: Callable[[], Any]) -> None:
        self.loop.after(delay, fn)

    # -- switches and ports ----------------------------------------------------
    def switch_connected(self, dp: Any, dpid: int) -> None:
        # A new connection replaces an older one of the same switch, which
        # confirms nothing any more.
        self.sender.switch_gone(dpid)
        session = self.sessions[dpid] = SwitchSession(dp, dpid)
        self.counters.names.setdefault(dpid, f"{dpid:016x}")
        self.fabric.add_switch(dpid)
        LOG.info("switch %016x connected", dpid)
        # vlan mode: frames cross addressed to their switch's label, so a shared one is unreachable.
        vlan = self.model.config.controller.fabric.encapsulation == VlanEncap.name
        shared = sorted(f"{other:016x}" for other in self.fabric.switches
                        if vlan and other != dpid and label_mac(other) == label_mac(dpid))
        if shared:
            LOG.warning("switch %016x shares its label (the low 24 bits of its dpid) with %s: the lowest dpid "
                        "keeps it, VMs on the others are reachable from their own switch only",
                        dpid, ", ".join(shared))
        self.event_hub.publish(Kind.SWITCH_CONNECTED, dpid=f"{dpid:016x}",
                               **({"label_shared_with": ",".join(shared)} if shared else {}))
        self.send(session, parser.OFPPortDescStatsRequest(dp, 0))
        self._read(session)
        self.request(topology=True)

    def switch_gone(self, dp: Any) -> None:
        session = self.session(dp)
        if session is None:
            return
        del self.sessions[session.dpid]
        self.fabric.remove_switch(session.dpid)
        # Rolled back before the sender stops waiting for it, which may end a
        # push that would otherwise complete a migration onto it.
        self.migrations.switch_gone(session.dpid)
        self.sender.switch_gone(session.dpid)
        # Its VMs stay where they are (the switch keeps forwarding if it is
        # up), but as backends they take no new connection until probes
        # reach them again.
        for name in [n for n, loc in self.model.locations.items() if loc.dpid == session.dpid]:
            for svc, backend in self.model.backends_down(name, "its switch disconnected"):
                backends.changed(self.event_hub, self.model, svc, backend, Cause.SWITCH_LOST)
        self.discovery.switch_gone(session.dpid)
        LOG.warning("switch %016x disconnected; it keeps its flows (fail-secure)", session.dpid)
        self.event_hub.publish(Kind.SWITCH_LOST, dpid=f"{session.dpid:016x}")
        self.request(topology=True)

    def barrier_reply(self, dp: Any, xid: int) -> None:
        session = self.session(dp)
        if session is not None:
            self.sender.barrier_reply(session.dpid, xid)

    def session(self, dp: Any) -> SwitchSession | None:
        """The session of a switch that finished its handshake on this connection.

        Events of a connection still in its handshake (no dpid yet) or of one
        replaced by a newer connection are ignored; a new connection reads
        the switch's ports and flows afresh.
        """
        session = self.sessions.get(dp.id) if dp.id is not None else None
        return session if session is not None and session.dp is dp else None

    def ports_described(self, dp: Any, ports: list) -> None:
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
        session = self.session(dp)
        if session is None or port.port_no > ofp.OFPP_MAX:
            return
        if deleted:
            if self.fabric.remove_port(session.dpid, port.port_no):
                self.link_down(session.dpid, port.port_no, LinkDown.PORT_DOWN)
            self.unbind_port(session.dpid, port.port_no, deleted=True)
        else:
            self._port_changed(session.dpid, port)
        self._announce(session, [port.port_no])
        self.request(topology=True)

    def _port_changed(self, dpid: int, port: Any) -> None:
        up = not (port.config & ofp.OFPPC_PORT_DOWN) and not (port.state & ofp.OFPPS_LINK_DOWN)
        if self.fabric.set_port(dpid, port.port_no, up, port.name.decode(errors="replace")):
            self.link_down(dpid, port.port_no, LinkDown.PORT_DOWN)
        if up:
            self.migrations.port_up(Location(dpid, port.port_no))
        else:
            self.unbind_port(dpid, port.port_no)

    def unbind_port(self, dpid: int, port: int, deleted: bool = False) -> None:
        # A VM whose port went down is no longer there; if it comes back, here
        # or elsewhere, it is learnt again, and its port is free for another VM.
        # A migration decides for the ports it moves a VM between.
        if self.migrations.port_gone(Location(dpid, port), deleted):
            return
        vm = self.model.vm_at(Location(dpid, port))
        if vm is not None:
            LOG.info("VM %s (%s) left %016x port %d", vm.name, vm.tenant, dpid, port)
            self.event_hub.publish(Kind.VM_LEFT_PORT, vm=vm.name, tenant=vm.tenant, dpid=f"{dpid:016x}", port=port)
            for svc, backend in self.model.unbind(vm.name, "its VM left its port"):
                backends.changed(self.event_hub, self.model, svc, backend, Cause.VM_LEFT_PORT)

    def link_down(self, dpid: int, port: int, cause: LinkDown) -> None:
        self.event_hub.publish(Kind.LINK_DOWN, dpid=f"{dpid:016x}", port=port, cause=cause)

    # -- what the switch holds ---------------------------------------------------
    def _read(self, session: SwitchSession) -> None:
        for req in session.read_requests():
            self.send(session, req)

    def multipart_reply(self, msg: Any) -> None:
        """A part of a flow, group, meter, port or table stats reply."""
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
        session.read(kind, body)
        if kind == "flows":
            self._flows_read(session)
        self.request()

    def _flows_read(self, session: SwitchSession) -> None:
        flows = session.installed_flows or {}
        if session.generation == 1 and any(is_ours(f.cookie) for f in flows.values()):
            session.warm = True
        for name, loc in recover_locations(self.model, session.dpid, set(flows.values())).items():
            vm = self.model.vm(name)
            if vm is not None and name not in self.model.locations:
                self.model.bind(name, loc)
                LOG.info("VM %s found at %016x port %d in the switch's own flows", name, session.dpid, loc.port)
                self.event_hub.publish(Kind.VM_LOCATED, vm=name, tenant=vm.tenant, dpid=f"{session.dpid:016x}",
                                       port=loc.port, how=Found.RECOVERED)
        LOG.info("switch %016x holds %d flows%s", session.dpid, len(flows),
                 " (warm: left as is until the fabric settles)" if session.warm else "")
        self.event_hub.publish(Kind.SWITCH_FLOWS_READ, dpid=f"{session.dpid:016x}", flows=len(flows), warm=session.warm)

    def error(self, dp: Any, err_type: int, code: int) -> None:
        LOG.error("switch %016x refused a message: type %d code %d", dp.id, err_type, code)
        self.metrics.openflow_errors.labels(ofmsg.ERROR_TYPES.get(err_type, str(err_type))).inc()
        session = self.session(dp)
        # The shadow copy of its tables may now be wrong: read the truth again.
        if session is not None and self.clock() - session.last_resync >= RESYNC_BACKOFF:
            session.last_resync = self.clock()
            self._read(session)

    # -- reconcile ---------------------------------------------------------------
    def request(self, topology: bool = False, urgent: bool = False) -> int:
        """Ask for a reconcile; the request's number.  ``urgent``: at once, not gathered with
        a burst (a migration's flip: each millisecond it waits is traffic lost at the source)."""
        self.wanted += 1
        if topology:
            self.last_topology_change = self.clock()
        self.dirty = True
        self.urgent = self.urgent or urgent
        self.schedule(0.0 if self.urgent else DEBOUNCE)
        return self.wanted

    def schedule(self, delay: float) -> None:
        due = self.clock() + delay
        if self.scheduled is None or due < self.scheduled:
            # An earlier one does not cancel a later one: that finds nothing dirty, or a newer request.
            self.scheduled = due
            self.loop.after(delay, self._reconcile)

    def settled(self) -> bool:
        quiet = self.clock() - max(self.started, self.last_topology_change)
        return quiet >= self.settings.settle and not self.incomplete()

    def _reconcile(self) -> None:
        self.scheduled = None
        if not self.dirty or self.sender.busy:
            return     # a push in flight reconciles again when it is done
        self.dirty = self.urgent = False
        started = self.clock()
        try:
            self.reconcile(started)
        except Exception:    # noqa: BLE001 - the daemon must outlive a bad reconcile
            LOG.exception("reconcile failed; retrying")
            self._failed_round(started)

    def _failed_round(self, started: float) -> None:
        self.failed(Handler.RECONCILE)
        self.metrics.reconciled("failure", self.clock() - started)
        self.dirty = True
        self.schedule(RETRY)

    def reconcile(self, started: float) -> None:
        """Make every switch hold its planned flows, groups and meters, touching only what differs."""
        self.before_plan()

        def done() -> None:
            if self.dirty:
                self.schedule(0.0 if self.urgent else DEBOUNCE)
        rounds.reconcile(self, started, done, partial(self._failed_round, started))

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

    def send_frames(self, frames: list[tuple[int, int, bytes]]) -> None:
        for frame in frames:
            self.send_frame(*frame)

    def _announce(self, session: SwitchSession, ports: list[int] | None = None) -> None:
        """LLDP out of the ports (to find links) and probes for this hypervisor's silent VMs."""
        self.send_frames(self.discovery.frames(self.fabric, session.dpid, ports))
        self._locate(session, ports)

    def _locate(self, session: SwitchSession, ports: list[int] | None = None) -> None:
        self.send_frames(locate.probes(self.model, self.fabric, session.dpid, ports))
        locate.soon(session, self.clock())

    # -- the migration coordinator's port (migrations.Network) ---------------------
    def connected(self) -> dict[int, str]:
        return {dpid: s.name for dpid, s in self.sessions.items() if s.name}

    def installed_flows(self) -> dict[int, list[Flow]]:
        return {dpid: list(s.installed_flows.values()) for dpid, s in self.sessions.items()
                if s.installed_flows is not None}

    def backend_counters(self, services: Iterable[Service] | None = None) -> dict[tuple, dict]:
        return stats.backend_counters(self.model, self.sessions, services)

    def holds(self, dpid: int, request: int) -> bool:
        session = self.sessions.get(dpid)
        return session is not None and session.writable and session.covered >= request
