"""Each tenant's footprint on the fabric, computed once per plan and read by every feature.

Paths and broadcast span switches: they are worked out here once per
tenant, and each feature hands out every switch's part of them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Container
from dataclasses import dataclass

from ..model import VM, Location, Model, Service
from .encap import Encap, Hop
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
    # Per VM, every other switch that sends its frames on toward it (from the
    # members, and on the way): how (Encap.toward).
    routes: dict[VM, dict[int, Hop]]
    pending_routes: dict[VM, dict[int, Hop]]
    flood: dict[int, Hop]         # Encap.flood of the members
    carriers: set[int]            # every switch its frames cross


def tenants(model: Model, encap: Encap, switches: Container[int]) -> list[Tenant]:
    """The tenants with at least one VM bound or pending on one of ``switches``, by name."""
    vms_of, services_of = by_tenant(model)
    out = []
    for name, vms in sorted(vms_of.items()):
        tenant = footprint(model, encap, switches, name, vms, services_of[name])
        if tenant is not None:
            out.append(tenant)
    return out


def by_tenant(model: Model) -> tuple[dict[str, list[VM]], defaultdict[str, list[Service]]]:
    """The model's VMs and services, by tenant."""
    vms_of: defaultdict[str, list[VM]] = defaultdict(list)
    for vm in model.vms():
        vms_of[vm.tenant].append(vm)
    services_of: defaultdict[str, list[Service]] = defaultdict(list)
    for svc in model.services():
        services_of[svc.tenant].append(svc)
    return vms_of, services_of


def footprint(model: Model, encap: Encap, switches: Container[int], name: str, vms: list[VM],
              services: list[Service], before: Tenant | None = None,
              moved: tuple[Container[int] | None, bool] = ((), False)) -> Tenant | None:
    """One tenant's footprint; None if none of its VMs is on one of ``switches``.

    ``before``: its footprint in an earlier plan on the same switches, returned
    as it is if nothing changed, its paths reused where they still hold;
    ``moved``: since then, the switches the paths toward which may have
    changed (None: any) and whether the broadcast may have (``Encap.moved``)."""
    bound = _at(vms, model.locations, switches)
    pending = _at(vms, model.pending, switches)
    paths, flood_moved = moved
    if before is not None and before.bound == bound and before.pending == pending and before.vms == vms \
            and before.services == services and not flood_moved and paths is not None \
            and not any(loc.dpid in paths for loc in (*bound.values(), *pending.values())):
        return before
    members = {loc.dpid for loc in (*bound.values(), *pending.values())}
    if not members:
        return None
    segment = vms[0].segment
    kept = before if before is not None and before.members == members and before.segment == segment else None
    # Paths toward a switch whose paths changed are worked out again (and equal ones still
    # compare equal: the features' parts are computed again only where they differ).
    still = (lambda loc: False) if paths is None else (lambda loc: loc.dpid not in paths)
    routes = _routes(encap, segment, members, bound, kept.bound if kept else {}, kept.routes if kept else {}, still)
    pending_routes = _routes(encap, segment, members, pending, kept.pending if kept else {},
                             kept.pending_routes if kept else {}, still)
    flood = kept.flood if kept is not None and not flood_moved else encap.flood(segment, members)
    carriers = members | flood.keys()
    for r in {id(r): r for r in (*routes.values(), *pending_routes.values())}.values():   # VMs share paths
        carriers |= r.keys()
    tenant = Tenant(name, segment, tenant_cookie(segment, name), vms, services, bound, pending,
                    members, routes, pending_routes, flood, carriers)
    # Paths worked out again may be the same: then the features find the footprint unchanged.
    return before if before is not None and tenant == before else tenant


def same_but_paths(a: Tenant, b: Tenant) -> bool:
    """Whether two footprints of a tenant differ in their paths alone (routes, broadcast, carriers)."""
    return (a.name, a.segment, a.vms, a.services, a.bound, a.pending, a.members) == \
        (b.name, b.segment, b.vms, b.services, b.bound, b.pending, b.members)


def _routes(encap: Encap, segment: int, members: set[int], at: dict[VM, Location], old_at: dict[VM, Location],
            old_routes: dict[VM, dict[int, Hop]], still: Callable[[Location], bool]
            ) -> dict[VM, dict[int, Hop]]:
    """The paths to the VMs ``at`` their places; a VM's old path where neither it
    nor the paths toward its switch (``still``) moved."""
    toward: dict[int, dict[int, Hop]] = {}     # the same for every VM of one switch: worked out once
    out = {}
    for vm, loc in at.items():
        if old_at.get(vm) == loc and still(loc):
            out[vm] = old_routes[vm]
            continue
        if encap.addressed and encap.arrival(loc) is None:
            out[vm] = {}
            continue
        route = toward.get(loc.dpid)
        if route is None:
            route = toward[loc.dpid] = encap.toward(segment, loc.dpid, members)
        out[vm] = route
    return out


def _at(vms: list[VM], where: dict[str, Location], switches: Container[int]) -> dict[VM, Location]:
    """The VMs of ``vms`` that ``where`` places on one of ``switches``."""
    return {vm: where[vm.name] for vm in vms if vm.name in where and where[vm.name].dpid in switches}
