#!/usr/bin/env python3
"""Live scale benchmark (issue 16): one change on an emulated fabric, incremental planning
against the full recompute, in one run.

    .venv/bin/python bench/scale_live.py [--quick] [--rounds N] [--vms N] [--wait-others S]

A fat tree k=4 (20 switches, the 8 edge switches the hypervisors) with
``--vms`` VMs in 4 tenants (every edge carries VMs of every tenant), each
tenant with a load-balanced service of two backends.  The controller runs
twice, with ``controller.fabric.planning: incremental`` (the default) and
``full`` (every reconcile plans the whole fabric and diffs every switch:
the fallback, as the peer).  Per mode, once programmed, interleaved rounds
of:

- backend failover: a backend's HTTP server stopped; from the
  ``backend_down`` event to the ``reconciled`` event of the first reconcile
  planned after it (its changes confirmed by every switch);
- VM added through the API: from the ``config_applied`` event to the
  reconcile that holds it;
- VM moved: a live migration by the emulation's hypervisor agent; from the
  controller hearing that the VM is at its target (the record's restoration
  phase) to the switches confirming the paths there (``flipped_at``).

Writes bench/results/scale-live-<UTC time>[-quick].json.  No target of its
own: the issue's targets are bench/scale.py's; this shows them end to end.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

# The launcher imports Mininet and undoes its logger-class side effect: import it first.
from sdnvirt.emulation import lab, launcher  # noqa: E402,F401
from sdnvirt.emulation.agent import Agent  # noqa: E402
from sdnvirt import config as sdnconfig  # noqa: E402

from common import (  # noqa: E402  (bench/common.py)
    begin, fabric_programmed, fmt, machine, measured, median, out, ratio, report, sdnvirt_fabric,
    wait_reconcile_quiet, wait_others_argument)

TOPO = ("fattree", {"k": 4})
SWITCHES = 20
TENANTS = 4
MODES = ("incremental", "full")
CHECK = {"type": "tcp", "interval": 0.2, "timeout": 0.2, "rise": 2, "fall": 2}
PORT = 8080


def tenants(edges: list[str], vms: int) -> dict:
    """VM i of every tenant on edges[i % len(edges)], the same addresses side by side;
    VMs 0 and 1 back the tenant's service."""
    per = vms // TENANTS
    return {f"t{t}": {
        "segment": 400 + t, "subnet": "10.20.0.0/22",
        "vms": {f"t{t}v{i}": {"mac": f"02:00:00:20:{t:02x}:{i:02x}", "ip": f"10.20.{i // 250}.{10 + i % 250}",
                              "host": edges[i % len(edges)]} for i in range(per)},
        "services": {"web": {"vip": "10.20.3.250", "port": 80, "health_check": CHECK,
                             "backends": [{"vm": f"t{t}v0", "port": PORT}, {"vm": f"t{t}v1", "port": PORT}]}},
    } for t in range(1, TENANTS + 1)}


def held_after(ctl, event: dict, timeout: float = 60.0) -> float | None:
    """Seconds from ``event`` to the end of the first reconcile planned after it."""
    rec = ctl.wait_programmed(event["id"], timeout=timeout)
    return None if rec is None else rec["time"] - event["time"]


def backend_up(ctl, vm: str) -> bool:
    return any(h["up"] for h in ctl.api().get("/health") if h["vm"] == vm)


def failover(run, server, backend: str) -> float | None:
    ctl = run.ctl
    cursor = ctl.cursor()
    server.terminate()
    down = ctl.wait_event("backend_down", {"backend": f"{backend}:{PORT}"}, cursor, timeout=10)
    if down is None:
        raise RuntimeError(f"{backend} not found down; controller log: {ctl.log_path}")
    return held_after(ctl, down)


def added(run, tenant: str, host: str) -> float | None:
    ctl = run.ctl
    cursor = ctl.cursor()
    ctl.api().post(f"/tenants/{tenant}/vms", {"name": "added", "mac": "02:00:00:20:ff:01", "ip": "10.20.3.1",
                                             "host": host})
    applied = ctl.wait_event("config_applied", None, cursor, timeout=10)
    took = None if applied is None else held_after(ctl, applied)
    ctl.api().delete(f"/tenants/{tenant}/vms/added")
    return took


def moved(agent, vm: str, target: str) -> float | None:
    rec = agent.wait(agent.request(vm, target, "live")["id"], timeout=60)
    if rec["outcome"] != "ok":
        raise RuntimeError(f"the migration of {vm} did not succeed: {rec['reason']}")
    # From the controller's hearing that the VM is at its target (the agent's word, after the
    # interface moved) to the switches confirming the paths there.
    return rec["flipped_at"] - rec["phases"]["restoration"]["start"]


