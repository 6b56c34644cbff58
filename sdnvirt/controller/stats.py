"""What the switches count, read every few seconds: the metrics' raw material.

Per VM, its port's traffic, its anti-spoofing drops and its security-group
drops (the drop flows of tables sg_egress and sg_ingress); per backend, its
connections and traffic (from the lb and unnat tables' flows); per switch,
the flows in each table; in vxlan mode, per hypervisor and remote VTEP, the
tunnels' traffic each way (from the flows that send into a tunnel and those
that take frames in from one).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from ..counters import Totals
from ..model import Model, Service
from ..plan.features.port_security import Prio
from ..plan.features.security_groups import Prio as GroupPrio
from ..plan.flows import Owner
from ..plan.tables import Table
from . import ofmsg
from .session import SwitchSession

INTERVAL = 5.0
OWNER_MASK = 0xFF << 56     # the owner kind of a cookie
COUNTERS = "counters"


class SwitchCounters:
    def __init__(self) -> None:
        self.vm_traffic = Totals(4)     # VM -> rx packets, rx bytes, tx packets, tx bytes (switch side)
        self.spoofed = Totals(2)        # VM -> packets, bytes dropped by its anti-spoofing flow
        self.sg_dropped = Totals(1)     # (VM, "ingress" or "egress") -> packets dropped by its security groups
        self.tunnels = Totals(2)        # (switch name, remote VTEP, "tx" or "rx") -> packets, bytes
        self.names: dict[int, str] = {}    # every switch connected since the start, for metric labels

    @staticmethod
    def requests(session: SwitchSession, tunnels: bool = False) -> list[Any]:
        """``tunnels``: vxlan mode, the flows into and out of tunnels too."""
        dp = session.dp
        reqs = [parser.OFPPortStatsRequest(dp, 0, ofp.OFPP_ANY), parser.OFPTableStatsRequest(dp, 0)]
        # Of tables 0, sg_egress and sg_ingress, only the VMs' flows: their drops.
        vm_flows = (Owner.VM << 56, OWNER_MASK)
        tenant_flows = (Owner.TENANT << 56, OWNER_MASK)
        tunnel_flows = ((Table.INGRESS, *tenant_flows), (Table.FORWARD, *vm_flows), (Table.FLOOD, *tenant_flows))
        for table, cookie, mask in ((Table.LB, 0, 0), (Table.UNNAT, 0, 0), (Table.INGRESS, *vm_flows),
                                    (Table.SG_EGRESS, *vm_flows), (Table.SG_INGRESS, *vm_flows),
                                    *(tunnel_flows if tunnels else ())):
            req = parser.OFPFlowStatsRequest(dp, 0, table, ofp.OFPP_ANY, ofp.OFPG_ANY, cookie, mask, parser.OFPMatch())
            session.request(req, COUNTERS)
            reqs.append(req)
        return reqs

    def flows(self, model: Model, session: SwitchSession, body: list) -> None:
        """A whole flow-stats reply to one of ``requests``."""
        if not body:
            return
        table = body[0].table_id
        if table in (Table.INGRESS, Table.FORWARD, Table.FLOOD):
            self._tunnels(session, body)
        if table in (Table.FORWARD, Table.FLOOD):
            return
        if table in (Table.SG_EGRESS, Table.SG_INGRESS):
            self._group_drops(model, session.dpid, table, body)
            return
        if table != Table.INGRESS:
            session.flow_counters[table] = body
            return
        vms = model.locations.on(session.dpid)
        for stat in body:
            if stat.priority == Prio.VM_PORT_DROP:
                port = stat.match.get("in_port")
                self.spoofed.add((session.dpid, port), vms.get(port), (stat.packet_count, stat.byte_count))

    def _tunnels(self, session: SwitchSession, body: list) -> None:
        """Frames taken in from a peer's VTEP (rx, table ingress), and sent into the tunnel
        to one (tx, forward and flood): a broadcast's flow sends a copy to each VTEP it names."""
        name = self.names.get(session.dpid, "")
        for stat in body:
            counts = (stat.packet_count, stat.byte_count)
            if stat.table_id == Table.INGRESS:
                if "tun_ipv4_src" in stat.match:
                    peer = stat.match["tun_ipv4_src"]
                    self.tunnels.add((session.dpid, stat.priority, peer, stat.match["tunnel_id"]),
                                     (name, peer, "rx"), counts)
                continue
            spec = ofmsg.installed_flow(stat)
            for peer in (a[2] for i in spec.instructions if i[0] == "apply" for a in i[1]
                         if a[:2] == ("set", "tun_ipv4_dst")):
                self.tunnels.add((session.dpid, spec.key, peer), (name, peer, "tx"), counts)

    def _group_drops(self, model: Model, dpid: int, table: int, body: list) -> None:
        """The drop flows of a VM's security groups: by its port (sg_egress) or its MAC (sg_ingress)."""
        vms = model.locations.on(dpid)
        direction = "egress" if table == Table.SG_EGRESS else "ingress"
        for stat in body:
            if stat.priority != GroupPrio.DROP:
                continue
            if table == Table.SG_EGRESS:
                at = stat.match.get("in_port")
                name = vms.get(at)
            else:
                at = stat.match.get("eth_dst")
                vm = model.vm_by_mac(at or "")
                name = vm.name if vm is not None else None
            self.sg_dropped.add((dpid, table, at, stat.match.get("eth_type")),
                                None if name is None else (name, direction), (stat.packet_count,))

    def ports(self, model: Model, session: SwitchSession, body: list) -> None:
        vms = model.locations.on(session.dpid)
        for stat in body:
            if stat.port_no <= ofp.OFPP_MAX:
                self.vm_traffic.add((session.dpid, stat.port_no), vms.get(stat.port_no),
                                    (stat.rx_packets, stat.rx_bytes, stat.tx_packets, stat.tx_bytes))

    @staticmethod
    def tables(session: SwitchSession, body: list) -> None:
        session.table_flows.update((stat.table_id, stat.active_count) for stat in body if stat.table_id in set(Table))


