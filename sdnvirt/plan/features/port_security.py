"""Port security: a VM's port takes only the VM's own untagged frames, from its own MAC and IP.

Its flows also tell a restarted controller where the VMs are
(``recover_locations``): switches keep their flows while it is away.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from enum import IntEnum

from ...model import VM, Location, Model
from ..feature import Contribution, Feature, declare
from ..flows import (
    ETH_TYPE_ARP,
    ETH_TYPE_IPV4,
    ETH_TYPE_IPV6,
    OFPVID_NONE,
    Flow,
    Owner,
    cookie_owner,
    flow,
    goto,
    object_id,
    write_metadata,
)
from ..owners import vm_cookie
from ..tables import Table
from ..tenancy import Tenant


class Prio(IntEnum):     # both in table INGRESS
    VM_ALLOW = 300       # the VM's own MAC/IP on its own port
    VM_PORT_DROP = 250   # anything else on a VM's port


def vm_ingress(vm: VM, loc: Location) -> list[Flow]:
    """Only the VM's own MAC, and its own IP for IPv4 and ARP, untagged, classified as its tenant.

    A VM in security groups sends IPv4 and IPv6 through its egress rules first."""
    c = vm_cookie(vm)
    guard = vm.guarded
    ip = str(vm.ip)
    own = {"in_port": loc.port, "vlan_vid": OFPVID_NONE, "eth_src": vm.mac}
    classify = write_metadata(vm.segment)
    return [
        flow(Table.INGRESS, Prio.VM_ALLOW, {**own, "eth_type": ETH_TYPE_IPV4, "ipv4_src": ip},
             [classify, goto(Table.SG_EGRESS if guard else Table.SERVICES)], c),
        flow(Table.INGRESS, Prio.VM_ALLOW,
             {**own, "eth_type": ETH_TYPE_ARP, "arp_spa": ip, "arp_sha": vm.mac},
             [classify, goto(Table.ARP)], c),
        # IPv6 addresses are not modelled: link-local ND and multicast stay
        # inside the tenant, bound to the VM's MAC.
        flow(Table.INGRESS, Prio.VM_ALLOW, {**own, "eth_type": ETH_TYPE_IPV6},
             [classify, goto(Table.SG_EGRESS if guard else Table.FORWARD)], c),
        flow(Table.INGRESS, Prio.VM_PORT_DROP, {"in_port": loc.port}, [], c),
    ]


class PortSecurity(Feature):
    declaration = declare("port security", {Table.INGRESS: set(Prio)}, {Owner.VM})
    reads_paths = False

    def tenant_inputs(self, tenant: Tenant) -> tuple[()]:
        return ()

    def parts(self, tenant: Tenant) -> dict[Hashable, object]:
        return {vm: loc for vm, loc in tenant.bound.items()}  # noqa: C416 - a dict of Hashable keys, for mypy

    def part(self, tenant: Tenant, key: Hashable, out: Contribution) -> None:
        assert isinstance(key, VM)
        loc = tenant.bound[key]
        out.add(loc.dpid, *vm_ingress(key, loc))


def recover_locations(model: Model, dpid: int, installed: Iterable[Flow]) -> dict[str, Location]:
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