def one_mode(mode: str, args, workdir: Path) -> dict:
    edges = list(launcher.build_topo(*TOPO).hypervisors())
    doc = {"controller": {"fabric": {"planning": mode}}, "migration": {"max_vms": 64},
           "tenants": tenants(edges, args.vms)}
    cfg = sdnconfig.parse(doc, f"bench-scale-live-{mode}")
    res: dict = {"mode": mode, "vms": args.vms, "failover_s": [], "added_s": [], "moved_s": []}
    with sdnvirt_fabric(doc, cfg, TOPO, workdir / mode, args.wait_others) as run:
        res.update(run.res)
        t0 = time.time()
        prog = fabric_programmed(run.ctl, switches=SWITCHES, vms=args.vms, timeout=300)
        if prog is None:
            raise RuntimeError(f"{mode}: not programmed in 300 s; controller log: {run.ctl.log_path}")
        res["programmed_flows"], res["programmed_after_start_s"] = prog["fields"]["flows"], prog["time"] - t0
        wait_reconcile_quiet(run.ctl, quiet=2.0, timeout=60)
        backend, mover = "t1v0", f"t2v{len(edges)}"     # the mover starts on edges[0]
        servers = {backend: lab.serve_http(run.emu.host(backend), PORT, backend)}
        agent = Agent(run.emu, run.ctl.api(), cfg).start()
        try:
            for i in range(args.rounds):
                if not lab.wait_for(lambda: backend_up(run.ctl, backend), 15, 0.1):
                    raise RuntimeError(f"{backend} not up; controller log: {run.ctl.log_path}")
                wait_reconcile_quiet(run.ctl, quiet=1.0, timeout=30)
                res["failover_s"].append(failover(run, servers.pop(backend), backend))
                wait_reconcile_quiet(run.ctl, quiet=1.0, timeout=30)
                res["added_s"].append(added(run, "t3", edges[i % len(edges)]))
                wait_reconcile_quiet(run.ctl, quiet=1.0, timeout=30)
                res["moved_s"].append(moved(agent, mover, edges[(i + 1) % len(edges)]))
                servers[backend] = lab.serve_http(run.emu.host(backend), PORT, backend)
                out(f"   {mode} round {i + 1}: failover {fmt(res['failover_s'][-1], ' s')}, "
                    f"VM added {fmt(res['added_s'][-1], ' s')}, VM moved {fmt(res['moved_s'][-1], ' s')}")
            res["reconciles"] = [e["fields"]["ms"] for e in run.ctl.events("reconciled")]
        finally:
            agent.stop()
            for server in servers.values():
                server.terminate()
    return res


def table(results: dict) -> list[list[str]]:
    modes = results.get("modes", {})
    inc, full = modes.get("incremental"), modes.get("full")
    if not inc or not full:
        return []
    rows = [[f"fat tree k=4, {inc['vms']} VMs: flows programmed", fmt(inc["programmed_flows"]),
             fmt(full["programmed_flows"]), "-", "equal",
             "yes" if inc["programmed_flows"] == full["programmed_flows"] else "NO"]]
    for key, what in (("failover_s", "backend failover: backend_down -> in the switches"),
                      ("added_s", "VM added through the API: applied -> in the switches"),
                      ("moved_s", "VM moved (live migration): at its target -> paths flipped")):
        a = median([v for v in inc[key] if v is not None])
        b = median([v for v in full[key] if v is not None])
        rows.append([f"{what} (median of {len(inc[key])})", fmt(a, " s"), fmt(b, " s"), fmt(ratio(a, b), "", 3),
                     "-", "-"])
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one round, 64 VMs")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of each change per mode (default 3)")
    ap.add_argument("--vms", type=int, default=256, help="VMs, a multiple of 32 (default 256)")
    wait_others_argument(ap)
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds, args.vms = 1, 64
    if args.vms % (TENANTS * 8) or not 32 <= args.vms <= 960:
        ap.error("--vms: a multiple of 32 from 32 to 960")
    started = begin("bench/scale_live.py", "sdnvirt-bench-scale-live")
    if started is None:
        return 2
    stamp, workdir = started
    results: dict = {"started_utc": stamp, "quick": args.quick, "machine": machine(),
                     "params": {"rounds": args.rounds, "vms": args.vms, "topo": TOPO}, "modes": {}}
    out(f"sdnvirt live scale benchmark {'(quick) ' if args.quick else ''}- logs in {workdir}")

    def parts():
        for mode in MODES:
            out(f"{mode} planning: fat tree k=4, {args.vms} VMs, {args.rounds} round(s) ...")
            results["modes"][mode] = one_mode(mode, args, workdir)
    errors = measured(results, parts)
    return report(results, errors, "scale-live", stamp, "-quick" if args.quick else "", workdir, table,
                  "full recompute")


if __name__ == "__main__":
    sys.exit(main())
