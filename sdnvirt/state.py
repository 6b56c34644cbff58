"""The effective config: the config file, as the daemon last read it, with
the API's changes laid over it (``overlay``); one change at a time.

Every change, whether a new file (SIGHUP, POST /v1/reload), an API call, or
an API change another process committed to the store (``follow``), is
validated as a whole config with the file's schema, persisted (API changes),
and only then handed to the controller (``apply``: the same model -> plan ->
reconcile path for all of them).

The store holds the overlay's entries (``store.keys``); what this state holds
is the store's as of ``revision``. Its own writes compare the overlay's
serial with the one it read, so a change made meanwhile by another writer is
never overwritten: the edit is run again on the fresh overlay instead.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from . import overlay
from .config import Config, ConfigError, load, parse
from .events import Events, Kind, Source
from .store import ABSENT, Compacted, Conflict, Delete, Event, Listing, Put, Store, StoreError, Watch, keys

LOG = logging.getLogger("sdnvirt.state")

# Times an API change is tried again on a fresh overlay after losing a race
# with another writer, before it is answered with a conflict.
ATTEMPTS = 3


class ConfigState:
    def __init__(self, path: str | Path, config: Config, store: Store, retry_after: float = 1.0,
                 events: Events | None = None):
        """``config``: the file as just read. Raises ConfigError if the API's
        stored changes no longer fit it. ``retry_after``: seconds ``follow``
        waits after the store failed before it watches again; ``events``
        hears of every config applied and every one refused."""
        self.path = str(path)
        self.store = store
        self.retry_after = retry_after
        self.events = events or Events()
        self.lock = threading.Lock()
        self.apply: Callable[[Config], None] = lambda config: None
        self.reloaded: Callable[[bool], None] = lambda ok: None    # told whether each reload worked
        self._stop = threading.Event()
        self._watching = threading.Lock()       # the watch being followed, and the one to cancel
        self._watch: Watch | None = None
        self.serial: tuple[int, int] | None = None      # (changes the overlay had, the revision of the last)
        self._read(store.list(keys.CONFIG))
        self._adopt(config)

    def _read(self, listing: Listing) -> None:
        entries: overlay.Entries = {}
        self.serial = None
        for key, item in listing.items.items():
            ref = keys.config_ref(key)
            if ref is None:
                self.serial = (item.value, item.revision)
            else:
                entries[ref] = item.value
        self.entries, self.revision = entries, listing.revision

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
            self._applied(config, Source.FILE)
            self.apply(config)
            self.reloaded(True)
            return config

    def change(self, edit: Callable[[overlay.Changes], None]) -> Config:
        """Run ``edit`` on the overlay; if the effective config it leads to is
        valid, persist the edits and apply the config, and return it. Raises
        ConfigError (nothing changed) when it is not, Conflict when other
        writers kept changing the overlay meanwhile; whatever ``edit`` raises
        aborts it."""
        with self.lock:
            for _ in range(ATTEMPTS):
                changes = overlay.Changes(self.base, self.entries)
                edit(changes)
                config = parse(changes.doc(), "the API's change")
                if not changes.changed:
                    return config
                count, revision = self.serial or (0, None)
                ops = [Delete(keys.config_key(*ref)) if entry is None else Put(keys.config_key(*ref), entry)
                       for ref, entry in changes.changed.items()]
                ops.append(Put(keys.CONFIG_SERIAL, count + 1, ABSENT if revision is None else revision))
                try:
                    revision = self.store.commit(ops)
                except Conflict:
                    self._read(self.store.list(keys.CONFIG))
                    self._adopt_overlay("a change another writer made meanwhile")
                    continue
                self.serial, self.revision = (count + 1, revision), revision
                self.entries, self.config = changes.entries, config
                self._applied(config, Source.API)
                self.apply(config)
                return config
            raise Conflict([keys.CONFIG_SERIAL])

    def _applied(self, config: Config, source: Source) -> None:
        # Published before the controller gets the config, so that every
        # reconcile planned with it comes after this event (planned_after).
        self.events.publish(Kind.CONFIG_APPLIED, source=source, tenants=len(config.tenants),
                            vms=sum(len(t.vms) for t in config.tenants.values()))

    def origin(self, kind: str, key: str) -> str:
        """Where the object's current version comes from: "api" or "file"."""
        return "api" if (kind, key) in self.entries else "file"

    # -- changes made by other writers ---------------------------------------------
    def follow(self) -> None:
        """Apply the changes other writers commit to the overlay, until ``stop()``;
        run in a thread of its own. Its own changes it has applied already."""
        while not self._stop.is_set():
            try:
                self._follow_watch()
            except Exception as err:        # one failed change must not end the following ones
                LOG.error("cannot follow the API's changes in the store, trying again in %.0f s: %s",
                          self.retry_after, err, exc_info=not isinstance(err, StoreError))
                self._stop.wait(self.retry_after)

    def _follow_watch(self) -> None:
        # Read while a change may be under way: a revision it passes meanwhile is skipped in _changed.
        with self._watching:
            if self._stop.is_set():
                return
            self._watch = watch = self.store.watch(keys.CONFIG, self.revision)
        try:
            for events in watch:
                self._changed(events)
        except Compacted as err:
            LOG.warning("%s; reading the API's changes again", err)
            with self.lock:
                self._read(self.store.list(keys.CONFIG))
                self._adopt_overlay("the API's changes, read again")

    def stop(self) -> None:
        """End ``follow``; never waits for a change being made (SIGTERM must not)."""
        self._stop.set()
        with self._watching:
            if self._watch is not None:
                self._watch.cancel()

    def _changed(self, events: list[Event]) -> None:
        with self.lock:
            fresh = [event for event in events if event.revision > self.revision]
            if not fresh:
                return      # its own changes, or read already after a conflict
            for event in fresh:
                ref = keys.config_ref(event.key)
                if ref is None:
                    self.serial = None if event.deleted else (event.value, event.revision)
                elif event.deleted:
                    self.entries.pop(ref, None)
                else:
                    self.entries[ref] = event.value
            self.revision = fresh[-1].revision
            self._adopt_overlay(f"a change made through another API (store revision {self.revision})")

    def _adopt_overlay(self, what: str) -> None:
        """The overlay is now the store's: apply the effective config it leads
        to, unless it is invalid (then the config in force stays, until a
        valid change replaces it)."""
        try:
            config = parse(overlay.effective(self.base, self.entries), what)
        except ConfigError as err:
            LOG.error("refused %s: the config would be invalid; still running on the previous config:\n%s",
                      what, err)
            self.reloaded(False)
            self.events.publish(Kind.CONFIG_RELOAD_FAILED, error=str(err))
            return
        if config != self.config:
            self.config = config
            self._applied(config, Source.STORE)
            self.apply(config)
        self.reloaded(True)
