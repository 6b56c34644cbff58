"""The key space: where each kind of document lives, and ids handed out by compare-and-set.

=====================================  ===========================================
key                                    value
=====================================  ===========================================
``/sdnvirt/config/<kind>/<key>``       an overlay entry (``sdnvirt.overlay``): the
                                       API's change to one object of the config
``/sdnvirt/config/serial``             how many changes the overlay has had; every
                                       change compares and bumps it
``/sdnvirt/migrations/<id:010d>``      a migration's record
``/sdnvirt/ids/migration``             the last migration id handed out
``/sdnvirt/tokens/<id>``               a tenant token of the API: its tenant and a
                                       SHA-256 of its secret, never the secret
``/sdnvirt/audit/<id:016d>``           a change asked of the API: who, what, when,
                                       the answer's status
``/sdnvirt/ids/audit``                 the last audit record id handed out
=====================================  ===========================================

The effective config is validated as a whole, so two changes made at once
by two writers, each valid alone, could be invalid together (the same
address given twice): the serial makes them one after the other, where
comparing only the entries each one writes would not (and etcd caps how
many compares one transaction may hold).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .contract import ABSENT, Conflict, Op, Put, Store

CONFIG = "/sdnvirt/config/"
CONFIG_SERIAL = CONFIG + "serial"
MIGRATIONS = "/sdnvirt/migrations/"
MIGRATION_ID = "/sdnvirt/ids/migration"
TOKENS = "/sdnvirt/tokens/"
AUDIT = "/sdnvirt/audit/"
AUDIT_ID = "/sdnvirt/ids/audit"


def config_key(kind: str, key: str) -> str:
    return f"{CONFIG}{kind}/{key}"


def config_ref(key: str) -> tuple[str, str] | None:
    """(kind, key) of an overlay entry's store key; None for the serial."""
    kind, _, rest = key[len(CONFIG):].partition("/")
    return (kind, rest) if rest else None


def migration_key(mid: int) -> str:
    return f"{MIGRATIONS}{mid:010d}"


def token_key(tid: str) -> str:
    return f"{TOKENS}{tid}"


def audit_key(aid: int) -> str:
    return f"{AUDIT}{aid:016d}"


def next_id(store: Store, key: str, attempts: int = 100, ops: Callable[[int], Sequence[Op]] | None = None) -> int:
    """The next id of the counter at ``key``, never given to anyone else, even by another process;
    ``ops(id)``: writes that take the id, committed with it, all or none.

    A lost compare-and-set means another writer took an id meanwhile: try
    again with the one after it. ``attempts`` only bounds a store that keeps
    failing; each retry follows someone else's success."""
    for _ in range(attempts):
        item = store.get(key)
        mid = (item.value if item else 0) + 1
        try:
            store.commit([Put(key, mid, item.revision if item else ABSENT), *(ops(mid) if ops else ())])
            return mid
        except Conflict:
            continue
    raise Conflict([key])
