"""The os-ken application: OpenFlow events in, model changes, reconcile out.

Three threads touch the state, all under ``self.lock``: os-ken's event loop
(switch, port, packet-in and stats events), the ticker (LLDP, link expiry,
VM location probes, health probes, counters) and the
reconciler.  The reconciler is the only writer of flows, groups and meters
(meters on connect); everything else changes the model or the fabric and
asks it to run.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from os_ken.base import app_manager
from os_ken.controller import ofp_event
from os_ken.controller.handler import CONFIG_DISPATCHER, DEAD_DISPATCHER, MAIN_DISPATCHER, set_ev_cls
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from .. import status
from ..config import Config
from ..counters import Totals
from ..events import Cause, Events, Found, Handler, Kind, LinkDown
from ..fabric import Fabric
from ..metrics import Metrics, Snapshot, StateCollector
from ..model import Location, Model
from ..plan.diff import Changes, diff
from ..plan.flows import ETH_TYPE_LLDP, Flow, Owner, is_ours
from ..plan.pipeline import Prio, Table, meters, plan, recover_locations
from ..store import Store
from . import migrations, ofmsg, packets, probes

LOG = logging.getLogger("sdnvirt.controller")

BARRIER_TIMEOUT = 2.0
DEBOUNCE = 0.01     # gathers a burst of events into one reconcile
TICK = 0.05
RESYNC_BACKOFF = 5.0
STATS_INTERVAL = 5.0     # counters (load balancer, ports, tables, anti-spoofing) read from the switches
OWNER_MASK = 0xFF << 56  # the owner kind of a cookie
# ARP probes for silent VMs follow a switch's first flows and a port coming
# up after this long, then at doubling intervals up to locate_interval: a
# reply lost while the switch (or the controller) was busy costs a fraction
# of a second, not a whole round.
LOCATE_FIRST = 0.25


class SdnvirtApp(app_manager.OSKenApp):
    OFP_VERSIONS = [ofp.OFP_VERSION]

    def __init__(self, *args, sdnvirt_config: Config, sdnvirt_metrics: Metrics, sdnvirt_events: Events,
                 sdnvirt_store: Store | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.name = "sdnvirt"
        self.lock = threading.RLock()
        self.settings = sdnvirt_config.controller.fabric
        self.model = Model(sdnvirt_config)
        self.fabric = Fabric()
        self.dps: dict[int, object] = {}
        self.installed: dict[int, set[Flow]] = {}       # what each switch holds, as last read or written
        self.generation: dict[int, int] = {}            # bumped on every re-read of a switch's flows
        self.stats_parts: dict[int, list[Flow]] = {}
        self.meter_parts: dict[int, dict] = {}
        self.groups: dict[int, dict] = {}               # group id -> Group, per switch, as read or written
        self.group_parts: dict[int, dict] = {}
        self.meters_ready: set[int] = set()             # switches whose meters are as planned
        self.warm: set[int] = set()                     # came back holding our flows, not yet reconciled
        # Connected, but LLDP and probes sent to or through them may have been
        # dropped for lack of flows: announced again once their flows are in.
        self.unannounced: set[int] = set()
        self.last_resync: dict[int, float] = {}
        self.link_seen: dict[tuple[int, int], float] = {}
        self.locate_due: dict[int, tuple[float, float]] = {}    # dpid -> (next probes, step)
        self.reinject: list[tuple[int, int, bytes]] = []
        self.barriers: dict[int, threading.Event] = {}
        self.secret = os.urandom(16)
        now = time.monotonic()
        self.started = now
        self.last_topology_change = now
        self.metrics = sdnvirt_metrics
        self.metrics.errors_known(ofmsg.ERROR_TYPES.values())
        self.event_hub = sdnvirt_events
        self.prober = probes.Prober(self.model, self._send_frame, self._request, self.metrics.probe_latency,
                                    self.event_hub)
        self.switch_names: dict[int, str] = {}          # every switch connected since the start
        # What the switches counted in the lb and unnat tables' flows: the
        # backends' connections and their packets/bytes each way; per VM, its
        # port's counters and its anti-spoofing drops; flows per table.
        self.vm_traffic = Totals(4)
        self.spoofed = Totals(2)
        self.table_flows: dict[int, dict[int, int]] = {}
        self.flow_counters: dict[tuple[int, int], list] = {}     # (dpid, table) -> flow stats
        self.counter_parts: dict[int, list] = {}                 # xid -> flow stats so far
        self.counter_xids: set[int] = set()
        self.dirty = threading.Event()
        # Reconcile requests are numbered: a migration step waits until a
        # reconcile that started after its request is in the switches.
        self.wanted = 0
        self.migrations = migrations.Coordinator(self, sdnvirt_store)
        self.metrics.registry.register(StateCollector(self.lock, self._metrics_snapshot))

    # -- life cycle ------------------------------------------------------------
    def start(self):
        thread = super().start()
        for target, name in ((self._reconcile_loop, "reconcile"), (self._tick_loop, "ticker")):
            threading.Thread(target=target, name=f"sdnvirt-{name}", daemon=True).start()
        return thread

    def reload(self, config: Config) -> None:
        with self.lock:
            old, self.settings = self.settings, config.controller.fabric
            self.model.set_config(config)
            self.migrations.config_changed()
            dps = list(self.dps.values()) if meters(old) != meters(self.settings) else []
        for dp in dps:
            self._read_meters(dp)
        LOG.info("config applied: %d tenants, %d VMs", len(config.tenants), sum(1 for _ in self.model.vms()))
        self._request()

    def get_handlers(self, ev, state=None):
        return [self._guarded(h) for h in super().get_handlers(ev, state)]

    def _guarded(self, handler):
        # With its native hub, os-ken's TaskExit is Exception itself: whatever a
        # handler raises would silently end the app's event loop, and with it
        # every later OpenFlow event.  Logged, counted and survived here.
        def run(ev):
            try:
                handler(ev)
            except Exception:    # noqa: BLE001
                LOG.exception("%s failed on %s", handler.__name__, type(ev).__name__)
                self._failed(Handler.OPENFLOW)
        return run

    def _failed(self, handler: Handler) -> None:
        self.metrics.handler_errors.labels(handler.value).inc()
        self.event_hub.publish(Kind.HANDLER_ERROR, handler=handler)

    def _request(self, topology: bool = False) -> None:
        with self.lock:
            self.wanted += 1
            if topology:
                self.last_topology_change = time.monotonic()
        self.dirty.set()

    # -- switches and ports ----------------------------------------------------
    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    def _switch_features(self, ev):
        dp = ev.msg.datapath
        # os-ken's own handler, on another thread, sets dp.id from this same
        # message; it may not have run yet.
        dp.id = dpid = ev.msg.datapath_id
        with self.lock:
            self.dps[dpid] = dp
            self.switch_names.setdefault(dpid, f"{dpid:016x}")
            self.unannounced.add(dpid)
            self.fabric.add_switch(dpid)
            self.installed.pop(dpid, None)
        LOG.info("switch %016x connected", dpid)
        self.event_hub.publish(Kind.SWITCH_CONNECTED, dpid=f"{dpid:016x}")
        self._send(dp, parser.OFPPortDescStatsRequest(dp, 0))
        self._read_meters(dp)
        self._read_groups(dp)
        self._read_flows(dp)
        self._request(topology=True)

    @set_ev_cls(ofp_event.EventOFPStateChange, DEAD_DISPATCHER)
    def _switch_gone(self, ev):
        dp = ev.datapath
        with self.lock:
            if not self._known(dp):
                return
            del self.dps[dp.id]
            self.unannounced.discard(dp.id)
            self.flow_counters = {k: v for k, v in self.flow_counters.items() if k[0] != dp.id}
            self.table_flows.pop(dp.id, None)
            self.installed.pop(dp.id, None)
            self.groups.pop(dp.id, None)
            self.meters_ready.discard(dp.id)
            self.warm.discard(dp.id)
            self.fabric.remove_switch(dp.id)
            self.migrations.switch_gone(dp.id)
            # Its VMs stay where they are (the switch keeps forwarding if it
            # is up), but as backends they take no new connection until
            # probes reach them again.
            for vm in [self.model.vm(n) for n, loc in self.model.locations.items() if loc.dpid == dp.id]:
                for svc, backend in self.model.backends_down(vm.name, "its switch disconnected"):
                    LOG.warning("backend %s of %s/%s is DOWN (its switch disconnected)",
                                backend.key, svc.tenant, svc.name)
                    self.event_hub.publish(Kind.BACKEND_DOWN, tenant=svc.tenant, service=svc.name,
                                           backend=backend.key, cause=Cause.SWITCH_LOST)
            self.link_seen = {k: v for k, v in self.link_seen.items() if k[0] != dp.id}
            self.locate_due.pop(dp.id, None)
        LOG.warning("switch %016x disconnected; it keeps its flows (fail-secure)", dp.id)
        self.event_hub.publish(Kind.SWITCH_LOST, dpid=f"{dp.id:016x}")
        self._request(topology=True)

    def _known(self, dp) -> bool:
        """A switch that finished its handshake on this connection.

        Events of a connection still in its handshake (no dpid yet) or of one
        replaced by a newer connection are ignored; a new connection reads
        the switch's ports and flows afresh.
        """
        return dp.id is not None and self.dps.get(dp.id) is dp

    @set_ev_cls(ofp_event.EventOFPPortDescStatsReply, MAIN_DISPATCHER)
    def _port_desc(self, ev):
        dp = ev.msg.datapath
        with self.lock:
            if not self._known(dp):
                return
            sw = self.fabric.add_switch(dp.id)
            for port in ev.msg.body:
                if port.port_no == ofp.OFPP_LOCAL:
                    sw.name = self.switch_names[dp.id] = port.name.decode(errors="replace")
                elif port.port_no <= ofp.OFPP_MAX:
                    self._port_changed(dp.id, port)
        self._announce_ports(dp)
        self._request(topology=True)

    @set_ev_cls(ofp_event.EventOFPPortStatus, MAIN_DISPATCHER)
    def _port_status(self, ev):
        msg = ev.msg
        dp, port = msg.datapath, msg.desc
        if port.port_no > ofp.OFPP_MAX:
            return
        with self.lock:
            if not self._known(dp):
                return
            if msg.reason == ofp.OFPPR_DELETE:
                if self.fabric.remove_port(dp.id, port.port_no):
                    self._links_down(dp.id, port.port_no)
                self._unbind_port(dp.id, port.port_no, deleted=True)
            else:
                self._port_changed(dp.id, port)
        self._announce_ports(dp, [port.port_no])
        self._request(topology=True)

    def _port_changed(self, dpid: int, port) -> None:
        up = not (port.config & ofp.OFPPC_PORT_DOWN) and not (port.state & ofp.OFPPS_LINK_DOWN)
        if self.fabric.set_port(dpid, port.port_no, up):
            self._links_down(dpid, port.port_no)
        if up:
            self.migrations.port_up(Location(dpid, port.port_no))
        else:
            self._unbind_port(dpid, port.port_no)

    def _links_down(self, dpid: int, port: int) -> None:
        self.event_hub.publish(Kind.LINK_DOWN, dpid=f"{dpid:016x}", port=port, cause=LinkDown.PORT_DOWN)

    def _unbind_port(self, dpid: int, port: int, deleted: bool = False) -> None:
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
                LOG.warning("backend %s of %s/%s is DOWN (its VM left its port)", backend.key, svc.tenant, svc.name)
                self.event_hub.publish(Kind.BACKEND_DOWN, tenant=svc.tenant, service=svc.name, backend=backend.key,
                                       cause=Cause.VM_LEFT_PORT)

    # -- flows -------------------------------------------------------------------
    def _read_flows(self, dp) -> None:
        with self.lock:
            self.generation[dp.id] = self.generation.get(dp.id, 0) + 1
            self.installed.pop(dp.id, None)
            self.stats_parts[dp.id] = []
        self._send(dp, parser.OFPFlowStatsRequest(dp, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY, ofp.OFPG_ANY,
                                               0, 0, parser.OFPMatch()))

    def _read_meters(self, dp) -> None:
        with self.lock:
            self.meters_ready.discard(dp.id)
            self.meter_parts.pop(dp.id, None)
        self._send(dp, parser.OFPMeterConfigStatsRequest(dp, 0, ofp.OFPM_ALL))

    @set_ev_cls(ofp_event.EventOFPMeterConfigStatsReply, MAIN_DISPATCHER)
    def _meter_config(self, ev):
        """Meters go in before any flow that uses them, and are set as planned."""
        msg = ev.msg
        dp = msg.datapath
        with self.lock:
            if not self._known(dp):
                return
            parts = self.meter_parts.setdefault(dp.id, {})
            parts.update((stat.meter_id, ofmsg.installed_meter(stat)) for stat in msg.body)
            if msg.flags & ofp.OFPMPF_REPLY_MORE:
                return
            have = self.meter_parts.pop(dp.id)
            want = meters(self.settings)
        add = [m for meter_id, m in sorted(want.items()) if meter_id not in have]
        modify = [m for meter_id, m in sorted(want.items()) if meter_id in have and have[meter_id] != m]
        delete = sorted(set(have) - set(want))
        for m in add:
            self._send(dp, ofmsg.meter_mod(dp, m, ofp.OFPMC_ADD))
        for m in modify:
            self._send(dp, ofmsg.meter_mod(dp, m, ofp.OFPMC_MODIFY))
        for meter_id in delete:
            self._send(dp, parser.OFPMeterMod(dp, command=ofp.OFPMC_DELETE, meter_id=meter_id))
        self.event_hub.publish(Kind.METERS_SET, dpid=f"{dp.id:016x}", add=len(add), modify=len(modify),
                               delete=len(delete))
        with self.lock:
            self.meters_ready.add(dp.id)
        self._request()

    def _read_groups(self, dp) -> None:
        with self.lock:
            self.groups.pop(dp.id, None)
            self.group_parts[dp.id] = {}
        self._send(dp, parser.OFPGroupDescStatsRequest(dp, 0))

    @set_ev_cls(ofp_event.EventOFPGroupDescStatsReply, MAIN_DISPATCHER)
    def _group_desc(self, ev):
        msg = ev.msg
        with self.lock:
            if not self._known(msg.datapath):
                return
            parts = self.group_parts.setdefault(msg.datapath.id, {})
            parts.update((g.group_id, g) for g in map(ofmsg.installed_group, msg.body))
            if msg.flags & ofp.OFPMPF_REPLY_MORE:
                return
            self.groups[msg.datapath.id] = self.group_parts.pop(msg.datapath.id)
        self._request()

    def _read_counters(self, dp) -> None:
        self._send(dp, parser.OFPPortStatsRequest(dp, 0, ofp.OFPP_ANY))
        self._send(dp, parser.OFPTableStatsRequest(dp, 0))
        # Of table 0, only the VMs' flows: their port-security drops.
        vm_flows = (Table.INGRESS, Owner.VM << 56, OWNER_MASK)
        for req in (parser.OFPFlowStatsRequest(dp, 0, table, ofp.OFPP_ANY, ofp.OFPG_ANY, cookie, mask, parser.OFPMatch())
                    for table, cookie, mask in ((Table.LB, 0, 0), (Table.UNNAT, 0, 0), vm_flows)):
            dp.set_xid(req)
            self.counter_xids.add(req.xid)
            self._send(dp, req)

    def _count_flows(self, msg) -> None:
        parts = self.counter_parts.setdefault(msg.xid, [])
        parts.extend(msg.body)
        if msg.flags & ofp.OFPMPF_REPLY_MORE:
            return
        self.counter_xids.discard(msg.xid)
        body = self.counter_parts.pop(msg.xid)
        if not body:
            return
        dpid = msg.datapath.id
        if body[0].table_id != Table.INGRESS:
            self.flow_counters[(dpid, body[0].table_id)] = body
            return
        vms = self._vms_at(dpid)
        for stat in body:
            if stat.priority == Prio.VM_PORT_DROP:
                port = stat.match.get("in_port")
                self.spoofed.add((dpid, port), vms.get(port), (stat.packet_count, stat.byte_count))

    def _vms_at(self, dpid: int) -> dict[int, str]:
        """The VMs of a switch, by port."""
        return {loc.port: name for name, loc in self.model.locations.items() if loc.dpid == dpid}

    @set_ev_cls(ofp_event.EventOFPPortStatsReply, MAIN_DISPATCHER)
    def _port_stats(self, ev):
        msg = ev.msg
        with self.lock:
            if not self._known(msg.datapath):
                return
            dpid = msg.datapath.id
            vms = self._vms_at(dpid)
            for stat in msg.body:
                if stat.port_no <= ofp.OFPP_MAX:
                    self.vm_traffic.add((dpid, stat.port_no), vms.get(stat.port_no),
                                        (stat.rx_packets, stat.rx_bytes, stat.tx_packets, stat.tx_bytes))

    @set_ev_cls(ofp_event.EventOFPTableStatsReply, MAIN_DISPATCHER)
    def _table_stats(self, ev):
        msg = ev.msg
        with self.lock:
            if not self._known(msg.datapath):
                return
            tables = self.table_flows.setdefault(msg.datapath.id, {})
            tables.update((stat.table_id, stat.active_count) for stat in msg.body if stat.table_id in set(Table))

    def backend_counters(self) -> dict[tuple, dict]:
        """Per backend health key: connections, and packets/bytes to and from it."""
        out = {}
        for svc in self.model.services():
            for b in svc.backends:
                to = [s for (_, table), stats in self.flow_counters.items() if table == Table.LB for s in stats
                      if s.priority in (90, 95) and s.match.get("metadata") == svc.segment
                      and s.match.get("ipv4_dst") == str(b.vm.ip)]
                new = [s for s in to if s.priority == 95 and s.match.get(f"{svc.protocol}_dst") == b.port]
                back = [s for (_, table), stats in self.flow_counters.items() if table == Table.UNNAT for s in stats
                        if s.priority == 100 and s.match.get("metadata") == svc.segment
                        and s.match.get("ipv4_src") == str(b.vm.ip)
                        and s.match.get(f"{svc.protocol}_src") == b.port]
                out[svc.health_key(b)] = {
                    "connections": sum(s.packet_count for s in new),
                    "packets_to_backend": sum(s.packet_count for s in to),
                    "bytes_to_backend": sum(s.byte_count for s in to),
                    "packets_from_backend": sum(s.packet_count for s in back),
                    "bytes_from_backend": sum(s.byte_count for s in back),
                }
        return out

    def _metrics_snapshot(self) -> Snapshot:
        return Snapshot(self.model, self.fabric, self.switch_names, set(self.dps), self.table_flows,
                        self.backend_counters(), self.vm_traffic, self.spoofed, self.migrations.records())

    @set_ev_cls(ofp_event.EventOFPFlowStatsReply, MAIN_DISPATCHER)
    def _flow_stats(self, ev):
        msg = ev.msg
        dpid = msg.datapath.id
        with self.lock:
            if not self._known(msg.datapath):
                return
            if msg.xid in self.counter_xids:
                self._count_flows(msg)
                return
            parts = self.stats_parts.setdefault(dpid, [])
            parts.extend(ofmsg.installed_flow(stat) for stat in msg.body)
            if msg.flags & ofp.OFPMPF_REPLY_MORE:
                return
            flows = set(self.stats_parts.pop(dpid))
            first_read = dpid not in self.installed and dpid not in self.warm
            self.installed[dpid] = flows
            if first_read and any(is_ours(f.cookie) for f in flows):
                self.warm.add(dpid)
            for name, loc in recover_locations(self.model, dpid, flows).items():
                if name not in self.model.locations:
                    self.model.bind(name, loc)
                    LOG.info("VM %s found at %016x port %d in the switch's own flows", name, dpid, loc.port)
                    self.event_hub.publish(Kind.VM_LOCATED, vm=name, tenant=self.model.vm(name).tenant,
                                           dpid=f"{dpid:016x}", port=loc.port, how=Found.RECOVERED)
            warm = dpid in self.warm
        LOG.info("switch %016x holds %d flows%s", dpid, len(flows),
                 " (warm: left as is until the fabric settles)" if warm else "")
        self.event_hub.publish(Kind.SWITCH_FLOWS_READ, dpid=f"{dpid:016x}", flows=len(flows), warm=warm)
        self._request()

    @set_ev_cls(ofp_event.EventOFPErrorMsg, [CONFIG_DISPATCHER, MAIN_DISPATCHER])
    def _error(self, ev):
        msg = ev.msg
        dp = msg.datapath
        LOG.error("switch %016x refused a message: type %d code %d", dp.id, msg.type, msg.code)
        self.metrics.openflow_errors.labels(ofmsg.ERROR_TYPES.get(msg.type, str(msg.type))).inc()
        # The shadow copy of its table may now be wrong: read the truth again.
        now = time.monotonic()
        if now - self.last_resync.get(dp.id, -RESYNC_BACKOFF) >= RESYNC_BACKOFF:
            self.last_resync[dp.id] = now
            self._read_groups(dp)
            self._read_flows(dp)

    @set_ev_cls(ofp_event.EventOFPBarrierReply, MAIN_DISPATCHER)
    def _barrier(self, ev):
        done = self.barriers.pop(ev.msg.xid, None)
        if done is not None:
            done.set()

    def _reconcile_loop(self) -> None:
        # Runs as long as the process: the daemon ends with os._exit.
        while True:
            self.dirty.wait()
            time.sleep(DEBOUNCE)
            self.dirty.clear()
            started = time.monotonic()
            try:
                self.reconcile()
            except Exception:    # noqa: BLE001 - the daemon must outlive a bad reconcile
                LOG.exception("reconcile failed; retrying")
                self._failed(Handler.RECONCILE)
                self.metrics.reconciled("failure", time.monotonic() - started)
                time.sleep(0.5)
                self.dirty.set()
            else:
                self.metrics.reconciled("success", time.monotonic() - started)

    def _settled(self) -> bool:
        return time.monotonic() - max(self.started, self.last_topology_change) >= self.settings.settle

    def reconcile(self) -> None:
        """Make every switch hold its planned flows, touching only those that differ."""
        started = time.monotonic()
        with self.lock:
            covers = self.wanted
            desired = plan(self.model, self.fabric)
            work: dict[int, tuple[object, Changes, int]] = {}
            group_work: dict[int, tuple[list, list, list]] = {}
            held = False
            for dpid, dp in self.dps.items():
                if dpid not in self.installed or dpid not in self.meters_ready or dpid not in self.groups:
                    held = True     # its flows, meters or groups have not been read yet
                    continue
                if dpid in self.warm and not self._settled():
                    held = True
                    continue
                self.warm.discard(dpid)
                want, have = desired.groups.get(dpid, {}), self.groups[dpid]
                gadd = [g for gid, g in sorted(want.items()) if gid not in have]
                gmod = [g for gid, g in sorted(want.items()) if gid in have and have[gid] != g]
                gdel = [g for gid, g in sorted(have.items()) if gid not in want]
                if gadd or gmod or gdel:
                    group_work[dpid] = (gadd, gmod, gdel)
                changes = diff(desired.flows.get(dpid, ()), self.installed[dpid])
                if changes:
                    work[dpid] = (dp, changes, self.generation[dpid])
                    if LOG.isEnabledFor(logging.DEBUG):
                        self._log_changes(dpid, changes)
            reinject, self.reinject = self.reinject, []

        dps = {dpid: self.dps[dpid] for dpid in set(work) | set(group_work)}
        # Make before break: every switch gets its new groups and flows before
        # any old one goes; a group is there before the flows that use it.
        self._send_all(dps, {
            dpid: [ofmsg.group_mod(dps[dpid], g, ofp.OFPGC_ADD) for g in gw[0]] +
                  [ofmsg.group_mod(dps[dpid], g, ofp.OFPGC_MODIFY) for g in gw[1]]
            for dpid, gw in group_work.items()})
        self._send_all(dps, {
            dpid: [ofmsg.flow_mod(dp, f, ofp.OFPFC_ADD) for f in ch.add] +
                  [ofmsg.flow_mod(dp, f, ofp.OFPFC_MODIFY_STRICT) for f in ch.modify]
            for dpid, (dp, ch, gen) in work.items()})
        self._send_all(dps, {
            dpid: [ofmsg.flow_mod(dp, f, ofp.OFPFC_DELETE_STRICT) for f in ch.delete]
            for dpid, (dp, ch, gen) in work.items()})
        self._send_all(dps, {
            dpid: [ofmsg.group_mod(dps[dpid], g, ofp.OFPGC_DELETE) for g in gw[2]]
            for dpid, gw in group_work.items()})
        for _, ch, _ in work.values():
            self.metrics.changed("flow", add=len(ch.add), modify=len(ch.modify), delete=len(ch.delete))
        for gadd, gmod, gdel in group_work.values():
            self.metrics.changed("group", add=len(gadd), modify=len(gmod), delete=len(gdel))
        with self.lock:
            for dpid, (dp, changes, gen) in work.items():
                if self.generation.get(dpid) == gen and dpid in self.installed:
                    self.installed[dpid] = set(desired.flows[dpid])
            for dpid in group_work:
                if dpid in self.groups:
                    self.groups[dpid] = dict(desired.groups.get(dpid, {}))
        for dpid, port, data in reinject:
            self._packet_out(dpid, data, port, in_port=port, to_table=True)
        self.migrations.reconciled(covers)
        with self.lock:
            fresh = self.unannounced & set(work)
            self.unannounced -= fresh
            everyone = list(self.dps.values()) if fresh else []
        # A switch without flows dropped its neighbours' LLDP and its VMs'
        # answers to probes; now that it has them, ask again instead of
        # waiting for the next rounds.
        for dp in everyone:
            self._send_lldp(dp)
        for dpid in sorted(fresh):
            self._locate(dpid)
            self._locate_soon(dpid)
        if work or group_work:
            ms = (time.monotonic() - started) * 1000
            LOG.info("reconciled %d switches, %d flow and %d group changes in %.1f ms", len(dps),
                     sum(len(ch) for _, ch, _ in work.values()),
                     sum(len(a) + len(m) + len(d) for a, m, d in group_work.values()), ms)
            with self.lock:
                located, total = len(self.model.locations), sum(1 for _ in self.model.vms())
            if not held:
                LOG.info("fabric programmed: %d switches, %d flows, %d of %d VMs located",
                         len(desired.flows), sum(len(f) for f in desired.flows.values()), located, total)
            verbs = ("add", "modify", "delete")
            counts = {f"flow_{verb}": sum(len(getattr(ch, verb)) for _, ch, _ in work.values()) for verb in verbs}
            counts.update({f"group_{verb}": sum(len(gw[i]) for gw in group_work.values())
                           for i, verb in enumerate(verbs)})
            self.event_hub.publish(Kind.RECONCILED, switches=len(dps), ms=round(ms, 3), programmed=not held,
                                   fabric_switches=len(desired.flows),
                                   flows=sum(len(f) for f in desired.flows.values()),
                                   vms_located=located, vms=total, **counts)

    def _log_changes(self, dpid: int, changes: Changes) -> None:
        have = {f.key: f for f in self.installed[dpid]}
        for verb, flows in (("add", changes.add), ("modify", changes.modify), ("delete", changes.delete)):
            for f in flows:
                LOG.debug("%016x %s %s", dpid, verb, f)
                if f.key in have and verb != "delete":
                    LOG.debug("%016x   installed was %s", dpid, have[f.key])

    def _send_all(self, dps: dict[int, object], messages: dict[int, list]) -> None:
        """Send each switch its messages and wait until every switch has done them."""
        waits = []
        for dpid, msgs in messages.items():
            if not msgs:
                continue
            dp = dps[dpid]
            for msg in msgs:
                self._send(dp, msg)
            barrier = parser.OFPBarrierRequest(dp)
            dp.set_xid(barrier)
            done = threading.Event()
            self.barriers[barrier.xid] = done
            self._send(dp, barrier)
            waits.append((dpid, barrier.xid, done))
        deadline = time.monotonic() + BARRIER_TIMEOUT
        for dpid, xid, done in waits:
            if not done.wait(max(0.0, deadline - time.monotonic())):
                self.barriers.pop(xid, None)
                LOG.warning("switch %016x did not confirm its flow changes in time", dpid)

    def _send(self, dp, msg) -> None:
        """Every OpenFlow message sdnvirt sends goes out here (os-ken's own handshake and echoes do not)."""
        dp.send_msg(msg)
        self.metrics.openflow_sent.labels(ofmsg.MESSAGE_TYPES[msg.cls_msg_type]).inc()

    # -- packets -----------------------------------------------------------------
    def _packet_out(self, dpid: int, data: bytes, port: int, in_port: int = ofp.OFPP_CONTROLLER,
                    to_table: bool = False) -> None:
        dp = self.dps.get(dpid)
        if dp is None:
            return
        out = ofp.OFPP_TABLE if to_table else port
        self._send(dp, parser.OFPPacketOut(dp, buffer_id=ofp.OFP_NO_BUFFER, in_port=in_port,
                                           actions=[parser.OFPActionOutput(out, 0)], data=data))

    def _announce_ports(self, dp, ports: list[int] | None = None) -> None:
        """LLDP out of the ports (to find links) and probes for this hypervisor's silent VMs."""
        self._send_lldp(dp, ports)
        self._locate(dp.id, ports)
        self._locate_soon(dp.id)

    def _locate_soon(self, dpid: int) -> None:
        with self.lock:
            self.locate_due[dpid] = (time.monotonic() + LOCATE_FIRST, LOCATE_FIRST)

    def _send_lldp(self, dp, ports: list[int] | None = None) -> None:
        with self.lock:
            sw = self.fabric.switches.get(dp.id)
            if sw is None:
                return
            ports = [p for p in (ports or sw.ports) if sw.ports.get(p)]
        for port in ports:
            self._packet_out(dp.id, packets.lldp_frame(dp.id, port, self.secret), port)

    def _locate(self, dpid: int, ports: list[int] | None = None, lost: bool = True) -> None:
        """ARP probes out of the switch's free ports (or of ``ports``) for the VMs
        it should hold that are not located; with ``lost``, also for every VM
        that left its port: the rounds right after a switch or port event."""
        with self.lock:
            sw = self.fabric.switches.get(dpid)
            if sw is None or not sw.name:
                return
            free = [p for p in self.fabric.edge_ports(dpid)
                    if self.model.vm_at(Location(dpid, p)) is None and (ports is None or p in ports)]
            # A VM is looked for at its own hypervisor. One that left its port
            # (moved without a migration, or its migration failed) is looked for
            # on any switch where a port or the switch itself has just come up,
            # since a silent VM is found only by asking; not in the steady
            # rounds, where VMs that are simply off would cost every switch
            # a probe per free port forever.
            targets = [str(vm.ip) for vm in self.model.unlocated()
                       if vm.host == sw.name or (lost and vm.name in self.model.lost)]
        for ip in sorted(set(targets)):
            probe = packets.arp_probe(ip)
            for port in free:
                self._packet_out(dpid, probe, port)

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def _packet_in(self, ev):
        msg = ev.msg
        dpid = msg.datapath.id
        if not self._known(msg.datapath):
            return
        started = time.perf_counter()
        purpose = "learn"
        try:
            in_port = msg.match["in_port"]
            if msg.table_id == Table.FORWARD:
                purpose = "probe_reply"
                self._probe_reply(dpid, in_port, msg.match.get("metadata", 0), msg.data)
            elif msg.table_id == Table.LB:
                purpose = "reject"
                self._reject(dpid, in_port, msg.match.get("metadata", 0), msg.data)
            elif _ethertype(msg.data) == ETH_TYPE_LLDP:
                purpose = "lldp"
                self._lldp_in(dpid, in_port, msg.data)
            else:
                self._learn(dpid, in_port, msg.data)
        except packets.BadFrame as err:
            LOG.debug("switch %016x: %s", dpid, err)
        except Exception:    # noqa: BLE001 - no packet may stop the daemon
            LOG.exception("switch %016x: packet-in not handled", dpid)
            self._failed(Handler.PACKET_IN)
        finally:
            self.metrics.packet_in(ofmsg.PACKET_IN_REASONS.get(msg.reason, str(msg.reason)), purpose,
                                   time.perf_counter() - started)

    def _send_frame(self, dpid: int, port: int, data: bytes) -> None:
        self._packet_out(dpid, data, port)

    def _probe_reply(self, dpid: int, in_port: int, segment: int, data: bytes) -> None:
        with self.lock:
            answers = self.prober.on_reply(dpid, in_port, segment, data)
        for frame in answers:
            self._send_frame(*frame)

    def _reject(self, dpid: int, in_port: int, segment: int, data: bytes) -> None:
        with self.lock:
            answer = probes.reject(self.model, segment, data)
        if answer is not None:
            self._packet_out(dpid, answer, in_port)

    def _lldp_in(self, dpid: int, in_port: int, data: bytes) -> None:
        # An LLDP frame crosses one link in well under a second; anything
        # older than one LLDP round is a replay.
        src = packets.parse_lldp(data, self.secret, max_age=self.settings.lldp_interval)
        with self.lock:
            if src[0] not in self.dps:
                return
            self.link_seen[src] = time.monotonic()
            new = self.fabric.add_link(src, (dpid, in_port))
            if new:
                for end in (src, (dpid, in_port)):
                    self._unbind_port(*end)
        if new:
            LOG.info("link %016x:%d -> %016x:%d", src[0], src[1], dpid, in_port)
            self.event_hub.publish(Kind.LINK_UP, src_dpid=f"{src[0]:016x}", src_port=src[1], dpid=f"{dpid:016x}",
                                   port=in_port)
            self._request(topology=True)

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
                    self.event_hub.publish(Kind.VM_CLAIM_IGNORED, vm=seen.vm.name, tenant=seen.vm.tenant,
                                           dpid=f"{dpid:016x}", port=in_port, refused=seen.refused)
                return
            self.reinject.append((dpid, in_port, data))
        LOG.info("VM %s (%s) is at %016x port %d%s", seen.vm.name, seen.vm.tenant, dpid, in_port,
                 f", moved from {seen.moved_from}" if seen.moved_from else "")
        moved = seen.moved_from
        self.event_hub.publish(Kind.VM_LOCATED, vm=seen.vm.name, tenant=seen.vm.tenant, dpid=f"{dpid:016x}",
                               port=in_port, how=Found.PROBE if frame.to_controller else Found.LEARNT,
                               from_dpid=None if moved is None else f"{moved.dpid:016x}",
                               from_port=None if moved is None else moved.port)
        self._request()

    # -- periodic work -----------------------------------------------------------
    # -- the API's view (sdnvirt.api.facade.Controller) -----------------------------
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

    def migration_event(self, mid: int, event: str, **fields) -> dict:
        return self.migrations.event(mid, event, **fields)

    def _flow_counts(self) -> dict[int, int]:
        return {dpid: len(flows) for dpid, flows in self.installed.items()}

    def _tick_loop(self) -> None:
        next_lldp = next_stats = time.monotonic()
        while True:
            time.sleep(TICK)
            now = time.monotonic()
            try:
                if now >= next_lldp:
                    next_lldp = now + self.settings.lldp_interval
                    for dp in list(self.dps.values()):
                        self._send_lldp(dp)
                for dpid in list(self.dps):
                    due, step = self.locate_due.get(dpid, (now, self.settings.locate_interval))
                    if now >= due:
                        self._locate(dpid, lost=step < self.settings.locate_interval)
                        step = min(2 * step, self.settings.locate_interval)
                        self.locate_due[dpid] = (now + step, step)
                if now >= next_stats:
                    next_stats = now + STATS_INTERVAL
                    for dp in list(self.dps.values()):
                        self._read_counters(dp)
                self._expire_links(now)
                with self.lock:
                    frames = self.prober.tick(now)
                for frame in frames:
                    self._send_frame(*frame)
                if self.warm and self._settled():
                    self.dirty.set()
                self.migrations.tick()
            except Exception:    # noqa: BLE001
                LOG.exception("periodic work failed")
                self._failed(Handler.PERIODIC)

    def _expire_links(self, now: float) -> None:
        with self.lock:
            stale = [src for src, seen in self.link_seen.items() if now - seen > self.settings.link_timeout]
            gone = False
            for src in stale:
                del self.link_seen[src]
                if src in self.fabric.links:
                    LOG.warning("link from %016x:%d timed out", *src)
                    self.event_hub.publish(Kind.LINK_DOWN, dpid=f"{src[0]:016x}", port=src[1],
                                           cause=LinkDown.TIMED_OUT)
                    del self.fabric.links[src]
                    gone = True
        if gone:
            self._request(topology=True)


def _ethertype(data: bytes) -> int:
    if len(data) < 14:
        raise packets.BadFrame(f"runt frame of {len(data)} bytes")
    return int.from_bytes(data[12:14], "big")
