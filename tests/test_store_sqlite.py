"""What the embedded store adds to the contract: its file, read-only looks,
bounded history, and the upgrade of stores written before revisions."""

import json
import sqlite3
import stat
import threading
import time

import pytest

from sdnvirt.emulation.lab import wait_for
from sdnvirt.store import Compacted, SQLiteStore, StoreError, keys, sqlite

# The first store's schema and writes, as sdnvirt wrote them before the
# store had revisions (sdnvirt/store.py at 8f4105f).
OLD_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    kind TEXT NOT NULL,
    key  TEXT NOT NULL,
    doc  TEXT NOT NULL,
    PRIMARY KEY (kind, key)
)
"""
WEB4 = {"spec": {"mac": "02:00:00:00:01:04", "ip": "10.1.0.14", "host": None, "memory": 512}}
OLD_DOCS = {("vm", "blue/web4"): WEB4, ("tenant", "red"): {"deleted": True},
            ("drain", "blue/web/web2:8080"): {"spec": {"drained": True}},
            ("migration", "0000000003"): {"id": 3, "vm": "web1", "outcome": "ok"},
            ("migration", "0000000012"): {"id": 12, "vm": "web2", "outcome": None}}


def old_store(path, docs=OLD_DOCS):
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(OLD_SCHEMA)
    conn.execute("BEGIN IMMEDIATE")
    for (kind, key), doc in docs.items():
        conn.execute("INSERT OR REPLACE INTO documents (kind, key, doc) VALUES (?, ?, ?)",
                     (kind, key, json.dumps(doc, sort_keys=True)))
    conn.execute("COMMIT")
    conn.close()


UPGRADED = {"/sdnvirt/config/vm/blue/web4": WEB4, "/sdnvirt/config/tenant/red": {"deleted": True},
            "/sdnvirt/config/drain/blue/web/web2:8080": {"spec": {"drained": True}},
            "/sdnvirt/migrations/0000000003": {"id": 3, "vm": "web1", "outcome": "ok"},
            "/sdnvirt/migrations/0000000012": {"id": 12, "vm": "web2", "outcome": None},
            keys.MIGRATION_ID: 12}


def values(store):
    return {key: item.value for key, item in store.list("").items.items()}


def test_an_old_store_is_upgraded_on_open_and_loses_nothing(tmp_path):
    path = tmp_path / "sdnvirt.db"
    old_store(path)
    store = SQLiteStore(path)
    assert values(store) == UPGRADED
    assert keys.next_id(store, keys.MIGRATION_ID) == 13
    store.close()
    tables = {name for (name,) in sqlite3.connect(path).execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "documents" not in tables
    again = SQLiteStore(path)
    assert values(again) == {**UPGRADED, keys.MIGRATION_ID: 13}


def test_a_read_only_look_at_an_old_store_sees_it_upgraded_and_writes_nothing(tmp_path):
    path = tmp_path / "sdnvirt.db"
    old_store(path)
    before = path.read_bytes()
    store = SQLiteStore(path, readonly=True)
    assert values(store) == UPGRADED
    with pytest.raises(StoreError, match="read-only"):
        store.put("/x", 1)
    store.close()
    assert path.read_bytes() == before


def test_the_file_is_private_and_durable_and_read_only_looks_see_the_daemons_writes(tmp_path):
    path = tmp_path / "state" / "sdnvirt.db"
    store = SQLiteStore(path)
    store.put("/t/a", 1)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone() == ("wal",)
    look = SQLiteStore(path, readonly=True)
    store.put("/t/b", 2)
    assert values(look) == {"/t/a": 1, "/t/b": 2}
    with pytest.raises(StoreError, match="read-only"):
        look.delete("/t/a")
    with pytest.raises(StoreError):
        SQLiteStore(tmp_path / "absent.db", readonly=True)
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database\n")
    with pytest.raises(StoreError, match="not a database"):
        SQLiteStore(garbage)


def test_history_is_bounded_but_a_quiet_watch_keeps_up(tmp_path):
    store = SQLiteStore(tmp_path / "db", history=5, poll=0.01)
    start = store.revision()
    quiet = store.watch("/quiet/", start)
    seen: list = []
    threading.Thread(target=lambda: [seen.extend(batch) for batch in quiet], daemon=True).start()
    for n in range(10):
        store.put("/busy/a", n)
        # Each poll moves the watch on to the store's revision, none of it its own.
        assert wait_for(lambda: quiet._after == store.revision(), 5, 0.005)
    store.put("/quiet/a", "here")
    assert wait_for(lambda: [e.value for e in seen] == ["here"], 5, 0.005)
    quiet.cancel()
    with pytest.raises(Compacted):
        next(iter(store.watch("/busy/", start)))
    assert [e.value for e in next(iter(store.watch("/busy/", store.revision() - 5)))] == [6, 7, 8, 9]
    assert store._conn.execute("SELECT count(*) FROM changes").fetchone() == (5,)



def test_a_watch_far_behind_catches_up_in_batches_without_waiting_to_poll(tmp_path, monkeypatch):
    monkeypatch.setattr(sqlite, "_BATCH", 3)
    store = SQLiteStore(tmp_path / "db", poll=60)
    start = store.revision()
    for n in range(10):
        store.put("/busy/a", n)
    store.put("/quiet/a", "here")
    started = time.monotonic()
    assert [e.value for e in next(iter(store.watch("/quiet/", start)))] == ["here"]
    assert time.monotonic() - started < 5
    batches = iter(store.watch("/busy/", start))
    assert [[e.value for e in next(batches)] for _ in range(4)] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
