"""Holds a feature's contribution to its declaration and to the tables' specs.

A feature may write only the (table, priority) pairs it owns, with cookies of
its declared kinds, matching only the fields its table allows, going on only
to the tables its table may go to (by goto, by conntrack, or through a group's
buckets), metering only with its own meters; and add only its own meters.
And no two features may want different flows in the same place.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .feature import Contribution, Declaration
from .flows import Action, Flow
from .tables import TableSpec


class OutsideDeclaration(ValueError):
    """A feature wrote something its declaration does not allow."""


class Conflict(ValueError):
    """Two different flows for one place in a switch's table: a switch would hold only one."""


def distinct_keys(flows: Mapping[int, set[Flow]]) -> None:
    problems: list[str] = []
    for dpid, held in flows.items():
        by_key: dict[tuple[int, int, tuple[tuple[str, Any], ...]], list[Flow]] = {}
        for f in held:
            by_key.setdefault(f.key, []).append(f)
        problems += (f"switch {dpid:#x}: " + " and ".join(map(str, sorted(same)))
                     for same in by_key.values() if len(same) > 1)
    if problems:
        raise Conflict("flows with the same table, priority and match:\n  " + "\n  ".join(problems))


def check(decl: Declaration, out: Contribution, tables: Mapping[int, TableSpec]) -> None:
    kinds = {int(k) for k in decl.cookies}
    problems: list[str] = []
    for dpid, flows in out.flows.items():
        used_by: dict[int, TableSpec] = {}     # group id -> the table a flow of this switch uses it from
        for f in flows:
            problems += (f"switch {dpid:#x}: {why}: {f}" for why in _flow(decl, kinds, tables, f, used_by))
        for gid, group in out.groups.get(dpid, {}).items():
            spec = used_by.get(gid)
            if spec is None:
                problems.append(f"switch {dpid:#x}: group {gid} that no flow of the feature uses")
                continue
            problems += (f"switch {dpid:#x}: group {gid}: {why}"
                         for bucket in group.buckets for why in _actions(spec, bucket, used_by))
    for dpid, meters in out.meters.items():
        problems += (f"switch {dpid:#x}: meter {m} is not declared" for m in meters if m not in decl.meters)
    if problems:
        raise OutsideDeclaration(f"feature {decl.name!r} writes outside its declaration:\n  " + "\n  ".join(problems))


def _flow(decl: Declaration, kinds: set[int], tables: Mapping[int, TableSpec], f: Flow,
          used_by: dict[int, TableSpec]) -> list[str]:
    priorities = decl.owns.get(f.table)
    if priorities is None:
        return [f"table {f.table} is not the feature's"]
    problems = []
    if f.priority not in priorities:
        problems.append(f"priority {f.priority} in table {f.table} is not the feature's")
    if f.cookie >> 56 not in kinds:
        problems.append(f"cookie kind {f.cookie >> 56:#x} is not the feature's")
    spec = tables[f.table]
    problems += (f"table {f.table} matches no {name}" for name, _ in f.match if name not in spec.fields)
    for inst in f.instructions:
        if inst[0] == "goto" and inst[1] not in spec.goto:
            problems.append(f"table {f.table} does not go to table {inst[1]}")
        elif inst[0] == "meter" and inst[1] not in decl.meters:
            problems.append(f"meter {inst[1]} is not the feature's")
        elif inst[0] == "apply":
            problems += _actions(spec, inst[1], used_by)
    return problems


def _actions(spec: TableSpec, actions: tuple[Action, ...], used_by: dict[int, TableSpec]) -> list[str]:
    problems = []
    for action in actions:
        if action[0] == "ct" and action[3] is not None and action[3] not in spec.recirculate:
            problems.append(f"table {spec.table} does not recirculate to table {action[3]}")
        elif action[0] == "group":
            used_by[action[1]] = spec
    return problems
