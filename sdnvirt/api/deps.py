"""What a handler may ask for (``Annotated`` FastAPI dependencies)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ..events import Events
from ..state import ConfigState
from ..store import Store
from .credentials import Principal, identify
from .facade import Controller

_bearer = HTTPBearer(auto_error=False, description="the admin token in controller.api.token_file, "
                     "or a tenant token (`sdnvirt token create`)")


def _principal(request: Request,
               creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> Principal:
    if creds is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing 'Authorization: Bearer <token>' header",
                            headers={"WWW-Authenticate": "Bearer"})
    who = identify(creds.credentials, request.app.state.token, request.app.state.config_state.store)
    if who is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "wrong token, or a revoked one",
                            headers={"WWW-Authenticate": "Bearer"})
    # For the audit trail, which sees the request once it is answered.
    request.state.principal = who
    return who


def _controller(request: Request) -> Controller:
    return request.app.state.controller


def _config_state(request: Request) -> ConfigState:
    return request.app.state.config_state


def _events(request: Request) -> Events:
    return request.app.state.events


def _store(request: Request) -> Store:
    return request.app.state.config_state.store


PrincipalDep = Annotated[Principal, Depends(_principal)]
ControllerDep = Annotated[Controller, Depends(_controller)]
ConfigStateDep = Annotated[ConfigState, Depends(_config_state)]
StoreDep = Annotated[Store, Depends(_store)]
EventsDep = Annotated[Events, Depends(_events)]
