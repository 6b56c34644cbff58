"""What must change in a switch to turn its installed flows into the desired ones."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from .flows import Flow


@dataclass
class Changes:
    add: list[Flow] = field(default_factory=list)      # not installed, or owned by another cookie
    modify: list[Flow] = field(default_factory=list)   # same owner, other instructions: counters kept
    delete: list[Flow] = field(default_factory=list)   # installed, not desired

    def __bool__(self) -> bool:
        return bool(self.add or self.modify or self.delete)

    def __len__(self) -> int:
        return len(self.add) + len(self.modify) + len(self.delete)


def diff(desired: Iterable[Flow], installed: Iterable[Flow]) -> Changes:
    want = {f.key: f for f in desired}
    have = {f.key: f for f in installed}
    changes = Changes()
    for key, f in sorted(want.items()):
        old = have.get(key)
        if old is None or old.cookie != f.cookie:
            # OpenFlow 1.3 cannot change a flow's cookie in place.
            changes.add.append(f)
        elif old.instructions != f.instructions:
            changes.modify.append(f)
    changes.delete = [f for key, f in sorted(have.items()) if key not in want]
    return changes
