"""What the API and the metrics exporter see of the controller (``api.facade.Controller``).

They run on threads of their own: every call here runs on the controller's
loop and waits for its answer, so they never see the state half-changed.
"""

from __future__ import annotations

from typing import Any

from .. import status
from ..config import Config
from ..metrics import Snapshot, StateCollector
from .core import Controller
from .roles import Roles


class View:
    def __init__(self, ctl: Controller, roles: Roles | None = None):
        self._ctl, self._roles = ctl, roles
        self._call = ctl.loop.call
        ctl.metrics.registry.register(StateCollector(self._call, self._metrics_snapshot))

    def reload(self, config: Config) -> None:
        self._call(self._ctl.reload, config)

    def snapshot(self) -> dict:
        ctl = self._ctl
        cluster = self._roles.status if self._roles else lambda: None
        return self._call(lambda: {**status.snapshot(ctl.model, ctl.fabric, self._flow_counts(),
                                                     ctl.backend_counters()), "cluster": cluster()})

    def vms(self, tenant: str | None = None) -> list[dict]:
        ctl = self._ctl
        return self._call(lambda: status.vms(ctl.model, status.switch_names(ctl.fabric), tenant))

    def services(self, tenant: str | None = None, service: str | None = None) -> list[dict]:
        ctl = self._ctl

        def read() -> list[dict]:
            chosen = [svc for svc in ctl.model.services()
                      if tenant in (None, svc.tenant) and service in (None, svc.name)]
            return status.services(ctl.model, chosen, ctl.backend_counters(chosen))
        return self._call(read)

    def topology(self) -> dict:
        ctl = self._ctl
        return self._call(lambda: status.topology(ctl.model, ctl.fabric, self._flow_counts()))

    def tables(self) -> dict:
        ctl = self._ctl

        def read() -> dict:
            held = {dpid: s.tables() if s.ready else None for dpid, s in ctl.sessions.items()}
            return status.tables(ctl.model, ctl.fabric, held)
        return self._call(read)

    def migrate(self, vm: str, target: str, mode: str) -> dict:
        return self._call(self._ctl.migrations.request, vm, target, mode)

    def migration_records(self) -> list[dict]:
        return self._call(lambda: self._ctl.migrations.records(reread=True))

    def migration_record(self, mid: int) -> dict | None:
        return self._call(self._ctl.migrations.record, mid)

    def migration_event(self, mid: int, event: str, **fields: Any) -> dict:
        return self._call(lambda: self._ctl.migrations.event(mid, event, **fields))

    # -- on the loop -----------------------------------------------------------------
    def _flow_counts(self) -> dict[int, int]:
        return {dpid: len(s.installed_flows) for dpid, s in self._ctl.sessions.items()
                if s.installed_flows is not None}

    def _metrics_snapshot(self) -> Snapshot:
        ctl = self._ctl
        return Snapshot(ctl.model, ctl.fabric, ctl.counters.names, set(ctl.sessions),
                        {dpid: s.table_flows for dpid, s in ctl.sessions.items()},
                        ctl.backend_counters(), ctl.counters.vm_traffic, ctl.counters.spoofed,
                        ctl.counters.sg_dropped, ctl.migrations.records(), ctl.counters.tunnels)
