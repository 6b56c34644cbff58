"""Migration pre-install: a migrating VM's target is made ready before the VM arrives.

The target switch gets the VM's port security for its new port, its
delivery of frames addressed there (``Encap.arrival``), and, on switches
that only the paths to the target use, the flow toward it, while every path
to the VM still leads to where it is.  The tenant's other
flows come to the target because it counts among the tenant's switches
(Tenant.members).  The flip is then ``Model.bind``: only flows rewritten in
place and the source's removed.
"""

from __future__ import annotations

from collections.abc import Hashable

from ...model import VM
from ..feature import Contribution, Feature, declare
from ..flows import Owner
from ..tables import Table
from ..tenancy import Tenant
from .port_security import Prio as SecurityPrio
from .port_security import vm_ingress
from .switching import Prio as SwitchingPrio
from .switching import forward


class MigrationPreinstall(Feature):
    declaration = declare("migration pre-install",
                          {Table.INGRESS: set(SecurityPrio), Table.FORWARD: {SwitchingPrio.UNICAST}}, {Owner.VM})

    def tenant_inputs(self, tenant: Tenant) -> tuple[()]:
        return ()

    def parts(self, tenant: Tenant) -> dict[Hashable, object]:
        arrival = self.ctx.encap.arrival
        return {vm: (loc, arrival(loc), tenant.pending_routes[vm], tenant.bound.get(vm), tenant.routes.get(vm))
                for vm, loc in tenant.pending.items()}

    def link_parts(self, tenant: Tenant) -> dict[Hashable, object]:
        return {}     # what it reads of the paths is in the footprint

    def part(self, tenant: Tenant, key: Hashable, out: Contribution) -> None:
        assert isinstance(key, VM)
        vm, loc = key, tenant.pending[key]
        out.add(loc.dpid, *vm_ingress(vm, loc))
        # Switches on the current paths keep theirs, toward the source.
        current = tenant.bound.get(vm)
        skip = set(tenant.routes[vm]) | {current.dpid} if current else set()
        for at, f in forward(vm, loc, tenant.pending_routes[vm], self.ctx.encap.arrival(loc), skip):
            out.add(at, f)
