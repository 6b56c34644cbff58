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

import functools
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from typing import Any, TypeVar

from .encap import Wires
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


@dataclass(frozen=True, slots=True)
class Change:
    verb: Verb
    entry: Entry
    # Within a phase, every switch gets the changes of one rank before any
    # gets the next (see ``reconcile``'s ``rank``).
    rank: int = 0


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
class Keys:
    """Which entries of a switch's tables may differ: flows by key, groups and meters by id."""

    flows: set[tuple[Any, ...]] = field(default_factory=set)
    groups: set[int] = field(default_factory=set)
    meters: set[int] = field(default_factory=set)


@dataclass
class Batches:
    """One switch's changes, by phase; empty phases are left out."""

    phases: dict[Phase, list[Change]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.phases)

    def __len__(self) -> int:
        return sum(len(b) for b in self.phases.values())

    def steps(self) -> dict[tuple[Phase, int], list[Change]]:
        """The changes by (phase, rank), in the order they are sent."""
        out: dict[tuple[Phase, int], list[Change]] = {}
        for phase, batch in sorted(self.phases.items()):
            for change in sorted(batch, key=lambda c: c.rank):
                out.setdefault((phase, change.rank), []).append(change)
        return out

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


# For a flow added or changed: what it becomes first (None: nothing), and whether the rest waits.
Stage = Callable[[Flow | None, Flow], tuple[Flow | None, bool]]
K = TypeVar("K", tuple[Any, ...], int)    # a flow's strict key, a group's or meter's id
V = TypeVar("V", Flow, Group, Meter)


def _keyed(want: Mapping[K, V], have: Mapping[K, V], only: Iterable[K] | None = None
           ) -> tuple[list[V], list[V], list[V]]:
    """(added, modified, deleted) entries, each in key order so that a switch
    always gets the same messages in the same order for the same change;
    ``only``: the keys that may differ, the others are not looked at."""
    add: list[V] = []
    modify: list[V] = []
    delete: list[V] = []
    for key in sorted(want.keys() | have.keys() if only is None else only, key=_order):
        new, old = want.get(key), have.get(key)
        if new is None:
            if old is not None:
                delete.append(old)
        elif old is None or (isinstance(new, Flow) and isinstance(old, Flow) and old.cookie != new.cookie):
            # OpenFlow 1.3 cannot change a flow's cookie in place: ADD
            # replaces the flow with the same strict match.
            add.append(new)
        elif old != new:
            modify.append(new)
    return add, modify, delete


def _order(key: Any) -> Any:
    """A key as it sorts: a field's masked value (a tuple) after its exact ones,
    which Python would not compare with each other."""
    if isinstance(key, int):
        return key
    table, priority, match = key
    return (table, priority, tuple((name, isinstance(v, tuple), v) for name, v in match))


