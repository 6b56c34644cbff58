"""Each tenant's footprint on the fabric, computed once per plan and read by every feature.

Paths and flood trees span switches: they are worked out here once per
tenant, and each feature hands out every switch's part of them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Container
from dataclasses import dataclass

from ..model import VM, Location, Model, Service
from .encap import Actions, Encap
from .owners import tenant_cookie


@dataclass(frozen=True)
class Tenant:
    name: str
    segment: int
    cookie: int
    vms: list[VM]                 # located or not
    services: list[Service]
    bound: dict[VM, Location]     # where its VMs are, on switches the fabric knows
    # A migrating VM's target: prepared before the VM arrives, while traffic
    # to it still goes to where it is.
    pending: dict[VM, Location]
    members: set[int]             # switches holding one of its VMs, bound or pending
    # Per VM, every other switch on the paths to it from the members: how a
    # frame goes on from there (Encap.toward).
    routes: dict[VM, dict[int, Actions]]
    pending_routes: dict[VM, dict[int, Actions]]
    flood: dict[int, Actions]     # Encap.flood of the members
    carriers: set[int]            # every switch its frames cross


def tenants(model: Model, encap: Encap, switches: Container[int]) -> list[Tenant]:
    """The tenants with at least one VM bound or pending on one of ``switches``, by name."""
    vms_of: defaultdict[str, list[VM]] = defaultdict(list)
    for vm in model.vms():
        vms_of[vm.tenant].append(vm)
    services_of: defaultdict[str, list[Service]] = defaultdict(list)
    for svc in model.services():
        services_of[svc.tenant].append(svc)
    out = []
    for name, vms in sorted(vms_of.items()):
        bound = _at(vms, model.locations, switches)
        pending = _at(vms, model.pending, switches)
        members = {loc.dpid for loc in (*bound.values(), *pending.values())}
        if not members:
            continue
        segment = vms[0].segment
        routes = {vm: encap.toward(segment, loc.dpid, members) for vm, loc in bound.items()}
        pending_routes = {vm: encap.toward(segment, loc.dpid, members) for vm, loc in pending.items()}
        flood = encap.flood(segment, members)
        carriers = members | flood.keys()
        for route in (*routes.values(), *pending_routes.values()):
            carriers |= route.keys()
        out.append(Tenant(name, segment, tenant_cookie(segment, name), vms, services_of[name], bound, pending,
                          members, routes, pending_routes, flood, carriers))
    return out


def _at(vms: list[VM], where: dict[str, Location], switches: Container[int]) -> dict[VM, Location]:
    """The VMs of ``vms`` that ``where`` places on one of ``switches``."""
    return {vm: where[vm.name] for vm in vms if vm.name in where and where[vm.name].dpid in switches}
