"""What the API needs from the running controller, and nothing more."""

from __future__ import annotations

from typing import Protocol


class Controller(Protocol):
    """Implemented by the os-ken app; every method is thread-safe (takes the app's lock)."""

    def snapshot(self) -> dict:
        """Switches, VMs and where they are, services with each backend's health
        and counters: ``status.snapshot`` of the live model."""

    def topology(self) -> dict:
        """Switches with their ports, confirmed links, and where each VM is:
        ``status.topology`` of the live fabric."""
