"""A backend's health: rise/fall thresholds over probe results, like HAProxy's.

A backend starts up (a restarted controller must not pull healthy backends
out of service while its first probes are in flight) and goes down after
``fall`` consecutive failures, or at once when its port or switch goes down;
it comes back after ``rise`` consecutive successes.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Health:
    rise: int
    fall: int
    up: bool = True
    streak: int = 0            # consecutive results against the current state
    last_latency: float | None = None
    last_reason: str = "not probed yet"
    results: dict[str, int] = field(default_factory=lambda: {"success": 0, "failure": 0})

    def record(self, ok: bool, reason: str, latency: float | None = None) -> bool:
        """Count one probe result; True if the backend changed state."""
        self.results["success" if ok else "failure"] += 1
        self.last_reason = reason
        if ok:
            self.last_latency = latency
        if ok == self.up:
            self.streak = 0
            return False
        self.streak += 1
        if self.streak >= (self.rise if ok else self.fall):
            self.up, self.streak = ok, 0
            return True
        return False

    def told(self, up: bool, reason: str) -> bool:
        """Up or down as another prober found it; True if that changed the state."""
        self.last_reason = reason
        changed, self.up, self.streak = self.up != up, up, 0
        return changed

    def force_down(self, reason: str) -> bool:
        """Down now, without waiting for probes (its port or switch went away)."""
        self.last_reason = reason
        changed, self.up, self.streak = self.up, False, 0
        return changed
