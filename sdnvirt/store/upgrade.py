"""The first store's layout, ``documents(kind, key, doc)``, as keys of today's.

Stores written before revisions existed are upgraded when first opened, so
an upgrade loses neither the API's changes nor the migration records, and
never hands out a migration id again.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from . import keys

OVERLAY_KINDS = ("tenant", "vm", "service", "drain")


def documents(conn: sqlite3.Connection) -> dict[str, Any]:
    """Every document of the old table under its new key, and the id counter its migration records imply."""
    found: dict[str, Any] = {}
    migrations = [0]
    for kind, key, doc in conn.execute("SELECT kind, key, doc FROM documents ORDER BY kind, key"):
        if kind == "migration":
            migrations.append(int(key))
            found[keys.migration_key(int(key))] = json.loads(doc)
        elif kind in OVERLAY_KINDS:
            found[keys.config_key(kind, key)] = json.loads(doc)
        else:
            raise sqlite3.DatabaseError(f"cannot upgrade: documents of an unknown kind {kind!r}")
    if max(migrations):
        found[keys.MIGRATION_ID] = max(migrations)
    return found
