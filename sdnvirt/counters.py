"""Running totals of counters the switches keep, per owner (a VM, a backend).

A switch counts per source (a port, a flow), and a source's
counter starts again from zero when the source is re-created, while its owner
changes when a VM moves to another port.  So each reading adds only what its
source counted since the previous reading, to the source's owner of the
moment: totals never go back and never take another owner's traffic.
"""

from __future__ import annotations

from collections.abc import Hashable


class Totals:
    def __init__(self, width: int):
        """``width``: how many counters each source reports (e.g. packets and bytes)."""
        self.width = width
        self.last: dict[Hashable, tuple[int, ...]] = {}
        self.totals: dict[Hashable, list[int]] = {}

    def add(self, source: Hashable, owner: Hashable | None, values: tuple[int, ...]) -> None:
        """One reading of ``source``; ``owner`` None counts it for nobody (a free port)."""
        last = self.last.get(source, (0,) * self.width)
        self.last[source] = values
        if owner is None:
            return
        # A counter that went back was reset with its source: all it holds is new.
        delta = [v - seen if v >= seen else v for v, seen in zip(values, last, strict=True)]
        total = self.totals.setdefault(owner, [0] * self.width)
        for i, d in enumerate(delta):
            total[i] += d

    def get(self, owner: Hashable) -> tuple[int, ...]:
        return tuple(self.totals.get(owner, (0,) * self.width))
