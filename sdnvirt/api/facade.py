"""What the API needs from the running controller, and nothing more."""

from __future__ import annotations

from typing import Protocol


class Controller(Protocol):
    """Implemented by ``sdnvirt.controller.view.View``; every method is thread-safe
    (it runs on the controller's loop and waits for the answer)."""

    def snapshot(self) -> dict:
        """Switches, VMs and where they are, services with each backend's health
        and counters: ``status.snapshot`` of the live model."""

    def vms(self, tenant: str | None = None) -> list[dict]:
        """The VMs (of ``tenant``, or all) and where they are: ``status.vms``."""

    def services(self, tenant: str | None = None, service: str | None = None) -> list[dict]:
        """The services (of ``tenant``, or all; ``service``: that one) with each backend's health
        and counters: ``status.services``."""

    def topology(self) -> dict:
        """Switches with their ports, confirmed links, and where each VM is:
        ``status.topology`` of the live fabric."""

    def tables(self) -> dict:
        """What each connected switch holds (flows, groups, meters as JSON specs),
        the links, the tenants and where each VM is: ``status.tables``."""

    def migrate(self, vm: str, target: str, mode: str) -> dict:
        """Accept a migration and return its record (``Migration.as_dict``);
        raises ``sdnvirt.migration.Refused`` saying why, having changed nothing."""

    def migration_records(self) -> list[dict]:
        """Every migration's record, oldest first."""

    def migration_record(self, mid: int) -> dict | None:
        """One migration's record, None if there is no such migration."""

    def migration_event(self, mid: int, event: str, **fields) -> dict:
        """A step the hypervisor agent reports (``sdnvirt.controller.migrations.EVENTS``);
        KeyError for an unknown migration, ValueError for an event that does not fit it."""
