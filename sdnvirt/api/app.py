"""The FastAPI application: every router under /v1, behind a bearer token and access.py's rule.

A new group of endpoints is a module with ``router = APIRouter(...)`` whose
paths are relative to /v1, added to ROUTERS below; access.py says how its
routes are opened to tenant tokens.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Depends, FastAPI

from .. import __version__
from ..events import Events, Handler
from ..state import ConfigState
from . import access, audit, errors, events, migrations, security_groups, services, system, tenants, tokens, topology
from .facade import Controller
from .schemas import Error

PREFIX = "/v1"
ROUTERS = [system.router, events.router, topology.router, tenants.router, services.router, security_groups.router,
           migrations.router, tokens.router, audit.router]


def create_app(controller: Controller, config_state: ConfigState, token: str, hub: Events,
               failed: Callable[[Handler], None]) -> FastAPI:
    """``hub``: the controller's events; ``failed`` counts a request that raised."""
    app = FastAPI(title="sdnvirt", version=__version__,
                  description="Tenants, VMs, load-balanced services and the fabric of an sdnvirt controller.",
                  openapi_url=None, docs_url=None, redoc_url=None,
                  dependencies=[Depends(access.authorize)],
                  # operationId = the handler's name (get_vm, drain...): stable names for client generators.
                  generate_unique_id_function=lambda route: route.name,
                  responses={400: {"model": Error, "description": "the body is not JSON"},
                             401: {"model": Error, "description": "no token, or the wrong one"},
                             403: {"model": Error, "description": "the operator's: a tenant token may not call it"},
                             # Replaces FastAPI's own 422 schema: errors.py answers every
                             # invalid request with key paths, like the config file's errors.
                             422: {"model": Error, "description": "invalid input, each key at fault named"}})
    app.state.controller = controller
    app.state.config_state = config_state
    app.state.token = token
    app.state.events = hub
    errors.install(app, failed)
    access.install(app)
    kept = config_state.config.controller.api.audit_kept
    audit.prune(config_state.store, kept)
    app.add_middleware(audit.Middleware, store=config_state.store, kept=kept)
    for router in ROUTERS:
        app.include_router(router, prefix=PREFIX)

    @app.get(f"{PREFIX}/openapi.json", include_in_schema=False)
    def openapi() -> dict:
        return app.openapi()
    return app
