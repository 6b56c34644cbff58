"""A tenant's security groups: list, get, create, replace, delete.

Which VMs are in a group is the VMs' own key (``security_groups`` of the VM
resource), as in Neutron a port lists its groups.  A change is validated
with the whole config, as the config file is: a rule naming a group that
does not exist, or deleting a group a VM or a rule still names, is a 422
naming the key at fault.
"""

from __future__ import annotations

from typing import Any, cast

from fastapi import APIRouter, Response, status

from ..config import Config
from ..overlay import Changes
from ..secgroups import SecurityGroupSpec
from ..state import ConfigState
from .deps import ConfigStateDep
from .errors import apply_change, conflict, not_found
from .schemas import NewSecurityGroup, Origin, SecurityGroup
from .tenants import REFUSALS, tenant_of

router = APIRouter(tags=["security groups"])
PATH = "/tenants/{tenant}/security-groups"
_REFUSALS = cast(dict[int | str, dict[str, Any]], REFUSALS)


def _group(state: ConfigState, config: Config, tenant: str, name: str) -> SecurityGroup:
    spec = tenant_of(config, tenant)
    group = spec.security_groups.get(name)
    if group is None:
        raise not_found(f"security group {name} in tenant {tenant}")
    members = sorted(v for v, vm in spec.vms.items() if name in (vm.security_groups or ()))
    return SecurityGroup(**group.model_dump(), tenant=tenant, name=name, members=members,
                         origin=cast(Origin, state.origin("security_group", f"{tenant}/{name}")))


def _exists(changes: Changes, tenant: str, name: str) -> bool:
    doc = changes.doc()["tenants"].get(tenant)
    if doc is None:
        raise not_found(f"tenant {tenant}")
    return name in doc.get("security_groups", {})


@router.get(PATH, response_model=list[SecurityGroup], responses=_REFUSALS)
def list_security_groups(tenant: str, state: ConfigStateDep):
    config = state.config
    return [_group(state, config, tenant, g) for g in sorted(tenant_of(config, tenant).security_groups)]


@router.get(PATH + "/{group}", response_model=SecurityGroup, responses=_REFUSALS)
def get_security_group(tenant: str, group: str, state: ConfigStateDep):
    return _group(state, state.config, tenant, group)


@router.post(PATH, response_model=SecurityGroup, status_code=status.HTTP_201_CREATED, responses=_REFUSALS)
def create_security_group(tenant: str, body: NewSecurityGroup, state: ConfigStateDep):
    def edit(changes: Changes) -> None:
        if _exists(changes, tenant, body.name):
            raise conflict(f"security group {body.name} in tenant {tenant}")
        changes.set("security_group", f"{tenant}/{body.name}", body.model_dump(mode="json", exclude={"name"}))
    return _group(state, apply_change(state, edit), tenant, body.name)


@router.put(PATH + "/{group}", response_model=SecurityGroup, responses=_REFUSALS)
def replace_security_group(tenant: str, group: str, body: SecurityGroupSpec, state: ConfigStateDep):
    """The group's rules become the body's; the VMs in it enforce them at once, established connections too."""
    def edit(changes: Changes) -> None:
        if not _exists(changes, tenant, group):
            raise not_found(f"security group {group} in tenant {tenant}")
        changes.set("security_group", f"{tenant}/{group}", body.model_dump(mode="json"))
    return _group(state, apply_change(state, edit), tenant, group)


@router.delete(PATH + "/{group}", status_code=status.HTTP_204_NO_CONTENT, responses=_REFUSALS)
def delete_security_group(tenant: str, group: str, state: ConfigStateDep):
    """Refused (422) while a VM or a rule of another group names it."""
    def edit(changes: Changes) -> None:
        if not _exists(changes, tenant, group):
            raise not_found(f"security group {group} in tenant {tenant}")
        changes.set("security_group", f"{tenant}/{group}", None)
    apply_change(state, edit)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