def backend_counters(model: Model, sessions: dict[int, SwitchSession],
                     services: Iterable[Service] | None = None) -> dict[tuple, dict]:
    """Per backend health key of ``services`` (None: every service's): connections, and
    packets/bytes to and from it.  The switches' counters are indexed by what names a
    backend once, so that the cost follows the counters plus the backends, not their product."""
    to: defaultdict[tuple, list] = defaultdict(list)        # (segment, ip)
    new: defaultdict[tuple, list] = defaultdict(list)       # (segment, ip, protocol_dst, port)
    back: defaultdict[tuple, list] = defaultdict(list)      # (segment, ip, protocol_src, port)
    for session in sessions.values():
        for s in session.flow_counters.get(Table.LB, ()):
            if s.priority in (90, 95):
                match = s.match
                to[match.get("metadata"), match.get("ipv4_dst")].append(s)
                if s.priority == 95:
                    for field in ("tcp_dst", "udp_dst"):
                        if field in match:
                            new[match.get("metadata"), match.get("ipv4_dst"), field, match[field]].append(s)
        for s in session.flow_counters.get(Table.UNNAT, ()):
            if s.priority == 100:
                match = s.match
                for field in ("tcp_src", "udp_src"):
                    if field in match:
                        back[match.get("metadata"), match.get("ipv4_src"), field, match[field]].append(s)
    out = {}
    for svc in model.services() if services is None else services:
        for b in svc.backends:
            ip = str(b.vm.ip)
            sent = to.get((svc.segment, ip), ())
            opened = new.get((svc.segment, ip, f"{svc.protocol}_dst", b.port), ())
            answered = back.get((svc.segment, ip, f"{svc.protocol}_src", b.port), ())
            out[svc.health_key(b)] = {
                "connections": sum(s.packet_count for s in opened),
                "packets_to_backend": sum(s.packet_count for s in sent),
                "bytes_to_backend": sum(s.byte_count for s in sent),
                "packets_from_backend": sum(s.packet_count for s in answered),
                "bytes_from_backend": sum(s.byte_count for s in answered),
            }
    return out
