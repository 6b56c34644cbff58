"""The store: JSON documents under hierarchical keys, with revisions,
compare-and-set and watches (``contract``); embedded on SQLite (``sqlite``),
shared by several controllers on etcd (``etcd``)."""

from .contract import (
    ABSENT,
    Compacted,
    Conflict,
    Delete,
    Event,
    Expect,
    Item,
    LeasedStore,
    LeaseExpired,
    Listing,
    Op,
    Put,
    Store,
    StoreError,
    Unconfirmed,
    Watch,
)
from .etcd import EtcdStore
from .etcd_http import Observe
from .sqlite import SQLiteStore

__all__ = ["ABSENT", "Compacted", "Conflict", "Delete", "EtcdStore", "Event", "Expect", "Item", "LeaseExpired",
           "LeasedStore", "Listing", "Observe", "Op", "Put", "SQLiteStore", "Store", "StoreError", "Unconfirmed",
           "Watch"]
