"""Security groups at the VM's port: stateful, rules re-checked on every packet.

A VM in security groups (``VM.guarded``) has its own conntrack zone
(``zones.vm_zones``) and two sets of flows on its switch: in ``SG_EGRESS``,
what it sends (port security sends it there), and in ``SG_INGRESS``, what
is delivered to it (forwarding sends it there instead of to its port).  In
each, the packet goes through conntrack once, in the VM's zone, and comes
back to the same table tracked:

- a packet in the connection's original direction is allowed by a rule of
  the table's own direction (``ct_state`` new or established); a new one
  commits the connection;
- a reply (``+rpl``) is allowed by a rule of the other direction, matched
  mirrored: a reply to a connection the VM accepted on port 22 comes from
  its port 22;
- whatever else is tracked in the VM's zone is dropped (and counted: the
  metrics read these flows' counters).

Because every packet is matched against the rules, not only a connection's
first, removing a rule stops the connections it allowed at the next packet,
as Neutron's OVS firewall does with conntrack marks.  The egress side
clears the packet's conntrack state before the load balancer's tables, which
track in the tenant's zone and tell a backend's reply by its being untracked.
Never filtered: ARP (answered in table ARP, it never gets here), IPv6
neighbour discovery, and a backend's answers to the tenant's health probes
(the probes themselves are packet-outs straight to the VM's port).
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from ...model import VM, Location
from ...secgroups import Rule, resolve
from ..conntrack import EST, INV, NEW, REL, RPL, TRK
from ..feature import Context, Contribution, Feature, declare
from ..flows import ETH_TYPE_IPV4, ETH_TYPE_IPV6, Flow, Instruction, Owner, apply, flow, goto
from ..owners import vm_cookie
from ..tables import Table
from ..tenancy import Tenant
from ..zones import vm_zones, zone

# ct_state (value, mask), never +inv.
NEW_ORIGINAL = (TRK | NEW, TRK | NEW | RPL | INV)
ESTABLISHED_ORIGINAL = (TRK | EST, TRK | EST | RPL | INV)
REPLY = (TRK | RPL, TRK | RPL | INV)
RELATED = (TRK | REL, TRK | REL | INV)
COMMIT = 1
ICMPV6 = 58
NEIGHBOUR_DISCOVERY = (133, 134, 135, 136)    # router solicitation/advertisement, neighbour solicitation/advertisement
_L4 = {6: "tcp", 17: "udp"}


class Prio(IntEnum):      # the same in SG_EGRESS and SG_INGRESS
    PASS = 300            # never filtered: neighbour discovery, answers to health probes
    ALLOW = 200           # a rule (or the connection a rule allowed) lets it through
    DROP = 100            # tracked in the VM's zone and allowed by nothing; IPv6
    TRACK = 10            # IPv4 not yet tracked in the VM's zone


def port_masks(first: int, last: int) -> list[int | tuple[int, int]]:
    """The fewest (value, mask) pairs covering ports first..last; a single port as itself."""
    out: list[int | tuple[int, int]] = []
    while first <= last:
        size = first & -first or 1 << 16
        while size > last - first + 1:
            size >>= 1
        out.append(first if size == 1 else (first, 0xFFFF & ~(size - 1)))
        first += size
    return out


def _address(net: ipaddress.IPv4Network) -> str | tuple[str, str] | None:
    if net.prefixlen == 0:
        return None
    if net.prefixlen == 32:
        return str(net.network_address)
    return (str(net.network_address), str(net.netmask))


def rule_matches(rule: Rule, remote_field: str, mirrored: bool) -> Iterator[dict[str, Any]]:
    """The matches of one rule: its remote end in ``remote_field``; its ports as
    destination ports, or, ``mirrored`` (a reply), as source ports."""
    proto = {} if rule.proto is None else {"ip_proto": rule.proto}
    l4 = _L4.get(rule.proto or 0)
    ports: list[dict[str, Any]] = [{}]
    if rule.ports is not None and l4 is not None:
        field = f"{l4}_{'src' if mirrored else 'dst'}"
        ports = [{field: p} for p in port_masks(*rule.ports)]
    for remote in rule.remotes:
        address = _address(remote)
        where = {} if address is None else {remote_field: address}
        for port in ports:
            yield {"eth_type": ETH_TYPE_IPV4, **proto, **where, **port}


@dataclass(frozen=True)
class _Side:
    """One of a VM's two tables, and what it does with a packet it lets through."""

    table: Table
    direction: str                      # the rules it checks as such; the others' replies it checks mirrored
    remote_field: str                   # where the other end's address is
    mine: dict[str, Any]                # the VM's packets in this table
    allowed: list[Instruction]          # a packet of a connection already tracked
    new: list[Instruction]              # the first of a connection: commit it, and the same
    nd: list[Instruction]               # neighbour discovery


