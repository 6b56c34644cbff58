#!/usr/bin/env python3
"""Scale benchmark (issue 16): a full plan, and what one change costs the controller, by datacenter size.

    .venv/bin/python bench/scale.py [--quick] [--only NAME ...]

No switch and no root.  Each size (a fat tree or a leaf-spine whose edge
switches / leaves are the hypervisors; tenants, VMs, services) is built in
memory in a child process of its own, so that peak memory is the size's own.
There, through the controller's planner, engine and reconciler: one full
``plan()`` (time, flows, peak resident memory); a cold start (the engine's
first update, the diff against empty switches applied to their shadow state,
as the sessions hold it); then a sequence of changes, each what an event does
to the model or the fabric (a backend down, a VM's port down, the VM learnt
again, a VM learnt on another hypervisor, a VM and a tenant added through the
API, a link down and up, nothing), timed from the change to the batches:
``Engine.update`` and the changed keys diffed.  The peer is the full
recompute of the same change in the same run (``plan()`` and the diff of
every switch: the fallback and the oracle); both must send the same changes,
and the shadow state must equal a full plan at the end.

Targets at fat tree k=12, 100 tenants, 10,000 VMs, 100 services: one change
<= 50 ms, full plan <= 10 s, peak RSS <= 1 GB.  Writes
bench/results/scale-<UTC time>[-quick].json and a log-log plot (matplotlib,
the bench extra) of time against flows planned.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import resource
import subprocess
import sys
import time
from typing import Any

from common import RESULTS_DIR, fmt, machine, out, print_table
from datacenter import Datacenter, changes

from sdnvirt.fabric import Fabric
from sdnvirt.model import Model
from sdnvirt.controller.rounds import settle
from sdnvirt.plan.encap import Wires
from sdnvirt.plan.engine import Engine
from sdnvirt.plan.flows import Flow, Group, Meter
from sdnvirt.plan.pipeline import plan
from sdnvirt.plan.reconcile import Batches, Keys, Tables, reconcile_fabric

TARGET = {"fabric": "fattree-12", "tenants": 100, "vms": 10_000, "services": 100}
TARGET_CHANGE_MS, TARGET_PLAN_S, TARGET_RSS_MB = 50.0, 10.0, 1024.0
# Around the target, one dimension at a time (the sizes).
FULL = [TARGET] + [{**TARGET, **d} for d in (
    {"fabric": "fattree-4"}, {"fabric": "fattree-8"}, {"fabric": "leafspine-8x72"},
    {"tenants": 10}, {"tenants": 1000}, {"vms": 1000}, {"services": 0}, {"services": 1000})]
QUICK = [{"fabric": f, "tenants": 10, "vms": 1000, "services": s}
         for f, s in (("fattree-4", 0), ("fattree-4", 100), ("fattree-8", 100), ("leafspine-4x16", 100))]
PEER_ALL_UP_TO = 1000   # VMs: above, the full recompute (a minute or two) is measured once, for nothing changed


def name_of(size: dict) -> str:
    return f"{size['fabric']}/{size['tenants']}t/{size['vms']}vm/{size['services']}svc"


# -- one size, in its own process -----------------------------------------------------------

def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024     # the peak, in MB


def full_tables(model: Model, fab: Fabric) -> tuple[dict[int, Tables], Wires]:
    p = plan(model, fab)
    return {d: Tables.of(p.flows[d], p.groups[d], p.meters[d]) for d in fab.switches}, p.wires


def counted(work: dict[int, Batches]) -> dict[str, int]:
    return {f"{name}_changes": sum(sum(b.count(kind).values()) for b in work.values())
            for kind, name in ((Flow, "flow"), (Group, "group"), (Meter, "meter"))}


def signature(work: dict[int, Batches]) -> set[tuple[int, str, Any]]:
    return {(d, c.verb.value, c.entry.key if isinstance(c.entry, Flow) else repr(c.entry))
            for d, b in work.items() for batch in b.phases.values() for c in batch}


def apply(installed: dict[int, Tables], work: dict[int, Batches]) -> None:
    for dpid, batches in work.items():
        for batch in batches.phases.values():
            installed.setdefault(dpid, Tables()).apply(batch)


def one_size(size: dict) -> dict:
    t0 = time.perf_counter()
    dc = Datacenter(size)
    res: dict[str, Any] = {"size": size, "name": name_of(size), "build_s": time.perf_counter() - t0,
                           "switches": len(dc.fab.switches), "hypervisors": len(dc.hypervisors)}
    t0 = time.perf_counter()
    p = plan(dc.model, dc.fab)
    res["full_plan_s"] = time.perf_counter() - t0
    per_switch = {d: len(f) for d, f in p.flows.items()}
    res["flows"] = sum(per_switch.values())
    res["busiest_hypervisor"] = max(per_switch[d] for d in dc.hypervisors)
    res["busiest_other"] = max((n for d, n in per_switch.items() if d not in dc.hypervisors), default=0)
    del p
    gc.collect()
    res["rss_after_full_plan_mb"] = rss_mb()

    engine = Engine()
    installed: dict[int, Tables] = {d: Tables() for d in dc.fab.switches}
    t0 = time.perf_counter()
    engine.update(dc.model, dc.fab)
    settle(engine)      # as the controller's round does
    engine.take_changes()
    work = reconcile_fabric(engine.desired, installed, engine.wires)
    apply(installed, work)
    res["cold_start_s"] = time.perf_counter() - t0
    res["cold_start_flow_changes"] = counted(work)["flow_changes"]
    del work
    gc.collect()
    # What the controller itself ever holds: a full plan, or the engine and the switches' state.
    res["rss_controller_peak_mb"] = rss_mb()
    res["rss_controller_now_mb"] = int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize() / 2**20

    peer_all = size["vms"] <= PEER_ALL_UP_TO
    res["changes"] = {}
    for kind, prepare in changes(dc):
        run = prepare()
        t0 = time.perf_counter()
        run()
        ran = time.perf_counter() - t0     # the model's own change, also the peer's
        engine.update(dc.model, dc.fab)
        keys = engine.take_changes()
        work = reconcile_fabric(engine.desired, installed, engine.wires,
                                {d: keys.get(d, Keys()) for d in installed})
        took = time.perf_counter() - t0
        row: dict[str, Any] = {"controller_ms": took * 1000, "recomputed": engine.recomputed, **counted(work)}
        peer: dict[str, Any] | None = None
        if peer_all or kind == "nothing":
            # The same change (already in the model) the fallback's way, against the same switches.
            t0 = time.perf_counter()
            full, wires = full_tables(dc.model, dc.fab)
            full_work = reconcile_fabric(full, installed, wires)
            peer = {"full_recompute_ms": (time.perf_counter() - t0 + ran) * 1000, **counted(full_work),
                    "same_changes": signature(full_work) == signature(work)}
            del full, full_work
        apply(installed, work)
        row["peer"] = peer
        res["changes"][kind] = row
        out(f"   {res['name']} {kind}: {fmt(row['controller_ms'], ' ms', 2)}, "
            f"{row['flow_changes']} flow / {row['group_changes']} group changes"
            + (f"; full recompute {fmt(peer['full_recompute_ms'] / 1000, ' s', 2)}, "
               f"{peer['flow_changes']} flow changes, same: {peer['same_changes']}" if peer else ""))
    full, _ = full_tables(dc.model, dc.fab)
    res["shadow_equals_full_plan"] = all(installed[d] == full.get(d, Tables()) for d in installed)
    res["rss_peak_mb"] = rss_mb()
    return res


# -- the run ------------------------------------------------------------------------------

RESULT = "RESULT "


def in_child(size: dict) -> dict:
    """``one_size`` in a process of its own: its peak memory is the size's alone."""
    proc = subprocess.Popen([sys.executable, __file__, "--one", json.dumps(size)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    result: dict | None = None
    for line in proc.stdout:
        if line.startswith(RESULT):
            result = json.loads(line.removeprefix(RESULT))
        else:
            out(line.rstrip("\n"))
    if proc.wait() != 0 or result is None:
        return {"size": size, "name": name_of(size), "error": f"exit status {proc.returncode}"}
    return result


def worst_change(res: dict) -> tuple[str, dict]:
    """The change (other than a link's) that cost the controller most."""
    return max(((k, r) for k, r in res["changes"].items() if not k.startswith("link")),
               key=lambda kr: kr[1]["controller_ms"])


def held(at: bool, value: float, limit: float, ok: bool = True) -> list[str]:
    """The target columns: only the target size has targets."""
    return [f"<= {limit:g}", "yes" if value <= limit and ok else "NO"] if at else ["", ""]


def rows(results: list[dict]) -> list[list[str]]:
    target = next((r for r in results if r["size"] == TARGET and "error" not in r), None)
    table = []
    for res in results:
        if "error" in res:
            table.append([res["name"], res["error"], "", "", "", ""])
            continue
        at = res is target
        table.append([f"{res['name']}: full plan (s), flows", f"{fmt(res['full_plan_s'], '', 2)}, {res['flows']}",
                      "", "", *held(at, res["full_plan_s"], TARGET_PLAN_S)])
        rss = res["rss_controller_peak_mb"]
        table.append(["  peak RSS (MB)", fmt(rss, "", 0), "", "", *held(at, rss, TARGET_RSS_MB)])
        for kind, row in res["changes"].items():
            peer, ms = row["peer"], row["controller_ms"]
            same = peer is None or peer["same_changes"]
            cells = held(at, ms, TARGET_CHANGE_MS, same) if at else ["", "" if same else "DIFFERS"]
            table.append([f"  {kind}: controller ms (flow changes)", f"{fmt(ms, '', 1)} ({row['flow_changes']})",
                          f"{fmt(peer['full_recompute_ms'], '', 0)} ({peer['flow_changes']})" if peer else "",
                          fmt(ms / peer["full_recompute_ms"], "x", 4) if peer else "", *cells])
        table.append(["  shadow state equals a full plan at the end", str(res["shadow_equals_full_plan"]),
                      "", "", "True", "yes" if res["shadow_equals_full_plan"] else "NO"])
    return table


def draw(results: list[dict], png) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    done = sorted((r for r in results if "error" not in r), key=lambda r: r["flows"])
    fig, ax = plt.subplots(figsize=(8, 5))
    x = [r["flows"] for r in done]
    ax.plot(x, [r["full_plan_s"] for r in done], "o-", label="full plan")
    ax.plot(x, [r["changes"]["nothing"]["peer"]["full_recompute_ms"] / 1000 for r in done], "s--",
            label="full recompute of a change (plan + diff of every switch)")
    ax.plot(x, [worst_change(r)[1]["controller_ms"] / 1000 for r in done], "^-",
            label="one change, incremental (the costliest kind but a link's)")
    ax.plot(x, [max(r["changes"][k]["controller_ms"] for k in ("link_down", "link_up")) / 1000 for r in done],
            "v:", label="a link down or up, incremental")
    ax.axhline(TARGET_CHANGE_MS / 1000, color="grey", lw=0.8, ls=":")
    for r in done:
        ax.annotate(r["name"], (r["flows"], r["full_plan_s"]), fontsize=6, rotation=20)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("flows planned, whole fabric")
    ax.set_ylabel("controller time (s)")
    ax.set_title("sdnvirt: controller time against datacenter size")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png, dpi=120)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes only (< 2 min)")
    ap.add_argument("--only", nargs="*", help="sizes by name (fabric/Nt/Nvm/Nsvc), e.g. fattree-12/100t/10000vm/100svc")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(RESULT + json.dumps(one_size(json.loads(args.one))), flush=True)
        return 0
    sizes = QUICK if args.quick else FULL
    if args.only:
        sizes = [s for s in sizes if name_of(s) in args.only]
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    results: dict[str, Any] = {"args": vars(args), "machine": machine(), "sizes": []}
    t0 = time.monotonic()
    for size in sizes:
        out(f"{name_of(size)} ...")
        results["sizes"].append(in_child(size))
    results["duration_s"] = time.monotonic() - t0
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    suffix = "-quick" if args.quick else ""
    png = RESULTS_DIR / f"scale-{stamp}{suffix}.png"
    try:
        draw(results["sizes"], png)
        results["plot"] = str(png.relative_to(RESULTS_DIR.parent.parent))
    except Exception as err:  # noqa: BLE001 - the figures are written without their plot
        out(f"plot failed: {type(err).__name__}: {err}")
    out("")
    results["table"] = print_table(rows(results["sizes"]), peer="full recompute")
    path = RESULTS_DIR / f"scale-{stamp}{suffix}.json"
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    plot = f", plot: {results['plot']}" if "plot" in results else ""
    out(f"\nresults: {path.relative_to(RESULTS_DIR.parent.parent)}{plot}")
    bad = [r for r in results["sizes"] if "error" in r or not r["shadow_equals_full_plan"]
           or any(c["peer"] and not c["peer"]["same_changes"] for c in r["changes"].values())]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
