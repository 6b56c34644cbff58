"""The table pipeline: model + fabric -> the flows every switch should hold.

Pure functions only; docs/pipeline.md describes the same tables in prose and
must be kept true to this file.
"""

from __future__ import annotations

from collections import defaultdict
from enum import IntEnum

from dataclasses import dataclass

from ..config import FabricSettings, virtual_mac
from ..fabric import Fabric, flood_tree, next_hops, path_nodes
from ..model import VM, Location, Model
from .flows import (ETH_TYPE_ARP, ETH_TYPE_IPV4, ETH_TYPE_IPV6, ETH_TYPE_LLDP,
                    MULTICAST, OFPP_IN_PORT, OFPVID_NONE, OFPVID_PRESENT, Flow,
                    Meter, Owner, apply, cookie, cookie_owner, flow, goto, meter,
                    object_id, push_tag, write_metadata)
from .services import Group, backend_flows, group_for, group_ids, service_cookie, service_flows

# The whole frame goes to the controller: a learnt frame is sent back into
# the pipeline once its VM's flows are in place.
NO_BUFFER = 0xFFFF


class Table(IntEnum):
    INGRESS = 0    # port security and tenant classification
    ARP = 1        # ARP answered in the switch from the model
    SERVICES = 2   # a VM's packets to a VIP go through conntrack
    LB = 3         # new connections to a VIP -> Maglev group; ongoing ones -> their backend
    UNNAT = 4      # a backend's replies translated back to the VIP
    FORWARD = 5    # tenant + destination MAC -> port, tag pushed toward the fabric
    FLOOD = 6      # tenant broadcast/multicast -> the tenant's flood tree


class MeterId(IntEnum):
    LEARN = 1        # frames from ports that hold no VM
    DISCOVERY = 2    # LLDP from ports not known as fabric ports
    SERVICE = 3      # health-probe replies and connections to reject


class Prio(IntEnum):
    VM_ALLOW = 300          # INGRESS: the VM's own MAC/IP on its own port
    VM_PORT_DROP = 250      # INGRESS: anything else on a VM's port
    TENANT_FABRIC = 200     # INGRESS: a known segment tag on a fabric port
    FABRIC_LLDP = 160       # INGRESS: LLDP on a known fabric port, unmetered
    DISCOVERY = 150         # INGRESS: LLDP on ports that hold no VM
    FABRIC_PORT_DROP = 100  # INGRESS: anything else on a fabric port
    ARP_ANSWER = 100
    UNICAST = 100           # FORWARD
    PROBE_REPLY = 110       # FORWARD: to the tenant's probe address
    MULTICAST = 10          # FORWARD
    FLOOD = 100
    DEFAULT = 0


FABRIC_COOKIE = cookie(Owner.FABRIC)


def tenant_cookie(segment: int, tenant: str) -> int:
    return cookie(Owner.TENANT, segment, tenant)


def vm_cookie(vm: VM) -> int:
    return cookie(Owner.VM, vm.segment, vm.name)


