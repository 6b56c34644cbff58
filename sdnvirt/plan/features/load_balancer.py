"""The load balancer in the switches: VIPs, Maglev select groups, conntrack NAT, health-probe replies.

Distributed like OVN's: a connection is translated at the client's edge
switch.  Every packet to a VIP goes through the service's group, whose
Maglev buckets commit a new connection's DNAT in conntrack; a later packet
hashes to a bucket too, but conntrack applies the translation its
connection was committed with, so a connection keeps its backend whatever
happens to the group.  The reply is translated back (unnat table) only where its packets
come from a backend's address and port and are not tracked yet, so a reply
is never put through conntrack twice, whether the hypervisors have one
conntrack table each (a real deployment) or share one (an emulation).
"""

from __future__ import annotations

import zlib
from collections.abc import Collection, Hashable
from enum import IntEnum
from typing import Any

from ...config import virtual_mac
from ...lb.maglev import table as maglev_table
from ...model import Backend, Model, Service
from ..feature import Context, Contribution, Feature, declare
from ..flows import ETH_TYPE_IPV4, Flow, Group, Owner, apply, flow, goto, meter, to_controller
from ..owners import service_cookie, vm_cookie
from ..tables import MeterId, Table, packet_in_meter
from ..tenancy import Tenant
from ..zones import zone

# ct_state bits (ovs-fields(7)): new 0x01, est 0x02, rel 0x04, rpl 0x08, inv 0x10, trk 0x20.
CT_NEW = (0x21, 0x21)           # +trk+new
# +trk-rpl: a connection conntrack already holds, original direction. Not
# -new: until the first reply, later packets (a second UDP datagram, a SYN
# retransmit) are still +new, but already translated, and only VIP
# traffic reaches this table. Not -inv: Open vSwitch translates a packet of
# a known connection that it finds out of window too, and the backend must
# get it: the client's RST that clears a backend's stale TIME_WAIT is one.
CT_ONGOING = (0x20, 0x28)
CT_REPLY = (0x28, 0x28)         # +trk+rpl
CT_UNTRACKED = (0x00, 0x20)     # -trk
CT_COMMIT = 1
MAGLEV_SLOTS = 251              # prime; above 64 so that OVS hashes the 5-tuple itself

# Group ids are below OFPG_MAX.
_GROUP_SPACE = 0xFFFFFF00


_PROBE = "health probe replies"     # the tenant-wide part, beside one part per service


class Prio(IntEnum):
    LISTENER = 100        # SERVICES: a packet to a VIP
    NO_BACKEND = 100      # LB: a new connection to a service with no usable backend
    NEW = 95              # LB: a new connection just committed to a backend
    ONGOING = 90          # LB: a connection conntrack holds
    BACKEND_REPLY = 100   # UNNAT: from a backend's address and port, not tracked yet
    REPLY = 90            # UNNAT: a reply translated back
    PROBE_REPLY = 110     # FORWARD: to the tenant's probe address


def group_ids(services: list[Service]) -> dict[tuple[str, str], int]:
    """A stable group id per service, distinct on every switch."""
    ids: dict[tuple[str, str], int] = {}
    used: set[int] = set()
    for svc in sorted(services, key=lambda s: (s.tenant, s.name)):
        gid = zlib.crc32(f"{svc.tenant}/{svc.name}".encode()) % _GROUP_SPACE
        while gid in used:
            gid = (gid + 1) % _GROUP_SPACE
        used.add(gid)
        ids[(svc.tenant, svc.name)] = gid
    return ids


def listener(svc: Service) -> dict[str, Any]:
    return {"metadata": svc.segment, "eth_type": ETH_TYPE_IPV4, "ip_proto": svc.ip_proto,
            "ipv4_dst": str(svc.vip), f"{svc.protocol}_dst": svc.port}


def usable(model: Model, svc: Service, switches: Collection[int]) -> tuple[Backend, ...]:
    """The backends that may take new connections; ``switches``: the connected
    ones, a backend on any other takes none."""
    return tuple(b for b in svc.backends if model.usable(svc, b) and model.locations[b.vm.name].dpid in switches)


def group_for(model: Model, svc: Service, gid: int, lb_table: int, switches: Collection[int]) -> Group | None:
    """The Maglev table as buckets; None when no backend may take new connections.

    ``switches``: the connected ones; a backend on any other takes none."""
    usable_backends = {b: b.weight for b in usable(model, svc, switches)}
    if not usable_backends:
        return None
    buckets = tuple(
        (("ct", CT_COMMIT, zone(svc.segment), lb_table, ("dnat", str(b.vm.ip), b.port)),)
        for b in maglev_table(usable_backends, MAGLEV_SLOTS))
    return Group(gid, buckets)


