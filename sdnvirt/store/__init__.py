"""The store: JSON documents under hierarchical keys, with revisions,
compare-and-set and watches (``contract``); embedded on SQLite (``sqlite``)."""

from .contract import (
    ABSENT,
    Compacted,
    Conflict,
    Delete,
    Event,
    Expect,
    Item,
    LeasedStore,
    Listing,
    Op,
    Put,
    Store,
    StoreError,
    Watch,
)
from .sqlite import SQLiteStore

__all__ = ["ABSENT", "Compacted", "Conflict", "Delete", "Event", "Expect", "Item", "LeasedStore", "Listing", "Op",
           "Put", "SQLiteStore", "Store", "StoreError", "Watch"]