def _sides(vm: VM, loc: Location, vm_zone: int) -> tuple[_Side, _Side]:
    commit = ("ct", COMMIT, vm_zone, None, None)
    out_port = ("output", loc.port)
    # Past the egress side the packet must look as it came from the port: untracked.
    return (_Side(Table.SG_EGRESS, "egress", "ipv4_dst", {"in_port": loc.port},
                  [apply(("ct_clear",)), goto(Table.SERVICES)], [apply(commit, ("ct_clear",)), goto(Table.SERVICES)],
                  [goto(Table.FORWARD)]),
            _Side(Table.SG_INGRESS, "ingress", "ipv4_src", {"eth_dst": vm.mac},
                  [apply(out_port)], [apply(commit, out_port)], [apply(out_port)]))


def guard(vm: VM, loc: Location, rules: list[Rule], vm_zone: int, probe_ip: str | None) -> list[Flow]:
    """The flows of one VM in security groups at ``loc``, both tables."""
    c = vm_cookie(vm)
    out = []
    for side in _sides(vm, loc, vm_zone):
        table, mine = side.table, side.mine
        out += [flow(table, Prio.PASS, {**mine, "eth_type": ETH_TYPE_IPV6, "ip_proto": ICMPV6, "icmpv6_type": t},
                     side.nd, c) for t in NEIGHBOUR_DISCOVERY]
        if probe_ip is not None and table == Table.SG_EGRESS:
            out.append(flow(table, Prio.PASS, {**mine, "eth_type": ETH_TYPE_IPV4, "ipv4_dst": probe_ip},
                            [goto(Table.SERVICES)], c))
        for rule in rules:
            mirrored = rule.direction != side.direction
            for match in rule_matches(rule, side.remote_field, mirrored):
                m = {**mine, **match, "ct_zone": vm_zone}
                if mirrored:
                    out.append(flow(table, Prio.ALLOW, {**m, "ct_state": REPLY}, side.allowed, c))
                else:
                    out.append(flow(table, Prio.ALLOW, {**m, "ct_state": NEW_ORIGINAL}, side.new, c))
                    out.append(flow(table, Prio.ALLOW, {**m, "ct_state": ESTABLISHED_ORIGINAL}, side.allowed, c))
        tracked = {**mine, "eth_type": ETH_TYPE_IPV4, "ct_zone": vm_zone}
        out += [
            flow(table, Prio.ALLOW, {**tracked, "ct_state": RELATED}, side.allowed, c),
            flow(table, Prio.DROP, tracked, [], c),
            flow(table, Prio.DROP, {**mine, "eth_type": ETH_TYPE_IPV6}, [], c),
            flow(table, Prio.TRACK, {**mine, "eth_type": ETH_TYPE_IPV4}, [apply(("ct", 0, vm_zone, table, None))], c),
        ]
    return out


_Guard = tuple[Location | None, Location | None, int, str | None, list[Rule]]   # bound, pending, zone, probe, rules


class SecurityGroups(Feature):
    declaration = declare("security groups", {Table.SG_EGRESS: set(Prio), Table.SG_INGRESS: set(Prio)}, {Owner.VM})
    reads_paths = False

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        config = ctx.model.config
        self.zones = vm_zones((vm.name for vm in ctx.model.vms() if vm.guarded),
                              {zone(t.segment) for t in config.tenants.values()})
        self._inputs: dict[str, dict[VM, _Guard]] = {}     # per tenant, for its parts

    def _guarded(self, tenant: Tenant) -> dict[VM, _Guard]:
        """What each of the tenant's VMs in security groups is guarded with, and where."""
        inputs = self._inputs.get(tenant.name)
        if inputs is None:
            spec = self.ctx.model.tenant(tenant.name)
            addresses: defaultdict[str, list[ipaddress.IPv4Address]] = defaultdict(list)
            for vm in tenant.vms:
                for g in vm.groups or ():
                    addresses[g].append(vm.ip)
            probe_ip = str(spec.probe_ip) if tenant.services else None
            inputs = self._inputs[tenant.name] = {
                vm: (tenant.bound.get(vm), tenant.pending.get(vm), self.zones[vm.name], probe_ip,
                     resolve(spec.security_groups, addresses, vm.groups or ()))
                for vm in tenant.vms if vm.guarded}
        return inputs

    def tenant_inputs(self, tenant: Tenant) -> Hashable:
        spec = self.ctx.model.tenant(tenant.name)
        # Zones are numbered across tenants: one tenant's new VM may renumber another's.
        return (spec.security_groups, spec.probe_ip,
                *(self.zones[vm.name] for vm in tenant.vms if vm.guarded))

    def parts(self, tenant: Tenant) -> dict[Hashable, object]:
        return {vm: inputs for vm, inputs in self._guarded(tenant).items()}  # noqa: C416 - Hashable keys, for mypy

    def part(self, tenant: Tenant, key: Hashable, out: Contribution) -> None:
        assert isinstance(key, VM)
        _, _, vm_zone, probe_ip, rules = self._guarded(tenant)[key]
        for loc in (tenant.bound.get(key), tenant.pending.get(key)):
            if loc is not None:
                out.add(loc.dpid, *guard(key, loc, rules, vm_zone, probe_ip))
