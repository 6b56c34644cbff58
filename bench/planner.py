#!/usr/bin/env python3
"""Planner benchmark: what a datacenter-sized fabric asks of its switches, VLAN mode against VXLAN mode.

    .venv/bin/python bench/planner.py [--spines 8] [--leaves 72] [--tenants 1000] [--vms 10] [--rounds 2]

No switch and no root: the fabric and the VMs' places are built in memory
(a leaf-spine, every leaf a hypervisor with a VTEP and a tunnel port, each
tenant's VMs on as many different leaves), and the planner plans every
switch's flows in both modes, rounds interleaved.  Prints, per mode, the
flows on the busiest spine (and how many of them belong to tenants) and on
the busiest hypervisor, and the time one full plan takes; VLAN mode is the
peer.  Targets (issue 12): 0 tenant flows in the underlay; a hypervisor's
flows grow with the VMs of the tenants it hosts, not with the datacenter
(vxlan/vlan close to 1).  Writes bench/results/planner-<UTC time>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import time

from common import RESULTS_DIR, fmt, machine, out, print_table

from sdnvirt import config
from sdnvirt.fabric import Fabric, leaf_spine
from sdnvirt.model import Location, Model
from sdnvirt.plan.flows import Owner
from sdnvirt.plan.pipeline import plan

TUNNEL_PORT = 0xFF00     # above any access port the leaves get here
LEAF, SPINE = 1, 2       # leaf_spine's dpids: 0x100 + i, 0x200 + j
VNI_BASE = 5000          # vxlan segments above the VLAN range, distinct in their low 16 bits


def placement(tenant: int, vm: int, leaves: int) -> int:
    """The leaf (1-based) of a tenant's VM: a tenant's VMs on different leaves, tenants spread evenly."""
    return (tenant * 10 + vm * (leaves // 10 or 1) + tenant // leaves) % leaves + 1


def document(mode: str, leaves: int, tenants: int, vms: int) -> dict:
    doc: dict = {"controller": {"fabric": {"encapsulation": mode}},
                 "hypervisors": {f"leaf{i}": {"vtep": f"192.168.{i // 250}.{i % 250 + 1}"}
                                 for i in range(1, leaves + 1)},
                 "tenants": {}}
    for t in range(tenants):
        doc["tenants"][f"t{t}"] = {
            "segment": (VNI_BASE if mode == "vxlan" else 1) + t, "subnet": "10.0.0.0/16",
            "vms": {f"t{t}v{v}": {"mac": f"02:00:{t >> 8:02x}:{t & 0xFF:02x}:00:{v:02x}", "ip": f"10.0.0.{v + 10}",
                                  "host": f"leaf{placement(t, v, leaves)}"} for v in range(vms)}}
    return doc


def model_of(mode: str, spines: int, leaves: int, tenants: int, vms: int) -> Model:
    model = Model(config.parse(document(mode, leaves, tenants, vms)))
    used: dict[str, int] = {}
    for vm in model.vms():
        port = used[vm.host] = used.get(vm.host, spines) + 1
        model.bind(vm.name, Location((LEAF << 8) + int(vm.host.removeprefix("leaf")), port))
    return model


def measure(model: Model, fab: Fabric) -> dict:
    started = time.perf_counter()
    flows = plan(model, fab).flows
    took = time.perf_counter() - started

    def busiest(kind: int) -> dict:
        dpid = max((d for d in flows if d >> 8 == kind), key=lambda d: len(flows[d]))
        tenant = sum(1 for f in flows[dpid] if f.cookie >> 56 != Owner.FABRIC)
        return {"switch": fab.switches[dpid].name, "flows": len(flows[dpid]), "tenant_flows": tenant}
    return {"plan_s": took, "spine": busiest(SPINE), "hypervisor": busiest(LEAF),
            "total_flows": sum(len(f) for f in flows.values())}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spines", type=int, default=8)
    ap.add_argument("--leaves", type=int, default=72)
    ap.add_argument("--tenants", type=int, default=1000)
    ap.add_argument("--vms", type=int, default=10, help="VMs per tenant")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    access = -(-args.tenants * args.vms // args.leaves) + args.vms
    fab = leaf_spine(args.spines, args.leaves, access, (TUNNEL_PORT, "vxlan0"))
    models = {mode: model_of(mode, args.spines, args.leaves, args.tenants, args.vms) for mode in ("vlan", "vxlan")}
    out(f"leaf-spine {args.spines}x{args.leaves}, {args.tenants} tenants x {args.vms} VMs, "
        f"{args.rounds} interleaved rounds")
    runs: dict[str, list[dict]] = {"vlan": [], "vxlan": []}
    for r in range(args.rounds):
        for mode in ("vlan", "vxlan"):
            runs[mode].append(measure(models[mode], fab))
            out(f"round {r + 1} {mode}: {runs[mode][-1]}")
    last = {mode: rs[-1] for mode, rs in runs.items()}
    plan_s = {mode: statistics.median(r["plan_s"] for r in rs) for mode, rs in runs.items()}
    vx, vl = last["vxlan"], last["vlan"]
    hyp_ratio = vx["hypervisor"]["flows"] / vl["hypervisor"]["flows"]
    rows = [
        ["flows, busiest spine", str(vx["spine"]["flows"]), str(vl["spine"]["flows"]),
         fmt(vx["spine"]["flows"] / vl["spine"]["flows"], "x", 4), "", ""],
        ["tenant flows, busiest spine", str(vx["spine"]["tenant_flows"]), str(vl["spine"]["tenant_flows"]),
         "", "0", "yes" if vx["spine"]["tenant_flows"] == 0 else "NO"],
        ["flows, busiest hypervisor", str(vx["hypervisor"]["flows"]), str(vl["hypervisor"]["flows"]),
         fmt(hyp_ratio, "x"), "~1x", "yes" if 0.8 <= hyp_ratio <= 1.25 else "NO"],
        ["flows, whole fabric", str(vx["total_flows"]), str(vl["total_flows"]),
         fmt(vx["total_flows"] / vl["total_flows"], "x"), "", ""],
        ["one full plan (s, median)", fmt(plan_s["vxlan"], "", 2), fmt(plan_s["vlan"], "", 2),
         fmt(plan_s["vxlan"] / plan_s["vlan"], "x", 2), "", ""],
    ]
    out("")
    table = print_table(rows, peer="vlan mode")
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"planner-{stamp}.json"
    path.write_text(json.dumps({"args": vars(args), "machine": machine(), "runs": runs, "table": table},
                               indent=2, default=str) + "\n")
    out(f"\nresults: {path.relative_to(RESULTS_DIR.parent.parent)}")
    return 0 if vx["spine"]["tenant_flows"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
