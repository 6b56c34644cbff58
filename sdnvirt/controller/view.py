"""What the API and the metrics exporter see of the controller (``api.facade.Controller``).

They run on threads of their own: every call here runs on the controller's
loop and waits for its answer, so they never see the state half-changed.
"""

from __future__ import annotations

from typing import Any

from ..config import Config
from .core import Controller


class View:
    def __init__(self, ctl: Controller):
        self._ctl = ctl
        self._call = ctl.loop.call

    def reload(self, config: Config) -> None:
        self._call(self._ctl.reload, config)

    def snapshot(self) -> dict:
        return self._call(self._ctl.snapshot)

    def topology(self) -> dict:
        return self._call(self._ctl.topology)

    def tables(self) -> dict:
        return self._call(self._ctl.tables)

    def migrate(self, vm: str, target: str, mode: str) -> dict:
        return self._call(self._ctl.migrations.request, vm, target, mode)

    def migration_records(self) -> list[dict]:
        return self._call(self._ctl.migrations.records)

    def migration_record(self, mid: int) -> dict | None:
        return self._call(self._ctl.migrations.record, mid)

    def migration_event(self, mid: int, event: str, **fields: Any) -> dict:
        return self._call(lambda: self._ctl.migrations.event(mid, event, **fields))