def reconcile(desired: Tables, installed: Tables, rank: Callable[[Flow], int] | None = None,
              only: Keys | None = None, stage: Stage | None = None) -> Batches:
    """The changes, by phase, that make a switch holding ``installed`` hold ``desired``.

    ``rank``: for a flow that is added or changed, how far the switch is from
    where the flow sends its packets (0: delivered here).  Unicast paths that
    move are then rewritten from their new end backwards, every switch of one
    rank before any of the next, so that a packet never meets a switch that
    sends it back toward one already rewritten: no loop, even for a moment.

    ``only``: the entries that may differ (``engine.Engine.take_changes``);
    None: any may.

    ``stage``: for a flow added or changed, what to change it to first (None:
    nothing) and whether it must wait for every switch's first steps: a flood
    leaves the ports it gives up before any takes new ones (``Wires.staged``)."""
    flows = _keyed(desired.flows, installed.flows, None if only is None else only.flows)
    groups = _keyed(desired.groups, installed.groups, None if only is None else only.groups)
    meters = _keyed(desired.meters, installed.meters, None if only is None else only.meters)
    out = Batches()
    phases: list[tuple[Phase, list[tuple[Verb, list[Flow] | list[Group] | list[Meter]]]]] = [
            (Phase.MAKE_REFERENCED, [(Verb.ADD, meters[0]), (Verb.MODIFY, meters[1]),
                                     (Verb.ADD, groups[0]), (Verb.MODIFY, groups[1])]),
            (Phase.MAKE_FLOWS, [(Verb.ADD, flows[0]), (Verb.MODIFY, flows[1])]),
            (Phase.BREAK_FLOWS, [(Verb.DELETE, flows[2])]),
            (Phase.BREAK_REFERENCED, [(Verb.DELETE, groups[2]), (Verb.DELETE, meters[2])])]
    for phase, parts in phases:
        batch = [Change(verb, entry, rank(entry) if rank and isinstance(entry, Flow) and phase is Phase.MAKE_FLOWS
                        else 0)
                 for verb, entries in parts for entry in entries]
        if stage is not None and phase is Phase.MAKE_FLOWS:
            batch = [step for change in batch for step in _staged(change, installed, stage)]
        if batch:
            out.phases[phase] = batch
    return out


def _staged(change: Change, installed: Tables, stage: Stage) -> list[Change]:
    if not isinstance(change.entry, Flow):
        return [change]
    first, later = stage(installed.flows.get(change.entry.key), change.entry)
    last = Change(change.verb, change.entry, max(1, change.rank)) if later else change
    return [Change(Verb.MODIFY, first, 0), last] if first is not None else [last]


def path_ranks(desired: Mapping[int, Tables], wires: Wires) -> Callable[[int], Callable[[Flow], int]]:
    """``rank`` for ``reconcile``, per switch: how many switches a flow's
    packets still cross, following the desired flows with the same key on
    the switch its one output reaches, by a fabric link or a tunnel (0: they
    leave the fabric here, or the flow floods).  A flow that hands its packet
    to table ROUTE counts one more than the route it takes (``Wires.routed``),
    so that a frame's new way is in place before the flows that send it there."""
    memo: defaultdict[int, dict[tuple[Any, ...], int]] = defaultdict(dict)    # per switch: a million flows

    def rank(dpid: int, flow: Flow, seen: frozenset[int]) -> int:
        known = memo[dpid]
        depth = known.get(flow.key)
        if depth is None:
            depth = 0
            tables = desired.get(dpid)
            route = wires.routed(flow.instructions)
            via = tables.flows.get(route) if route is not None and tables is not None else None
            if via is not None:
                depth = 1 + rank(dpid, via, seen)
            hops = wires.beyond(dpid, (a for inst in flow.instructions if inst[0] == "apply" for a in inst[1]))
            # Only a path (one way on): a tree is reached from both of
            # its ends, so no order by distance keeps it whole.
            if len(hops) == 1 and hops[0] not in seen:
                after_tables = desired.get(hops[0])
                after = after_tables.flows.get(flow.key) if after_tables is not None else None
                if after is not None:
                    depth = 1 + rank(hops[0], after, seen | {dpid})
            known[flow.key] = depth
        return depth

    return lambda dpid: lambda flow: rank(dpid, flow, frozenset())


def reconcile_fabric(desired: Mapping[int, Tables], installed: Mapping[int, Tables],
                     wires: Wires, only: Mapping[int, Keys | None] | None = None) -> dict[int, Batches]:
    """``reconcile`` for every switch of ``installed`` that needs a change, paths ranked;
    ``only``: per switch, the entries that may differ (None or missing: any)."""
    ranks = path_ranks(desired, wires)
    only = only or {}
    empty = Tables()
    out = {dpid: reconcile(desired.get(dpid, empty), have, ranks(dpid), only.get(dpid),
                           functools.partial(wires.staged, dpid))
           for dpid, have in installed.items()}
    return {dpid: batches for dpid, batches in out.items() if batches}
