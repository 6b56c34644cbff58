"""The effective config: the config file, as the daemon last read it, and
every change made through the API since; one change at a time.

Each change is validated as a whole config, persisted, then handed to the
controller (``apply``: the same model -> plan -> reconcile path as SIGHUP).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable

from .config import Config, load
from .store import Store


class ConfigState:
    def __init__(self, path: str | Path, config: Config, store: Store):
        self.path = str(path)
        self.store = store
        self.config = config
        self.lock = threading.Lock()
        self.apply: Callable[[Config], None] = lambda config: None

    def reload_file(self) -> Config:
        """Re-read the file and apply it; raises ConfigError (and changes nothing) if it is invalid."""
        with self.lock:
            self.config = load(self.path)
            self.apply(self.config)
            return self.config
