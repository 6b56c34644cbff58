"""Who may call which route: one rule for every route of the API, applied
before its handler runs (``authorize``, a dependency of the whole app).

The admin token may call every route. A tenant token:

- on a route whose path holds ``{tenant}``: only its own tenant. Another
  tenant's is answered exactly as a tenant that does not exist ("no tenant
  T", 404), so that a tenant cannot learn the others' names by probing.
  The tenant itself (its segment and subnet, its existence) is the
  operator's: OPERATOR_ONLY names those routes, answered 403 to its token;
- on any other route: 403, the route is fabric-wide (topology, reload,
  tokens, audit...), unless FILTERED names its handler: that handler takes
  ``PrincipalDep`` and answers a tenant token with its tenant's part only
  (its tenants, VMs, services, health, events, migrations).

A new route needs no entry here to be covered: put it under
``/tenants/{tenant}/`` when it belongs to a tenant, and it is scoped; any
other is admin-only until its handler filters by ``principal.tenant`` and
is added to FILTERED. tests/test_api_access.py walks the OpenAPI document
and calls every route with the admin token, a token of the route's tenant,
another tenant's and none, so a route that leaks fails there.

VM names and MAC addresses are unique across tenants, so a tenant's change
can be invalid because of another tenant's VM: the 422 a tenant token gets
says so without naming it (``redact``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from fastapi import FastAPI, HTTPException, Request, status
from fastapi.exception_handlers import http_exception_handler
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..config import Config
from .credentials import Principal
from .deps import PrincipalDep
from .errors import not_found

# openapi: the document describes the API, nothing of any tenant.
FILTERED = frozenset({"list_tenants", "list_all_vms", "list_all_services", "get_health", "list_events",
                      "list_migrations", "get_migration", "openapi"})
OPERATOR_ONLY = frozenset({"replace_tenant", "delete_tenant"})
ELSEWHERE = "already used in another tenant (VM names and MAC addresses are unique across tenants)"


def forbidden(who: Principal, method: str, path: str) -> HTTPException:
    return HTTPException(status.HTTP_403_FORBIDDEN,
                         f"{method} {path} is the operator's: a token of tenant {who.tenant} may not call it")


def check(who: Principal, method: str, path: str, name: str, params: Mapping[str, str]) -> None:
    """Raise the refusal of ``who`` calling route ``name`` (``path`` its template,
    ``/v1/tenants/{tenant}/vms``) with ``params``; return if it may."""
    if who.admin:
        return
    if "{tenant}" in path:
        if params["tenant"] != who.tenant:
            raise not_found(f"tenant {params['tenant']}")
        if name in OPERATOR_ONLY:
            raise forbidden(who, method, path)
    elif name not in FILTERED:
        raise forbidden(who, method, path)


def authorize(request: Request, who: PrincipalDep) -> None:
    route = request.scope["route"]
    check(who, request.method, route.path, route.name, request.path_params)


def redact(problems: list[dict[str, str]], tenant: str, config: Config) -> list[dict[str, str]]:
    """The problems of a 422, as a token of ``tenant`` may see them: one found in
    another tenant, or whose message names another tenant or its VM, is told
    as ELSEWHERE, at the tenant's own key."""
    others = {n for t, spec in config.tenants.items() if t != tenant for n in (t, *spec.vms)}
    mine = f"tenants.{tenant}"
    told: list[dict[str, str]] = []
    for problem in problems:
        loc = problem["loc"]
        inside = loc == mine or loc.startswith(mine + ".") or not loc.startswith("tenants.")
        if not inside or others & set(re.findall(r"[\w.-]+", problem["msg"])):
            problem = {"loc": loc if inside else mine, "msg": ELSEWHERE}
        if problem not in told:
            told.append(problem)
    return told


def install(app: FastAPI) -> None:
    async def refused(request: Request, exc: Exception):
        assert isinstance(exc, StarletteHTTPException)
        who = getattr(request.state, "principal", None)
        if (who is not None and who.tenant is not None and exc.status_code == status.HTTP_422_UNPROCESSABLE_CONTENT
                and isinstance(exc.detail, list)):
            exc = HTTPException(exc.status_code, redact(exc.detail, who.tenant, request.app.state.config_state.config))
        return await http_exception_handler(request, exc)
    app.add_exception_handler(StarletteHTTPException, refused)
