"""The embedded store: the contract on one SQLite file, which several
processes may open at once (the daemon, ``sdnvirt controller --check-config``,
a second daemon in tests).

Tables: ``kv`` (each key's value, create and mod revision), ``changes``
(every put and delete by revision: what watches read; the oldest are
compacted away) and ``meta`` (the store's revision and the compaction
point). A write is one ``BEGIN IMMEDIATE`` transaction, so the compares,
the revision bump and the writes are atomic across processes too.

Watches poll ``changes`` every ``poll`` seconds, which is how they see
another process's writes (SQLite tells no one); this process's own writes
wake them at once.
"""

from __future__ import annotations

import builtins
import json
import os
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from . import upgrade
from .contract import ABSENT, Compacted, Conflict, Delete, Event, Expect, Item, Listing, Op, Put, StoreError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
INSERT OR IGNORE INTO meta VALUES ('revision', 1), ('compacted', 0);
CREATE TABLE IF NOT EXISTS kv (
    key      TEXT PRIMARY KEY,
    value    TEXT NOT NULL,
    created  INTEGER NOT NULL,
    revision INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS changes (
    revision INTEGER NOT NULL,
    key      TEXT NOT NULL,
    value    TEXT,                      -- NULL: deleted
    PRIMARY KEY (revision, key)
) WITHOUT ROWID;
"""

# Revisions per watch batch: a watcher far behind catches up in bounded steps.
_BATCH = 1000


class SQLiteStore:
    def __init__(self, path: str | Path, *, readonly: bool = False, history: int = 10_000, poll: float = 0.2):
        """``readonly``: an existing store, only read, for a look from outside
        the daemon, which may be running. ``history``: how many revisions of
        changes watches can ask for. ``poll``: how often a watch looks for
        other processes' writes, in seconds. Raises StoreError if the file
        is not a store it can open."""
        self.path = Path(path)
        self.name = str(self.path)
        self.readonly = readonly
        self.history, self.poll = history, poll
        # One connection, shared by the daemon's threads; the condition wakes
        # watches when this process commits.
        self._lock = threading.Lock()
        self._committed = threading.Condition(self._lock)
        self._commits = 0
        try:
            self._conn = self._open_readonly() if readonly else self._open()
        except sqlite3.Error as err:
            raise StoreError(f"{self.name}: {err}") from None

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Tenants' addresses are nobody else's business: 0600 (SQLite gives its
        # -wal and -shm files the database's mode).
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        # isolation_level=None: transactions are begun and ended here, explicitly.
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        # WAL: readers, in this process or another, never wait for a writer;
        # synchronous=FULL: a committed change survives a power cut, not only
        # a killed process.
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("BEGIN IMMEDIATE")
        try:
            self._create(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return conn

    def _open_readonly(self) -> sqlite3.Connection:
        conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None,
                               check_same_thread=False)
        if "kv" in _tables(conn):
            return conn
        # A store of the old layout is read as the daemon would upgrade it,
        # in a copy in memory: a read-only look never writes.
        copy = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        conn.backup(copy)
        conn.close()
        self._create(copy)
        return copy

    def _create(self, conn: sqlite3.Connection) -> None:
        old = "documents" in _tables(conn)
        for statement in _SCHEMA.split(";"):
            conn.execute(statement)
        if old:
            self._write(conn, [Put(key, value) for key, value in upgrade.documents(conn).items()])
            conn.execute("DROP TABLE documents")

    # -- reads -------------------------------------------------------------------
    @contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        """The connection inside one read transaction: every query sees the same revision."""
        with self._lock:
            try:
                self._conn.execute("BEGIN")
                try:
                    yield self._conn
                finally:
                    self._conn.execute("COMMIT")
            except sqlite3.Error as err:
                raise StoreError(f"{self.name}: {err}") from None

    def get(self, key: str) -> Item | None:
        with self._snapshot() as conn:
            row = conn.execute("SELECT value, revision, created FROM kv WHERE key = ?", (key,)).fetchone()
        return None if row is None else Item(json.loads(row[0]), row[1], row[2])

    def list(self, prefix: str) -> Listing:
        where, args = _under(prefix)
        with self._snapshot() as conn:
            revision = _meta(conn, "revision")
            rows = conn.execute(f"SELECT key, value, revision, created FROM kv WHERE {where} ORDER BY key", args)
            items = {key: Item(json.loads(value), rev, created) for key, value, rev, created in rows}
        return Listing(items, revision)

    def revision(self) -> int:
        with self._snapshot() as conn:
            return _meta(conn, "revision")

    # -- writes ------------------------------------------------------------------
    def put(self, key: str, value: Any, *, expect: Expect = None) -> int:
        return self.commit([Put(key, value, expect)])

    def delete(self, key: str, *, expect: Expect = None) -> int:
        return self.commit([Delete(key, expect)])

    def commit(self, ops: Sequence[Op], compares: Mapping[str, Expect] | None = None) -> int:
        keys = [op.key for op in ops]
        if len(set(keys)) != len(keys):
            raise ValueError(f"a key is written twice in one transaction: {sorted(keys)}")
        checks = [*(compares or {}).items(), *((op.key, op.expect) for op in ops if op.expect is not None)]
        with self._writing() as conn:
            failed = [key for key, expect in checks if not _holds(conn, key, expect)]
            if failed:
                raise Conflict(failed)
            return self._write(conn, ops)

    @contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """The connection inside one write transaction, committed if the body returns."""
        if self.readonly:
            raise StoreError(f"{self.name} is open read-only")
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self._conn
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
                self._conn.execute("COMMIT")
            except sqlite3.Error as err:
                raise StoreError(f"{self.name}: {err}") from None
            self._commits += 1
            self._committed.notify_all()

    def _write(self, conn: sqlite3.Connection, ops: Sequence[Op]) -> int:
        """Apply ops as the next revision, inside the caller's write transaction; the revision after."""
        revision = _meta(conn, "revision")
        docs = [json.dumps(op.value, sort_keys=True) if isinstance(op, Put) else None for op in ops]
        changes = [(op, doc) for op, doc in zip(ops, docs, strict=True)
                   if isinstance(op, Put) or _current(conn, op.key) is not None]
        if not changes:
            return revision     # as etcd: a transaction that changes nothing takes no revision
        revision += 1
        for op, doc in changes:
            if doc is None:
                conn.execute("DELETE FROM kv WHERE key = ?", (op.key,))
            else:
                conn.execute("INSERT INTO kv VALUES (?1, ?2, ?3, ?3) ON CONFLICT (key) DO UPDATE "
                             "SET value = excluded.value, revision = excluded.revision", (op.key, doc, revision))
            conn.execute("INSERT INTO changes VALUES (?, ?, ?)", (revision, op.key, doc))
        conn.execute("UPDATE meta SET value = ? WHERE name = 'revision'", (revision,))
        if revision - self.history + 1 > _meta(conn, "compacted"):
            _compact(conn, revision - self.history + 1)
        return revision

    def compact(self, revision: int) -> None:
        with self._writing() as conn:
            current = _meta(conn, "revision")
            if revision > current:
                raise ValueError(f"cannot compact to revision {revision}: the store is at {current}")
            if revision > _meta(conn, "compacted"):
                _compact(conn, revision)

    # -- watches -----------------------------------------------------------------
    def watch(self, prefix: str, after: int) -> SQLiteWatch:
        return SQLiteWatch(self, prefix, after)

    def _changes(self, prefix: str, after: int) -> tuple[builtins.list[Event], int, bool]:
        """The changes under ``prefix`` after ``after`` (a bounded batch of whole
        revisions), the revision the watch has now seen everything up to, and
        whether there are later revisions to read."""
        where, args = _under(prefix)
        with self._snapshot() as conn:
            compacted = _meta(conn, "compacted")
            if after + 1 < compacted:
                raise Compacted(after, compacted)
            revision = _meta(conn, "revision")
            upto = max(min(revision, after + _BATCH), after)
            rows = conn.execute(f"SELECT revision, key, value FROM changes WHERE revision > ? AND revision <= ? "
                                f"AND {where} ORDER BY revision, key", (after, upto, *args)).fetchall()
        events = [Event(key, None if doc is None else json.loads(doc), rev, doc is None) for rev, key, doc in rows]
        return events, upto, upto < revision

    def _wait(self, watch: SQLiteWatch, commits: int) -> None:
        """Until this process commits, the watch is cancelled, or it is time to poll again."""
        with self._committed:
            self._committed.wait_for(lambda: watch.cancelled or self._commits != commits, self.poll)

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class SQLiteWatch:
    def __init__(self, store: SQLiteStore, prefix: str, after: int):
        self._store, self._prefix, self._after = store, prefix, after
        self.cancelled = False

    def __iter__(self) -> Iterator[list[Event]]:
        store = self._store
        while not self.cancelled:
            commits = store._commits
            events, self._after, behind = store._changes(self._prefix, self._after)
            if events:
                yield events
            elif not behind:
                store._wait(self, commits)

    def cancel(self) -> None:
        with self._store._committed:
            self.cancelled = True
            self._store._committed.notify_all()


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _meta(conn: sqlite3.Connection, name: str) -> int:
    return int(conn.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()[0])


def _current(conn: sqlite3.Connection, key: str) -> int | None:
    row = conn.execute("SELECT revision FROM kv WHERE key = ?", (key,)).fetchone()
    return None if row is None else row[0]


def _holds(conn: sqlite3.Connection, key: str, expect: Expect) -> bool:
    current = _current(conn, key)
    return current is None if expect is ABSENT else expect is None or current == expect


def _compact(conn: sqlite3.Connection, revision: int) -> None:
    conn.execute("DELETE FROM changes WHERE revision < ?", (revision,))
    conn.execute("UPDATE meta SET value = ? WHERE name = 'compacted'", (revision,))


def _under(prefix: str) -> tuple[str, tuple[str, ...]]:
    """A WHERE clause for the keys starting with ``prefix``, as a range the primary key's index serves."""
    if not prefix:
        return "1", ()
    return "key >= ? AND key < ?", (prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1))
