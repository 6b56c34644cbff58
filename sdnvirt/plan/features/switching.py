"""Tenant switching: unicast to a VM along its paths, broadcast to the tenant's switches,
and frames from other switches taken in as their tenant.

The fabric does no MAC learning: the model says where every VM is, so each
destination gets exact flows on its paths and nowhere else, and unknown
unicast is dropped (defaults), never flooded.  How a frame crosses to
another switch is the encapsulation's (``Encap``): with a label per switch
(vlan), the switches between forward by label for every tenant alike.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Collection, Container, Hashable, Iterator, Mapping
from enum import IntEnum

from ...model import VM, Location
from ..encap import ROUTE_PRIORITY, Actions, Hop, label_mac, route_match
from ..feature import BySwitch, Contribution, Feature, declare
from ..flows import (
    ETH_TYPE_IPV4,
    MULTICAST,
    OFPVID_PRESENT,
    Flow,
    Instruction,
    Match,
    Owner,
    apply,
    flow,
    goto,
    write_metadata,
)
from ..owners import FABRIC_COOKIE, vm_cookie
from ..tables import Table
from ..tenancy import Tenant


class Prio(IntEnum):
    TENANT_FABRIC = 200   # INGRESS: a frame of the tenant from another switch
    TRANSIT = 120         # INGRESS: any other frame from another switch goes by its label
    ROUTE = ROUTE_PRIORITY  # ROUTE: toward the switch a label names
    UNICAST = 100         # FORWARD: to one VM
    MULTICAST = 10        # FORWARD: broadcast and multicast go to FLOOD
    FLOOD_IPV4 = 110      # FLOOD: IPv4, where a VM in security groups must not get it
    FLOOD = 100           # FLOOD


_TAGGED = (OFPVID_PRESENT, OFPVID_PRESENT)       # any tag: a tenant's frame from another switch
_FLOOD, _INGRESS = "flood", "fabric ingress"     # the tenant-wide parts, beside one part per VM
_MULTICAST = flow(Table.FORWARD, Prio.MULTICAST, {"eth_dst": MULTICAST}, [goto(Table.FLOOD)], FABRIC_COOKIE)


def forward(vm: VM, loc: Location, route: Mapping[int, Hop], arrival: str | None,
            skip: Container[int] = ()) -> Iterator[tuple[int, Flow]]:
    """The flows toward ``vm`` at ``loc``: out of its port on its own switch
    (through its ingress rules if it is in security groups), and, for frames
    that arrive addressed to ``arrival`` (``Encap.arrival``), the same with
    the VM's MAC put back; on along ``route`` (Tenant.routes) elsewhere.  None
    on the switches in ``skip`` but the arrival, which a migration's target
    needs before the paths flip."""
    c = vm_cookie(vm)
    if loc.dpid not in skip:
        yield loc.dpid, flow(Table.FORWARD, Prio.UNICAST, _match(vm), _deliver(vm, loc), c)
    if arrival is not None:
        yield loc.dpid, flow(Table.FORWARD, Prio.UNICAST, {"metadata": vm.segment, "eth_dst": arrival},
                             _deliver(vm, loc, (("set", "eth_dst", vm.mac),)), c)
    yield from onward(vm, {at: hop for at, hop in route.items() if at not in skip}, arrival)


def onward(vm: VM, route: Mapping[int, Hop], arrival: str | None) -> Iterator[tuple[int, Flow]]:
    """The flows toward ``vm`` on the switches of ``route`` (Tenant.routes), not its own."""
    match, c = _match(vm), vm_cookie(vm)
    address = (("set", "eth_dst", arrival),) if arrival else ()
    # The flow is the same on every switch that sends the frame on the same way:
    # a dozen distinct flows on seventy switches, each made (and held) once.
    made: dict[Hop, Flow] = {}
    for at, hop in route.items():
        f = made.get(hop)
        if f is None:
            f = made[hop] = flow(Table.FORWARD, Prio.UNICAST, match, _then(address, hop), c)
        yield at, f


@functools.cache
def _route(dst: int, port: int) -> Flow:
    """Table ROUTE's flow to switch ``dst`` out of ``port``: the same on many switches."""
    return flow(Table.ROUTE, Prio.ROUTE, route_match(label_mac(dst)), [apply(("output", port))], FABRIC_COOKIE)


def _deliver(vm: VM, loc: Location, first: Actions = ()) -> list[Instruction]:
    if vm.guarded:
        return [*([apply(*first)] if first else []), goto(Table.SG_INGRESS)]
    return [apply(*first, ("output", loc.port))]


def _then(actions: Actions, hop: Hop) -> list[Instruction]:
    """``actions`` first (the encapsulation's change the frame), then ``hop``."""
    if not hop:
        return [apply(*actions)] if actions else []
    first, *rest = hop
    return [apply(*actions, *first[1]), *rest]


def _match(vm: VM) -> Match:
    return {"metadata": vm.segment, "eth_dst": vm.mac}


