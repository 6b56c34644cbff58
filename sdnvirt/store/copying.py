"""``sdnvirt store copy``: an embedded deployment's state into a cluster's etcd,
or back, with nothing lost and nothing overwritten."""

from __future__ import annotations

from .contract import ABSENT, Put, Store
from .etcd import EtcdStore
from .sqlite import SQLiteStore

ROOT = "/sdnvirt/"
# etcd refuses a transaction of more than 128 operations (--max-txn-ops).
_CHUNK = 100


def open_spec(spec: str, *, source: bool) -> Store:
    """``sqlite:PATH`` or ``etcd:URL[,URL...]``; ValueError for anything else.
    A source SQLite file is opened read-only, and must exist."""
    kind, _, where = spec.partition(":")
    if kind == "sqlite" and where:
        return SQLiteStore(where, readonly=source)
    if kind == "etcd" and where:
        return EtcdStore(where.split(","))
    raise ValueError(f"a store is sqlite:PATH or etcd:URL[,URL...], not {spec!r}")


def copy(source: Store, target: Store) -> int:
    """Every key of sdnvirt's from ``source`` into ``target``, which must hold
    none yet (ValueError); how many were copied. Each key is written only if
    still absent, so a writer that starts meanwhile makes it fail (Conflict)
    instead of losing its change or ours."""
    present = target.list(ROOT).items
    if present:
        raise ValueError(f"{target.name} holds sdnvirt's state already ({len(present)} keys): "
                         f"copy only into an empty store")
    items = source.list(ROOT).items
    puts = [Put(key, item.value, ABSENT) for key, item in sorted(items.items())]
    for start in range(0, len(puts), _CHUNK):
        target.commit(puts[start:start + _CHUNK])
    copied = {key: item.value for key, item in target.list(ROOT).items.items()}
    if copied != {key: item.value for key, item in items.items()}:
        raise ValueError(f"{target.name} does not hold what was copied: another writer changed it meanwhile")
    return len(puts)
