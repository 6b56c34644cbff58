"""Persistent state: JSON documents by kind and key, changed in transactions.

Deliberately small (get, put, delete, list inside a transaction) so that the
embedded SQLite store can be replaced by a shared one (etcd) for several
controllers without touching its users.  A transaction is committed, and on
disk, when its ``with`` block ends without an exception: callers answer
"done" only after that.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    kind TEXT NOT NULL,
    key  TEXT NOT NULL,
    doc  TEXT NOT NULL,
    PRIMARY KEY (kind, key)
)
"""


class Transaction:
    def __init__(self, conn: sqlite3.Connection):
        self._conn = conn

    def get(self, kind: str, key: str) -> Any | None:
        row = self._conn.execute("SELECT doc FROM documents WHERE kind = ? AND key = ?", (kind, key)).fetchone()
        return None if row is None else json.loads(row[0])

    def put(self, kind: str, key: str, doc: Any) -> None:
        self._conn.execute("INSERT OR REPLACE INTO documents (kind, key, doc) VALUES (?, ?, ?)",
                           (kind, key, json.dumps(doc, sort_keys=True)))

    def delete(self, kind: str, key: str) -> None:
        self._conn.execute("DELETE FROM documents WHERE kind = ? AND key = ?", (kind, key))

    def list(self, kind: str) -> dict[str, Any]:
        rows = self._conn.execute("SELECT key, doc FROM documents WHERE kind = ? ORDER BY key", (kind,))
        return {key: json.loads(doc) for key, doc in rows}


class Store:
    """One SQLite database; one connection shared by the daemon's threads under a lock."""

    def __init__(self, path: str | Path, readonly: bool = False):
        """``readonly``: an existing store, only read (sqlite3.Error if it is not
        one); for a look from outside the daemon, which may be running."""
        self.path = Path(path)
        self._lock = threading.Lock()
        self._begin = "BEGIN" if readonly else "BEGIN IMMEDIATE"
        # isolation_level=None: transactions are begun and ended here, explicitly.
        if readonly:
            self._conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True,
                                         isolation_level=None, check_same_thread=False)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Tenants' addresses are nobody else's business: 0600 (SQLite gives its
        # -wal and -shm files the database's mode).
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        # WAL: readers never wait for a writer; synchronous=FULL: a committed
        # change survives a power cut, not only a killed process.
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute(_SCHEMA)

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        with self._lock:
            self._conn.execute(self._begin)
            try:
                yield Transaction(self._conn)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._conn.close()
