"""The audit trail: every change asked of the API, by whom, and its answer.

Each call that may change something (POST, PUT, PATCH, DELETE) made with a
valid token is recorded in the store once it is answered, before the
client gets the answer: the token's id (never the token), its tenant, the
method and path, the status, the time. A refused call is recorded too: an
attempt is what an auditor looks for. A call without a valid token is not:
it has no one to name, and anyone could flood the trail with them. Nor
are the hypervisor agent's reports of a migration's steps (UNAUDITED): the
migration was audited when asked for, its steps are migration events, and
the agent's heartbeats, several a second, would push the operators'
changes out of the trail.

The store keeps the last ``controller.api.audit_kept`` records: each record
deletes the one that many before it, in its own transaction, so every
controller sharing the store keeps the same bound.
"""

from __future__ import annotations

import logging
import time
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..store import Delete, Put, Store, StoreError
from ..store.keys import AUDIT, AUDIT_ID, audit_key, next_id
from .credentials import Principal
from .deps import StoreDep

LOG = logging.getLogger("sdnvirt.api")
CHANGES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
UNAUDITED = frozenset({"report_event"})
MAX_LIMIT = 1000

router = APIRouter(tags=["access"])


class Record(BaseModel):
    id: int
    time: float             # wall-clock seconds, when answered
    token: str              # the token's id; "admin" for the admin token
    tenant: str | None      # the token's tenant; None for the admin
    method: str
    path: str
    status: int


def record(store: Store, kept: int, who: Principal, method: str, path: str, status: int) -> int:
    """The new record's id."""
    entry = {"time": time.time(), "token": who.token, "tenant": who.tenant, "method": method, "path": path,
             "status": status}

    def ops(aid: int):
        return [Put(audit_key(aid), {"id": aid, **entry}), *([Delete(audit_key(aid - kept))] if aid > kept else [])]
    return next_id(store, AUDIT_ID, ops=ops)


def prune(store: Store, kept: int) -> None:
    """Forget the records older than the last ``kept``: those a larger
    ``audit_kept`` of an earlier run left."""
    item = store.get(AUDIT_ID)
    if item is None or item.value <= kept:
        return
    for key in store.list(AUDIT).items:
        if int(key.removeprefix(AUDIT)) <= item.value - kept:
            store.delete(key)


def records(store: Store, after: int | None, limit: int) -> list[dict[str, Any]]:
    listing = [item.value for _, item in sorted(store.list(AUDIT).items.items())]
    if after is None:
        return listing[-limit:]
    return [r for r in listing if r["id"] > after][:limit]


class Middleware:
    """Records each change once answered (a pure ASGI middleware: the answer is
    held until its record is written, and reads are not touched)."""

    def __init__(self, app: ASGIApp, store: Store, kept: int):
        self.app, self.store, self.kept = app, store, kept

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in CHANGES:
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        held: list[Message] = []

        async def hold(message: Message) -> None:
            held.append(message)
        status = 500
        try:
            await self.app(scope, receive, hold)
            status = next(m["status"] for m in held if m["type"] == "http.response.start")
        finally:
            who = state.get("principal")
            route = scope.get("route")
            if who is not None and getattr(route, "name", None) not in UNAUDITED:
                try:
                    await run_in_threadpool(record, self.store, self.kept, who, scope["method"], scope["path"],
                                            status)
                except StoreError as err:
                    LOG.error("audit: cannot record %s %s by token %s: %s", scope["method"], scope["path"],
                              who.token, err)
        for message in held:
            await send(message)


@router.get("/audit", response_model=list[Record])
def list_audit(
        store: StoreDep,
        after: Annotated[int | None, Query(ge=0, description="the records after this id; "
                                                           "without it, the last ones")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="at most this many")] = 100):
    """The changes asked of the API, oldest first: which token, what, when, the answer's status."""
    return records(store, after, limit)
