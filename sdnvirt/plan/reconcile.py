"""Desired versus installed: the ordered changes that turn one into the other.

One keyed diff for flows, groups and meters (OVN's ``ofctrl``): a flow is
keyed by OpenFlow's strict match (table, priority, match), a group and a
meter by their ids.  The changes come in phases, and the sender puts a
barrier between phases on every switch and waits for all of them before the
next phase, so that

1. meters and groups exist before any flow that uses them;
2. every new or changed flow, on every switch, is in before
3. any old flow goes (make before break: a path that moves from one set of
   switches to another is whole at every moment);
4. groups and meters go once no flow uses them any more.

Pure: no switch, no os-ken.  ``controller.sender`` turns the changes into
messages.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from typing import Any, TypeVar

from .flows import Flow, Group, Meter

Entry = Flow | Group | Meter


class Verb(Enum):
    ADD = "add"
    MODIFY = "modify"      # in place: a flow keeps its counters
    DELETE = "delete"


class Phase(IntEnum):
    MAKE_REFERENCED = 0     # meters and groups, added or changed
    MAKE_FLOWS = 1
    BREAK_FLOWS = 2
    BREAK_REFERENCED = 3    # groups and meters no flow uses any more


@dataclass(frozen=True)
class Change:
    verb: Verb
    entry: Entry


@dataclass
class Tables:
    """What one switch holds (installed) or should hold (desired)."""

    flows: dict[tuple[Any, ...], Flow] = field(default_factory=dict)       # by Flow.key
    groups: dict[int, Group] = field(default_factory=dict)
    meters: dict[int, Meter] = field(default_factory=dict)

    @classmethod
    def of(cls, flows: Iterable[Flow] = (), groups: Mapping[int, Group] | None = None,
           meters: Mapping[int, Meter] | None = None) -> Tables:
        return cls({f.key: f for f in flows}, dict(groups or {}), dict(meters or {}))

    def apply(self, batch: Iterable[Change]) -> None:
        """What the switch holds once it has done ``batch``."""
        for change in batch:
            entry = change.entry
            store, key = self._slot(entry)
            if change.verb is Verb.DELETE:
                store.pop(key, None)
            else:
                store[key] = entry

    def _slot(self, entry: Entry) -> tuple[dict[Any, Any], Hashable]:
        if isinstance(entry, Flow):
            return self.flows, entry.key
        if isinstance(entry, Group):
            return self.groups, entry.group_id
        return self.meters, entry.meter_id

    def __len__(self) -> int:
        return len(self.flows) + len(self.groups) + len(self.meters)


@dataclass
class Batches:
    """One switch's changes, by phase; empty phases are left out."""

    phases: dict[Phase, list[Change]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.phases)

    def __len__(self) -> int:
        return sum(len(b) for b in self.phases.values())

    def entries(self, verb: Verb, kind: type = Flow) -> list[Entry]:
        """The entries of ``kind`` (Flow, Group, Meter) that the changes ``verb``."""
        return [c.entry for batch in self.phases.values() for c in batch
                if c.verb is verb and isinstance(c.entry, kind)]

    def count(self, kind: type) -> dict[Verb, int]:
        """How many changes of each verb touch entries of ``kind`` (Flow, Group, Meter)."""
        out = dict.fromkeys(Verb, 0)
        for batch in self.phases.values():
            for change in batch:
                if isinstance(change.entry, kind):
                    out[change.verb] += 1
        return out


K = TypeVar("K", tuple[Any, ...], int)    # a flow's strict key, a group's or meter's id
V = TypeVar("V", Flow, Group, Meter)


def _keyed(want: Mapping[K, V], have: Mapping[K, V]) -> tuple[list[V], list[V], list[V]]:
    """(added, modified, deleted) entries, each in key order so that a switch
    always gets the same messages in the same order for the same change."""
    add: list[V] = []
    modify: list[V] = []
    for key in sorted(want):
        new, old = want[key], have.get(key)
        if old is None or (isinstance(new, Flow) and isinstance(old, Flow) and old.cookie != new.cookie):
            # OpenFlow 1.3 cannot change a flow's cookie in place: ADD
            # replaces the flow with the same strict match.
            add.append(new)
        elif old != new:
            modify.append(new)
    delete = [have[key] for key in sorted(have) if key not in want]
    return add, modify, delete


def reconcile(desired: Tables, installed: Tables) -> Batches:
    """The changes, by phase, that make a switch holding ``installed`` hold ``desired``."""
    flows = _keyed(desired.flows, installed.flows)
    groups = _keyed(desired.groups, installed.groups)
    meters = _keyed(desired.meters, installed.meters)
    out = Batches()
    phases: list[tuple[Phase, list[tuple[Verb, list[Flow] | list[Group] | list[Meter]]]]] = [
            (Phase.MAKE_REFERENCED, [(Verb.ADD, meters[0]), (Verb.MODIFY, meters[1]),
                                     (Verb.ADD, groups[0]), (Verb.MODIFY, groups[1])]),
            (Phase.MAKE_FLOWS, [(Verb.ADD, flows[0]), (Verb.MODIFY, flows[1])]),
            (Phase.BREAK_FLOWS, [(Verb.DELETE, flows[2])]),
            (Phase.BREAK_REFERENCED, [(Verb.DELETE, groups[2]), (Verb.DELETE, meters[2])])]
    for phase, parts in phases:
        batch = [Change(verb, entry) for verb, entries in parts for entry in entries]
        if batch:
            out.phases[phase] = batch
    return out
