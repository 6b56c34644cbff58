"""Load-balanced services, their backends, draining; and every backend's health."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from ..config import BackendSpec, Config, ServiceSpec
from ..overlay import Changes, backend_key
from ..state import ConfigState
from .deps import ConfigStateDep, ControllerDep, PrincipalDep
from .errors import apply_change, conflict, not_found
from .schemas import BackendHealth, NewService, Service
from .tenants import REFUSALS, tenant_of

router = APIRouter(tags=["services"])


def _service(state: ConfigState, config: Config, tenant: str, name: str) -> Service:
    spec = tenant_of(config, tenant).services.get(name)
    if spec is None:
        raise not_found(f"service {name} in tenant {tenant}")
    return Service(**spec.model_dump(), tenant=tenant, name=name, origin=state.origin("service", f"{tenant}/{name}"))


def _health(controller, tenant: str | None = None, service: str | None = None) -> list[dict]:
    return [{"tenant": svc["tenant"], "service": svc["name"], "backend": f"{b['vm']}:{b['port']}", **b}
            for svc in controller.services(tenant, service) for b in svc["backends"]]


def _backend(controller, tenant: str, service: str, key: str) -> dict:
    found = [b for b in _health(controller, tenant, service) if b["backend"] == key]
    if not found:
        raise not_found(f"backend {key} in service {service} of tenant {tenant}")
    return found[0]


def _current(changes: Changes, tenant: str, service: str) -> dict:
    """The service as it is now (drained flags included); 404 if there is none."""
    spec = changes.doc()["tenants"].get(tenant, {}).get("services", {}).get(service)
    if spec is None:
        raise not_found(f"service {service} in tenant {tenant}")
    return spec


# -- services ------------------------------------------------------------------------

@router.get("/services", response_model=list[Service])
def list_all_services(state: ConfigStateDep, who: PrincipalDep):
    """Every service of every tenant; a tenant token's own only."""
    config = state.config
    return [_service(state, config, t, s) for t in sorted(config.tenants) if who.tenant in (None, t)
            for s in sorted(config.tenants[t].services)]


@router.get("/tenants/{tenant}/services", response_model=list[Service], responses=REFUSALS)
def list_services(tenant: str, state: ConfigStateDep):
    config = state.config
    return [_service(state, config, tenant, s) for s in sorted(tenant_of(config, tenant).services)]


@router.get("/tenants/{tenant}/services/{service}", response_model=Service, responses=REFUSALS)
def get_service(tenant: str, service: str, state: ConfigStateDep):
    return _service(state, state.config, tenant, service)


@router.post("/tenants/{tenant}/services", response_model=Service, status_code=status.HTTP_201_CREATED,
             responses=REFUSALS)
def create_service(tenant: str, body: NewService, state: ConfigStateDep):
    def edit(changes: Changes) -> None:
        tenant_doc = changes.doc()["tenants"].get(tenant)
        if tenant_doc is None:
            raise not_found(f"tenant {tenant}")
        if body.name in tenant_doc["services"]:
            raise conflict(f"service {body.name} in tenant {tenant}")
        changes.put_service(tenant, body.name, body.model_dump(mode="json", exclude={"name"}))
    return _service(state, apply_change(state, edit), tenant, body.name)


@router.put("/tenants/{tenant}/services/{service}", response_model=Service, responses=REFUSALS)
def replace_service(tenant: str, service: str, body: ServiceSpec, state: ConfigStateDep):
    def edit(changes: Changes) -> None:
        _current(changes, tenant, service)
        changes.put_service(tenant, service, body.model_dump(mode="json"))
    return _service(state, apply_change(state, edit), tenant, service)


@router.delete("/tenants/{tenant}/services/{service}", status_code=status.HTTP_204_NO_CONTENT, responses=REFUSALS)
def delete_service(tenant: str, service: str, state: ConfigStateDep):
    def edit(changes: Changes) -> None:
        _current(changes, tenant, service)
        changes.put_service(tenant, service, None)
    apply_change(state, edit)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# -- backends --------------------------------------------------------------------------

