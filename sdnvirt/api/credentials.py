"""Who calls the API: the daemon's admin token, or a tenant token kept in the store.

A tenant token is ``ID.SECRET``. The store keeps, under the ID, its tenant
and a SHA-256 of SECRET: a copy of the store (a backup, an etcd member)
gives no token away, and the secret is shown once, when it is made. SECRET
is 256 random bits, so an unsalted fast hash is enough (a password needs a
slow one only because it is guessable). The ID names the token in lists,
in revocations and in the audit trail.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any

from ..store import ABSENT, Conflict, Store
from ..store.keys import TOKENS, token_key

ADMIN_ID = "admin"          # the audit trail's name for the daemon's own token


@dataclass(frozen=True)
class Principal:
    token: str              # the token's id, never the token
    tenant: str | None      # None: the admin, every tenant and the fabric

    @property
    def admin(self) -> bool:
        return self.tenant is None


ADMIN = Principal(ADMIN_ID, None)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def identify(presented: str, admin_token: str, store: Store) -> Principal | None:
    """The principal whose token was presented; None for no valid token."""
    if hmac.compare_digest(presented.encode(), admin_token.encode()):
        return ADMIN
    tid, dot, secret = presented.partition(".")
    if not dot or not tid.isalnum():
        return None
    item = store.get(token_key(tid))
    if item is None or not hmac.compare_digest(_digest(secret), item.value["sha256"]):
        return None
    return Principal(tid, item.value["tenant"])


def issue(store: Store, tenant: str, description: str = "") -> tuple[dict[str, Any], str]:
    """A new tenant token: its record (as listed) and the token itself, ID.SECRET."""
    secret = secrets.token_urlsafe(32)
    while True:
        tid = secrets.token_hex(6)
        record = {"id": tid, "tenant": tenant, "description": description, "created": time.time(),
                  "sha256": _digest(secret)}
        try:
            store.put(token_key(tid), record, expect=ABSENT)
        except Conflict:        # the id is taken (48 random bits: never in practice)
            continue
        return _public(record), f"{tid}.{secret}"


def listing(store: Store) -> list[dict[str, Any]]:
    """Every tenant token, oldest first, without its hash."""
    records = [item.value for item in store.list(TOKENS).items.values()]
    return [_public(r) for r in sorted(records, key=lambda r: (r["created"], r["id"]))]


def revoke(store: Store, tid: str) -> bool:
    """Whether there was such a token; from now on it is refused everywhere the store is read."""
    if not tid.isalnum() or store.get(token_key(tid)) is None:
        return False
    store.delete(token_key(tid))
    return True


def _public(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != "sha256"}
