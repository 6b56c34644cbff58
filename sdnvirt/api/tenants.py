"""Tenants and their VMs: list, get, create, replace, delete.

Bodies are validated by the config file's own models; the whole config they
lead to is validated again before anything is stored or applied.
"""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from ..config import Config, TenantSpec, VMSpec
from ..overlay import Changes
from ..state import ConfigState
from .deps import ConfigStateDep, ControllerDep, PrincipalDep
from .errors import apply_change, conflict, not_found
from .schemas import VM, Error, NewTenant, NewVM, Tenant

router = APIRouter(tags=["tenants"])
REFUSALS = {status.HTTP_404_NOT_FOUND: {"model": Error}, status.HTTP_409_CONFLICT: {"model": Error},
            status.HTTP_422_UNPROCESSABLE_CONTENT: {"model": Error, "description": "the change would make "
                                                    "the config invalid; nothing changed"}}


def tenant_of(config: Config, name: str) -> TenantSpec:
    tenant = config.tenants.get(name)
    if tenant is None:
        raise not_found(f"tenant {name}")
    return tenant


def _tenant(state: ConfigState, config: Config, name: str) -> Tenant:
    return Tenant(**tenant_of(config, name).model_dump(), name=name, origin=state.origin("tenant", name))


def _vms(state: ConfigState, controller, config: Config, tenant: str | None = None) -> list[VM]:
    where = {vm["name"]: vm for vm in controller.vms(tenant)}
    return [VM(**vm.model_dump(), tenant=tname, name=vname, origin=state.origin("vm", f"{tname}/{vname}"),
               switch=where.get(vname, {}).get("switch"), port=where.get(vname, {}).get("port"))
            for tname, t in sorted(config.tenants.items()) if tenant in (None, tname)
            for vname, vm in sorted(t.vms.items())]


def _vm(state: ConfigState, controller, config: Config, tenant: str, name: str) -> VM:
    if name not in tenant_of(config, tenant).vms:
        raise not_found(f"VM {name} in tenant {tenant}")
    return next(vm for vm in _vms(state, controller, config, tenant) if vm.name == name)


def _exists(changes: Changes, tenant: str, kind: str = "", name: str = "") -> bool:
    """Whether the tenant (or its VM/service ``name``) exists; 404 if the tenant does not."""
    doc = changes.doc()["tenants"].get(tenant)
    if doc is None:
        raise not_found(f"tenant {tenant}")
    return not kind or name in doc[kind]


# -- tenants -------------------------------------------------------------------------

@router.get("/tenants", response_model=list[Tenant])
def list_tenants(state: ConfigStateDep, who: PrincipalDep):
    """Every tenant; a tenant token's own only."""
    config = state.config
    return [_tenant(state, config, name) for name in sorted(config.tenants) if who.tenant in (None, name)]


@router.get("/tenants/{tenant}", response_model=Tenant, responses=REFUSALS)
def get_tenant(tenant: str, state: ConfigStateDep):
    return _tenant(state, state.config, tenant)


@router.post("/tenants", response_model=Tenant, status_code=status.HTTP_201_CREATED, responses=REFUSALS)
def create_tenant(body: NewTenant, state: ConfigStateDep):
    """A new tenant, with its VMs and services if the body has them."""
    def edit(changes: Changes) -> None:
        if body.name in changes.doc()["tenants"]:
            raise conflict(f"tenant {body.name}")
        changes.put_tenant(body.name, body.model_dump(mode="json", exclude={"name"}))
    return _tenant(state, apply_change(state, edit), body.name)


@router.put("/tenants/{tenant}", response_model=Tenant, responses=REFUSALS)
def replace_tenant(tenant: str, body: TenantSpec, state: ConfigStateDep):
    """The tenant becomes exactly the body: VMs and services it does not list are deleted."""
    def edit(changes: Changes) -> None:
        _exists(changes, tenant)
        changes.put_tenant(tenant, body.model_dump(mode="json"))
    return _tenant(state, apply_change(state, edit), tenant)


@router.delete("/tenants/{tenant}", status_code=status.HTTP_204_NO_CONTENT, responses=REFUSALS)
def delete_tenant(tenant: str, state: ConfigStateDep):
    """The tenant, its VMs and its services."""
    def edit(changes: Changes) -> None:
        _exists(changes, tenant)
        changes.delete_tenant(tenant)
    apply_change(state, edit)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# -- VMs -------------------------------------------------------------------------------

@router.get("/vms", response_model=list[VM])
def list_all_vms(state: ConfigStateDep, controller: ControllerDep, who: PrincipalDep):
    """Every VM of every tenant (a tenant token's: of its own), and where it is."""
    return _vms(state, controller, state.config, who.tenant)


@router.get("/tenants/{tenant}/vms", response_model=list[VM], responses=REFUSALS)
def list_vms(tenant: str, state: ConfigStateDep, controller: ControllerDep):
    config = state.config
    tenant_of(config, tenant)
    return _vms(state, controller, config, tenant)


@router.get("/tenants/{tenant}/vms/{vm}", response_model=VM, responses=REFUSALS)
def get_vm(tenant: str, vm: str, state: ConfigStateDep, controller: ControllerDep):
    return _vm(state, controller, state.config, tenant, vm)


@router.post("/tenants/{tenant}/vms", response_model=VM, status_code=status.HTTP_201_CREATED, responses=REFUSALS)
def create_vm(tenant: str, body: NewVM, state: ConfigStateDep, controller: ControllerDep):
    def edit(changes: Changes) -> None:
        if _exists(changes, tenant, "vms", body.name):
            raise conflict(f"VM {body.name} in tenant {tenant}")
        changes.set("vm", f"{tenant}/{body.name}", body.model_dump(mode="json", exclude={"name"}))
    return _vm(state, controller, apply_change(state, edit), tenant, body.name)


@router.put("/tenants/{tenant}/vms/{vm}", response_model=VM, responses=REFUSALS)
def replace_vm(tenant: str, vm: str, body: VMSpec, state: ConfigStateDep, controller: ControllerDep):
    def edit(changes: Changes) -> None:
        if not _exists(changes, tenant, "vms", vm):
            raise not_found(f"VM {vm} in tenant {tenant}")
        changes.set("vm", f"{tenant}/{vm}", body.model_dump(mode="json"))
    return _vm(state, controller, apply_change(state, edit), tenant, vm)


@router.delete("/tenants/{tenant}/vms/{vm}", status_code=status.HTTP_204_NO_CONTENT, responses=REFUSALS)
def delete_vm(tenant: str, vm: str, state: ConfigStateDep):
    """Refused (422) while a service of the tenant still has it as a backend."""
    def edit(changes: Changes) -> None:
        if not _exists(changes, tenant, "vms", vm):
            raise not_found(f"VM {vm} in tenant {tenant}")
        changes.set("vm", f"{tenant}/{vm}", None)
    apply_change(state, edit)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