def _edit_backends(state: ConfigState, tenant: str, service: str, key: str | None, new: BackendSpec | None,
                   create: bool = False) -> None:
    """Replace backend ``key`` of the service by ``new`` (None: delete it); ``create``: add ``new``."""
    def edit(changes: Changes) -> None:
        spec = _current(changes, tenant, service)
        keys = [backend_key(b) for b in spec["backends"]]
        if create:
            if backend_key(new.model_dump()) in keys:
                raise conflict(f"backend {backend_key(new.model_dump())} in service {service}")
            backends = [*spec["backends"], new.model_dump(mode="json")]
        elif key not in keys:
            raise not_found(f"backend {key} in service {service} of tenant {tenant}")
        else:
            backends = [b for b in spec["backends"] if backend_key(b) != key]
            if new is not None:
                backends.insert(keys.index(key), new.model_dump(mode="json"))
        changes.put_service(tenant, service, {**spec, "backends": backends})
    apply_change(state, edit)


@router.get("/tenants/{tenant}/services/{service}/backends", response_model=list[BackendHealth],
            responses=REFUSALS)
def list_backends(tenant: str, service: str, state: ConfigStateDep, controller: ControllerDep):
    _service(state, state.config, tenant, service)
    return _health(controller, tenant, service)


@router.get("/tenants/{tenant}/services/{service}/backends/{backend}", response_model=BackendHealth,
            responses=REFUSALS)
def get_backend(tenant: str, service: str, backend: str, controller: ControllerDep):
    """``backend`` is vm:port."""
    return _backend(controller, tenant, service, backend)


@router.post("/tenants/{tenant}/services/{service}/backends", response_model=BackendHealth,
             status_code=status.HTTP_201_CREATED, responses=REFUSALS)
def create_backend(tenant: str, service: str, body: BackendSpec, state: ConfigStateDep, controller: ControllerDep):
    _edit_backends(state, tenant, service, None, body, create=True)
    return _backend(controller, tenant, service, backend_key(body.model_dump()))


@router.put("/tenants/{tenant}/services/{service}/backends/{backend}", response_model=BackendHealth,
            responses=REFUSALS)
def replace_backend(tenant: str, service: str, backend: str, body: BackendSpec, state: ConfigStateDep,
                    controller: ControllerDep):
    _edit_backends(state, tenant, service, backend, body)
    return _backend(controller, tenant, service, backend_key(body.model_dump()))


@router.delete("/tenants/{tenant}/services/{service}/backends/{backend}", status_code=status.HTTP_204_NO_CONTENT,
               responses=REFUSALS)
def delete_backend(tenant: str, service: str, backend: str, state: ConfigStateDep):
    _edit_backends(state, tenant, service, backend, None)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _drain(state: ConfigState, controller, tenant: str, service: str, backend: str, drained: bool) -> dict:
    def edit(changes: Changes) -> None:
        if backend not in [backend_key(b) for b in _current(changes, tenant, service)["backends"]]:
            raise not_found(f"backend {backend} in service {service} of tenant {tenant}")
        changes.set("drain", f"{tenant}/{service}/{backend}", {"drained": drained})
    apply_change(state, edit)
    return _backend(controller, tenant, service, backend)


@router.post("/tenants/{tenant}/services/{service}/backends/{backend}/drain", response_model=BackendHealth,
             responses=REFUSALS)
def drain(tenant: str, service: str, backend: str, state: ConfigStateDep, controller: ControllerDep):
    """No new connections to the backend; the ones it has finish. Kept across restarts."""
    return _drain(state, controller, tenant, service, backend, True)


@router.post("/tenants/{tenant}/services/{service}/backends/{backend}/undrain", response_model=BackendHealth,
             responses=REFUSALS)
def undrain(tenant: str, service: str, backend: str, state: ConfigStateDep, controller: ControllerDep):
    """New connections again, with the backend's weight."""
    return _drain(state, controller, tenant, service, backend, False)


@router.get("/health", response_model=list[BackendHealth], tags=["fabric"])
def get_health(controller: ControllerDep, who: PrincipalDep):
    """Every backend of every service (a tenant token's: of its own): health, last check, latency, counters."""
    return _health(controller, who.tenant)
