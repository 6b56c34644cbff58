"""Flow, group and meter specs as JSON documents, and back (the API's /switches/tables, ``sdnvirt trace``).

A spec's tuples become JSON arrays and come back as tuples; a match is an
object of fields; a cookie is a hex string, which no JSON reader rounds.
"""

from __future__ import annotations

from typing import Any

from .flows import Flow, Group, Meter
from .reconcile import Tables


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def flow_doc(f: Flow) -> dict[str, Any]:
    return {"table": f.table, "priority": f.priority, "match": dict(f.match),
            "instructions": f.instructions, "cookie": f"{f.cookie:#018x}"}


def group_doc(g: Group) -> dict[str, Any]:
    return {"group_id": g.group_id, "buckets": g.buckets}


def meter_doc(m: Meter) -> dict[str, Any]:
    return {"meter_id": m.meter_id, "rate": m.rate, "burst": m.burst}


def tables_doc(t: Tables) -> dict[str, Any]:
    return {"flows": [flow_doc(f) for f in sorted(t.flows.values())],
            "groups": [group_doc(g) for _, g in sorted(t.groups.items())],
            "meters": [meter_doc(m) for _, m in sorted(t.meters.items())]}


def tables_of(doc: dict[str, Any]) -> Tables:
    """The inverse of ``tables_doc`` (its JSON decoded)."""
    flows = [Flow(f["table"], f["priority"], tuple(sorted((k, _tuples(v)) for k, v in f["match"].items())),
                  _tuples(f["instructions"]), int(f["cookie"], 16)) for f in doc["flows"]]
    groups = {g["group_id"]: Group(g["group_id"], _tuples(g["buckets"])) for g in doc["groups"]}
    meters = {m["meter_id"]: Meter(m["meter_id"], m["rate"], m["burst"]) for m in doc["meters"]}
    return Tables.of(flows, groups, meters)