class TenantSwitching(Feature):
    declaration = declare(
        "tenant switching",
        {Table.INGRESS: {Prio.TENANT_FABRIC, Prio.TRANSIT}, Table.FORWARD: {Prio.UNICAST, Prio.MULTICAST},
         Table.FLOOD: {Prio.FLOOD, Prio.FLOOD_IPV4}, Table.ROUTE: {Prio.ROUTE}},
        {Owner.FABRIC, Owner.TENANT, Owner.VM})

    def switch_inputs(self, dpid: int) -> Hashable:
        return self.ctx.encap.transit(dpid)

    def switch(self, dpid: int, out: Contribution) -> None:
        out.add(dpid, _MULTICAST)
        transit = self.ctx.encap.transit(dpid)
        # A frame from another switch that no tenant here takes in (Prio.TENANT_FABRIC)
        # goes on by its label, or along the tree: for every tenant alike.
        out.add(dpid, *(flow(Table.INGRESS, Prio.TRANSIT, {"in_port": port, "vlan_vid": _TAGGED}, [goto(Table.ROUTE)],
                             FABRIC_COOKIE) for port in transit.gates))
        if transit.tree:
            out.add(dpid, flow(Table.ROUTE, Prio.ROUTE, {"eth_dst": MULTICAST},
                               [apply(*(("output", port) for port in transit.tree))], FABRIC_COOKIE))

    def fabric_parts(self) -> dict[Hashable, object]:
        # One part per destination switch: a link moves the routes of a few switches toward
        # a few destinations, and those alone are computed again.
        return {dst: BySwitch(dst, hops) for dst, hops in self.ctx.encap.routes().items()}

    def fabric_part(self, key: Hashable, at: Collection[int] | None, out: Contribution) -> None:
        assert isinstance(key, int)
        hops = self.ctx.encap.routes()[key]
        for dpid in hops if at is None else (d for d in at if d in hops):
            out.add(dpid, _route(key, hops[dpid]))

    def tenant_inputs(self, tenant: Tenant) -> tuple[()]:
        return ()

    def parts(self, tenant: Tenant) -> dict[Hashable, object]:
        # Each split by switch, so that what moves at one switch recomputes that switch:
        # per VM the switches that send to it (and its own, where the VM is); per tenant its
        # broadcast (a switch's flows read its VMs' ports and how it passes it on) and its
        # fabric ingress (a switch's flows read its fabric ports).
        arrival = self.ctx.encap.arrival
        parts: dict[Hashable, object] = {vm: BySwitch((loc, arrival(loc)), tenant.routes[vm])
                                         for vm, loc in tenant.bound.items()}
        local = _local_ports(tenant)
        parts[_FLOOD] = BySwitch((tenant.segment, tenant.cookie),
                                 {at: (local.get(at, ()), onward) for at, onward in tenant.flood.items()})
        parts.update(self.link_parts(tenant))
        return parts

    def link_parts(self, tenant: Tenant) -> dict[Hashable, object]:
        ways_in = self.ctx.encap.ways_in
        return {_INGRESS: BySwitch((tenant.segment, tenant.cookie, tenant.members),
                                   {at: ways_in(at) for at in tenant.carriers})}

    def part(self, tenant: Tenant, key: Hashable, out: Contribution) -> None:
        if isinstance(key, VM):
            loc = tenant.bound[key]
            for at, f in forward(key, loc, tenant.routes[key], self.ctx.encap.arrival(loc)):
                out.add(at, f)
        else:
            self.part_at(tenant, key, tenant.flood.keys() if key == _FLOOD else tenant.carriers, out)

    def part_at(self, tenant: Tenant, key: Hashable, at: Collection[int], out: Contribution) -> None:
        if key == _FLOOD:
            local = _local_ports(tenant)
            for dpid in (d for d in at if d in tenant.flood):
                self._flood(tenant, dpid, local.get(dpid, ()), tenant.flood[dpid], out)
        elif key == _INGRESS:
            for dpid in (d for d in at if d in tenant.carriers):
                self._ingress(tenant, dpid, out)
        else:
            assert isinstance(key, VM)
            route = tenant.routes[key]
            arrival = self.ctx.encap.arrival(tenant.bound[key])
            for dpid, f in onward(key, {dpid: route[dpid] for dpid in at if dpid in route}, arrival):
                out.add(dpid, f)

    def _flood(self, tenant: Tenant, at: int, ports: tuple[tuple[int, bool], ...], onward: Hop,
               out: Contribution) -> None:
        segment, c = tenant.segment, tenant.cookie
        everyone = tuple(("output", p) for p, _ in ports)
        out.add(at, flow(Table.FLOOD, Prio.FLOOD, {"metadata": segment}, _then(everyone, onward), c))
        if any(guarded for _, guarded in ports):
            # Security groups filter unicast only: IPv4 broadcast and
            # multicast never reach a VM in groups (IPv6 does: ND).
            out.add(at, flow(Table.FLOOD, Prio.FLOOD_IPV4, {"metadata": segment, "eth_type": ETH_TYPE_IPV4},
                             _then(tuple(("output", p) for p, guarded in ports if not guarded), onward), c))

    def _ingress(self, tenant: Tenant, at: int, out: Contribution) -> None:
        segment, c = tenant.segment, tenant.cookie
        # A frame from another switch already passed port security at its
        # edge: it skips ARP, services and lb (a VIP is translated at the
        # client's edge), but not unnat (a reply is translated back there).
        for match, unwrap in self.ctx.encap.ingress(segment, at, tenant.members):
            out.add(at, flow(Table.INGRESS, Prio.TENANT_FABRIC, match,
                             [*([apply(*unwrap)] if unwrap else []), write_metadata(segment),
                              goto(Table.UNNAT)], c))


def _local_ports(tenant: Tenant) -> dict[int, tuple[tuple[int, bool], ...]]:
    """Per switch, the ports of the tenant's VMs there, in order, and whether each VM is in security groups."""
    local: defaultdict[int, list[tuple[int, bool]]] = defaultdict(list)
    for vm, loc in tenant.bound.items():
        local[loc.dpid].append((loc.port, vm.guarded))
    return {at: tuple(sorted(ports)) for at, ports in local.items()}