def meters(settings: FabricSettings) -> dict[int, Meter]:
    """The meters every switch has: what it may send the controller unasked."""
    rate = settings.packet_in_rate
    burst = max(10, rate // 10)
    return {m: Meter(m, rate, burst) for m in MeterId}


def skeleton() -> list[Flow]:
    """Flows every switch has, whatever the tenants: the pipeline's defaults."""
    c = FABRIC_COOKIE
    to_controller = apply(("controller", NO_BUFFER))
    return [
        flow(Table.INGRESS, Prio.DISCOVERY, {"eth_type": ETH_TYPE_LLDP},
             [meter(MeterId.DISCOVERY), to_controller], c),
        # A frame on a port that holds no VM yet: the controller learns from it.
        flow(Table.INGRESS, Prio.DEFAULT, {}, [meter(MeterId.LEARN), to_controller], c),
        flow(Table.ARP, Prio.DEFAULT, {}, [], c),
        flow(Table.SERVICES, Prio.DEFAULT, {}, [goto(Table.UNNAT)], c),
        flow(Table.LB, Prio.DEFAULT, {}, [], c),
        flow(Table.UNNAT, Prio.DEFAULT, {}, [goto(Table.FORWARD)], c),
        flow(Table.FORWARD, Prio.MULTICAST, {"eth_dst": MULTICAST}, [goto(Table.FLOOD)], c),
        flow(Table.FORWARD, Prio.DEFAULT, {}, [], c),
        flow(Table.FLOOD, Prio.DEFAULT, {}, [], c),
    ]


def vm_ingress(vm: VM, loc: Location) -> list[Flow]:
    """Port security: only the VM's own MAC, and its own IP for IPv4 and ARP, untagged."""
    c = vm_cookie(vm)
    ip = str(vm.ip)
    own = {"in_port": loc.port, "vlan_vid": OFPVID_NONE, "eth_src": vm.mac}
    classify = write_metadata(vm.segment)
    return [
        flow(Table.INGRESS, Prio.VM_ALLOW, {**own, "eth_type": ETH_TYPE_IPV4, "ipv4_src": ip},
             [classify, goto(Table.SERVICES)], c),
        flow(Table.INGRESS, Prio.VM_ALLOW,
             {**own, "eth_type": ETH_TYPE_ARP, "arp_spa": ip, "arp_sha": vm.mac},
             [classify, goto(Table.ARP)], c),
        # IPv6 addresses are not modelled: link-local ND and multicast stay
        # inside the tenant, bound to the VM's MAC.
        flow(Table.INGRESS, Prio.VM_ALLOW, {**own, "eth_type": ETH_TYPE_IPV6},
             [classify, goto(Table.FORWARD)], c),
        flow(Table.INGRESS, Prio.VM_PORT_DROP, {"in_port": loc.port}, [], c),
    ]


def arp_answer(segment: int, mac: str, ip: str, owner_cookie: int) -> Flow:
    """Turn a tenant's ARP request for ``ip`` into the reply, back out of the port it came in."""
    return flow(
        Table.ARP, Prio.ARP_ANSWER,
        {"metadata": segment, "eth_type": ETH_TYPE_ARP, "arp_op": 1, "arp_tpa": ip},
        [apply(("move", "eth_src", "eth_dst", 48),
               ("set", "eth_src", mac),
               ("set", "arp_op", 2),
               ("move", "arp_sha", "arp_tha", 48),
               ("move", "arp_spa", "arp_tpa", 32),
               ("set", "arp_sha", mac),
               ("set", "arp_spa", ip),
               ("output", OFPP_IN_PORT))],
        owner_cookie)


def forward_to(vm: VM, at: int, loc: Location, hops: dict[int, int]) -> Flow:
    match = {"metadata": vm.segment, "eth_dst": vm.mac}
    if at == loc.dpid:
        actions = [("output", loc.port)]
    else:
        actions = [*push_tag(vm.segment), ("output", hops[at])]
    return flow(Table.FORWARD, Prio.UNICAST, match, [apply(*actions)], vm_cookie(vm))


@dataclass
class Plan:
    flows: dict[int, set[Flow]]
    groups: dict[int, dict[int, Group]]


def plan(model: Model, fabric: Fabric) -> Plan:
    """The complete desired flow table and groups of every switch the fabric knows."""
    g = fabric.graph()
    out: dict[int, set[Flow]] = {dpid: set(skeleton()) for dpid in fabric.switches}
    groups: dict[int, dict[int, Group]] = {dpid: {} for dpid in fabric.switches}
    all_services = model.services()
    gids = group_ids(all_services)
    for dpid in fabric.switches:
        for port in fabric.fabric_ports(dpid):
            out[dpid].add(flow(Table.INGRESS, Prio.FABRIC_PORT_DROP, {"in_port": port}, [], FABRIC_COOKIE))
            # Known links keep being refreshed even while a flood from some
            # free port exhausts the discovery meter.
            out[dpid].add(flow(Table.INGRESS, Prio.FABRIC_LLDP, {"in_port": port, "eth_type": ETH_TYPE_LLDP},
                               [apply(("controller", NO_BUFFER))], FABRIC_COOKIE))

    by_tenant: dict[str, list[VM]] = defaultdict(list)
    for vm in model.vms():
        by_tenant[vm.tenant].append(vm)

    for tname, vms in sorted(by_tenant.items()):
        segment = vms[0].segment
        tc = tenant_cookie(segment, tname)
        bound = _at(vms, model.locations, g)
        # A migrating VM's target is prepared before the VM arrives: its port
        # security there, and its tenant's flows on the target switch, while
        # traffic to it still goes to where it is.
        pending = _at(vms, model.pending, g)
        members = {loc.dpid for loc in (*bound.values(), *pending.values())}
        if not members:
            continue
        involved = set(members)

        paths: dict[VM, set[int]] = {}
        for vm, loc in bound.items():
            out[loc.dpid].update(vm_ingress(vm, loc))
            paths[vm] = _forward(out, g, vm, loc, members)
            involved |= paths[vm]
        for vm, loc in pending.items():
            out[loc.dpid].update(vm_ingress(vm, loc))
            # Switches on the paths to the target that no path to the VM uses
            # yet get theirs now; the flip then only rewrites flows in place.
            involved |= _forward(out, g, vm, loc, members, skip=paths.get(vm, set()))

        for at in members:
            for vm in vms:
                out[at].add(arp_answer(segment, vm.mac, str(vm.ip), vm_cookie(vm)))

        tree = flood_tree(g, members)
        involved |= set(tree.nodes)
        for at in sorted(tree.nodes):
            local = sorted(loc.port for loc in bound.values() if loc.dpid == at)
            uplinks = [tree.edges[at, n]["ports"][at] for n in sorted(tree.neighbors(at))]
            actions = [("output", p) for p in local]
            if uplinks:
                actions += [*push_tag(segment), *(("output", p) for p in uplinks)]
            out[at].add(flow(Table.FLOOD, Prio.FLOOD, {"metadata": segment}, [apply(*actions)], tc))

        for at in involved:
            for port in fabric.fabric_ports(at):
                out[at].add(flow(
                    Table.INGRESS, Prio.TENANT_FABRIC,
                    {"in_port": port, "vlan_vid": OFPVID_PRESENT | segment},
                    [apply(("pop_vlan",)), write_metadata(segment), goto(Table.UNNAT)], tc))

        services = [svc for svc in all_services if svc.tenant == tname]
        if services:
            tenant = model.tenant(tname)
            probe_mac = virtual_mac(tenant.probe_ip)
            vips = {}
            for svc in services:
                vips.setdefault(svc.vip, svc)
            for at in members:
                out[at].add(arp_answer(segment, probe_mac, str(tenant.probe_ip), tc))
                out[at].add(flow(Table.FORWARD, Prio.PROBE_REPLY, {"metadata": segment, "eth_dst": probe_mac},
                                 [meter(MeterId.SERVICE), apply(("controller", NO_BUFFER))], tc))
                for vip, svc in vips.items():
                    out[at].add(arp_answer(segment, svc.vip_mac, str(vip), service_cookie(svc)))
            for svc in services:
                group = group_for(model, svc, gids[(svc.tenant, svc.name)], Table.LB, g)
                flows = service_flows(svc, group, Table, MeterId.SERVICE, NO_BUFFER) + \
                    backend_flows(svc, Table, vm_cookie)
                for at in members:
                    out[at].update(flows)
                    if group is not None:
                        groups[at][group.group_id] = group
    return Plan(out, groups)


def _forward(out: dict[int, set[Flow]], g, vm: VM, loc: Location, members: set[int],
             skip: set[int] = frozenset()) -> set[int]:
    """Add the unicast flows toward ``vm`` at ``loc`` on every path to it from
    ``members``, except on the switches in ``skip``; returns the switches on those paths."""
    hops = next_hops(g, loc.dpid)
    on_path = {n for src in members for n in path_nodes(g, src, loc.dpid, hops)}
    for at in on_path - skip:
        out[at].add(forward_to(vm, at, loc, hops))
    return on_path


def _at(vms: list[VM], where: dict[str, Location], g) -> dict[VM, Location]:
    """The VMs of ``vms`` that ``where`` places on a switch of graph ``g``."""
    return {vm: where[vm.name] for vm in vms if vm.name in where and where[vm.name].dpid in g}


def recover_locations(model: Model, dpid: int, installed: set[Flow]) -> dict[str, Location]:
    """Where the VMs are, read back from a switch's own port-security flows.

    After a controller restart the switches still hold the flows (fail-secure),
    so a VM that is silent keeps its place instead of being unlearnt.
    """
    by_id = {(vm.segment, object_id(vm.name)): vm for vm in model.vms()}
    found = {}
    for f in installed:
        owner, segment, oid = cookie_owner(f.cookie)
        if f.table != Table.INGRESS or f.priority != Prio.VM_PORT_DROP or owner != Owner.VM:
            continue
        vm = by_id.get((segment, oid))
        port = f.match_dict.get("in_port")
        if vm is not None and port is not None:
            found[vm.name] = Location(dpid, port)
    return found
