"""The effective config: the config file, as the daemon last read it, with
the API's changes laid over it (``overlay``); one change at a time.

Every change, whether a new file (SIGHUP, POST /v1/reload) or an API call, is
validated as a whole config with the file's schema, persisted (API changes),
and only then handed to the controller (``apply``: the same model -> plan ->
reconcile path for both).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable

from . import overlay
from .config import Config, ConfigError, load, parse
from .events import Events, Kind, Source
from .store import Store


class ConfigState:
    def __init__(self, path: str | Path, config: Config, store: Store, events: Events | None = None):
        """``config``: the file as just read; ``events`` hears of every config
        applied and every reload refused. Raises ConfigError if the API's
        stored changes no longer fit it."""
        self.path = str(path)
        self.store = store
        self.events = events or Events()
        self.lock = threading.Lock()
        self.apply: Callable[[Config], None] = lambda config: None
        self.reloaded: Callable[[bool], None] = lambda ok: None    # told whether each reload worked
        with store.transaction() as txn:
            self.entries: overlay.Entries = {(kind, key): entry for kind in overlay.KINDS
                                             for key, entry in txn.list(kind).items()}
        self._adopt(config)

    def _adopt(self, file_config: Config) -> Config:
        base = file_config.model_dump(mode="json")
        config = parse(overlay.effective(base, self.entries), f"{self.path} with the API's changes")
        self.base, self.config = base, config
        return config

    def reload_file(self) -> Config:
        """Re-read the file and apply it under the API's changes; raises
        ConfigError (and changes nothing) if the result is invalid."""
        with self.lock:
            try:
                config = self._adopt(load(self.path))
            except ConfigError as err:
                self.reloaded(False)
                self.events.publish(Kind.CONFIG_RELOAD_FAILED, error=str(err))
                raise
            self.apply(config)
            self.reloaded(True)
            self._applied(config, Source.FILE)
            return config

    def change(self, edit: Callable[[overlay.Changes], None]) -> Config:
        """Run ``edit`` on the overlay; if the effective config it leads to is
        valid, persist the edits and apply the config, and return it. Raises
        ConfigError (nothing changed) when it is not; whatever ``edit`` raises
        aborts it."""
        with self.lock:
            changes = overlay.Changes(self.base, self.entries)
            edit(changes)
            config = parse(changes.doc(), "the API's change")
            with self.store.transaction() as txn:
                for (kind, key), entry in changes.changed.items():
                    if entry is None:
                        txn.delete(kind, key)
                    else:
                        txn.put(kind, key, entry)
            self.entries, self.config = changes.entries, config
            self.apply(config)
            self._applied(config, Source.API)
            return config

    def _applied(self, config: Config, source: Source) -> None:
        self.events.publish(Kind.CONFIG_APPLIED, source=source, tenants=len(config.tenants),
                            vms=sum(len(t.vms) for t in config.tenants.values()))

    def origin(self, kind: str, key: str) -> str:
        """Where the object's current version comes from: "api" or "file"."""
        return "api" if (kind, key) in self.entries else "file"