def service_flows(svc: Service, group: Group | None) -> list[Flow]:
    """The flows of one service, the same on every switch where its tenant has a VM."""
    c = service_cookie(svc)
    match = listener(svc)
    if group is not None:
        # Every packet to the VIP, new or not, goes through the group: a
        # bucket's ct(commit, nat) translates a connection conntrack holds as
        # it was committed, whatever the bucket says, and a new one to the
        # bucket's backend, in one conntrack pass.
        entry = [flow(Table.SERVICES, Prio.LISTENER, match, [apply(("group", group.group_id))], c)]
    else:
        # No OVS action writes a TCP RST or an ICMP error: the controller does.
        new = [meter(MeterId.SERVICE), apply(to_controller())] if svc.on_empty == "reject" else []
        track = apply(("ct", 0, zone(svc.segment), Table.LB, ("nat",)))
        entry = [flow(Table.SERVICES, Prio.LISTENER, match, [track], c),
                 flow(Table.LB, Prio.NO_BACKEND, {**match, "ct_state": CT_NEW}, new, c)]
    return [
        *entry,
        flow(Table.UNNAT, Prio.REPLY,
             {"metadata": svc.segment, "eth_type": ETH_TYPE_IPV4, "ct_state": CT_REPLY,
              "ct_nw_proto": svc.ip_proto, "ct_nw_dst": str(svc.vip), "ct_tp_dst": svc.port},
             [apply(("set", "eth_src", svc.vip_mac)), goto(Table.FORWARD)], c),
    ]


def backend_flows(svc: Service) -> list[Flow]:
    """Per backend: where translated packets go, and where its replies are translated back.

    Drained, failed and unplugged backends keep these, so connections they
    already hold finish; only the group stops giving them new ones.
    """
    return [f for b in svc.backends for f in _backend_flows(svc, b)]


def _backend_flows(svc: Service, b: Backend) -> list[Flow]:
    c = vm_cookie(b.vm)
    to_backend = [apply(("set", "eth_dst", b.vm.mac)), goto(Table.FORWARD)]
    return [
        # The first packets of a connection the group has just committed to
        # this backend: the same as ONGOING, but their counter is the
        # number of connections it was given (a SYN retransmit counts again).
        flow(Table.LB, Prio.NEW,
             {"metadata": svc.segment, "eth_type": ETH_TYPE_IPV4, "ct_state": CT_NEW,
              "ip_proto": svc.ip_proto, "ipv4_dst": str(b.vm.ip), f"{svc.protocol}_dst": b.port},
             to_backend, c),
        flow(Table.LB, Prio.ONGOING,
             {"metadata": svc.segment, "eth_type": ETH_TYPE_IPV4, "ct_state": CT_ONGOING, "ipv4_dst": str(b.vm.ip)},
             to_backend, c),
        flow(Table.UNNAT, Prio.BACKEND_REPLY,
             {"metadata": svc.segment, "eth_type": ETH_TYPE_IPV4, "ct_state": CT_UNTRACKED,
              "ip_proto": svc.ip_proto, "ipv4_src": str(b.vm.ip), f"{svc.protocol}_src": b.port},
             [apply(("ct", 0, zone(svc.segment), Table.UNNAT, ("nat",)))], c),
    ]


class LoadBalancer(Feature):
    declaration = declare(
        "load balancer",
        {Table.SERVICES: {Prio.LISTENER}, Table.LB: {Prio.NO_BACKEND, Prio.NEW, Prio.ONGOING},
         Table.UNNAT: {Prio.BACKEND_REPLY, Prio.REPLY}, Table.FORWARD: {Prio.PROBE_REPLY}},
        {Owner.TENANT, Owner.VM, Owner.SERVICE}, {MeterId.SERVICE})
    reads_paths = False

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.gids = group_ids(ctx.model.services())
        self.meter = packet_in_meter(MeterId.SERVICE, ctx.model.config.controller.fabric)

    def switch_inputs(self, dpid: int) -> tuple[()]:
        return ()     # the config's meter

    def switch(self, dpid: int, out: Contribution) -> None:
        out.meter(dpid, self.meter)

    def tenant_inputs(self, tenant: Tenant) -> Hashable:
        # The backends' health and drains are not in the footprint, nor are
        # the group ids (all services') and the probe address (the config's).
        return (self.ctx.model.tenant(tenant.name).probe_ip,
                *((self.gids[(svc.tenant, svc.name)], usable(self.ctx.model, svc, self.ctx.fabric.switches))
                  for svc in tenant.services))

    def parts(self, tenant: Tenant) -> dict[Hashable, object]:
        # One part per service: a backend down recomputes its service only.
        if not tenant.services:
            return {}
        probe_ip = self.ctx.model.tenant(tenant.name).probe_ip
        parts: dict[Hashable, object] = {_PROBE: (tenant.segment, tenant.cookie, tenant.members, probe_ip)}
        for svc in tenant.services:
            parts["service", svc.name] = (svc, self.gids[(svc.tenant, svc.name)],
                                          usable(self.ctx.model, svc, self.ctx.fabric.switches), tenant.members)
        return parts

    def part(self, tenant: Tenant, key: Hashable, out: Contribution) -> None:
        if key == _PROBE:
            # A backend's answer to a health probe, captured at its own edge switch.
            probe_mac = virtual_mac(self.ctx.model.tenant(tenant.name).probe_ip)
            probe = flow(Table.FORWARD, Prio.PROBE_REPLY, {"metadata": tenant.segment, "eth_dst": probe_mac},
                         [meter(MeterId.SERVICE), apply(to_controller())], tenant.cookie)
            for at in tenant.members:
                out.add(at, probe)
            return
        assert isinstance(key, tuple)
        svc = next(s for s in tenant.services if s.name == key[1])
        group = group_for(self.ctx.model, svc, self.gids[(svc.tenant, svc.name)], Table.LB, self.ctx.fabric.switches)
        flows = service_flows(svc, group) + backend_flows(svc)
        for at in tenant.members:
            out.add(at, *flows)
            if group is not None:
                out.group(at, group)
