"""The store a daemon's settings name: the embedded SQLite file, or etcd when
the daemon is one of a cluster (``controller.cluster``)."""

from __future__ import annotations

from ..config import ControllerSettings
from .contract import Store
from .etcd import EtcdStore
from .etcd_http import Observe
from .sqlite import SQLiteStore


def open_store(settings: ControllerSettings, *, readonly: bool = False, observe: Observe | None = None) -> Store:
    """Raises StoreError (or OSError) naming what could not be opened. ``readonly``
    applies to SQLite only: an etcd store is read by whoever is allowed to;
    ``observe`` to etcd only (its requests, for the metrics)."""
    if settings.cluster is not None:
        return EtcdStore(settings.cluster.etcd, observe=observe)
    return SQLiteStore(settings.store_path, readonly=readonly)


def where(settings: ControllerSettings) -> str:
    """The store and the setting that names it, for an error message."""
    if settings.cluster is not None:
        return f"etcd at {', '.join(settings.cluster.etcd)} (controller.cluster.etcd)"
    return f"{settings.store_path} (controller.store.path)"


def exists(settings: ControllerSettings) -> bool:
    """Whether there is a store to look at without making one."""
    return settings.cluster is not None or settings.store_path.exists()
