#!/usr/bin/env python3
"""sdnvirt VXLAN mode against VLAN mode and standalone OVS, on one path, in one run.

    .venv/bin/python bench/vxlan.py [--quick]

The path of bench/fabric.py a) and b): VM a (leaf1) -> VM b (leaf2) through one spine,
in three setups, in interleaved rounds (the order rotates every round):
- vxlan: sdnvirt in VXLAN mode: leaf1 and leaf2 hypervisors, each with its own
  Open vSwitch, tunnelling over the spine, a Linux bridge (sdnvirt/emulation/underlay.py);
- vlan: sdnvirt in VLAN mode, all three switches the machine's Open vSwitch (bench/fabric.py);
- standalone: the same Mininet fabric of standalone OVS bridges, no controller (bench/fabric.py).
Figures: the first packet (ARP caches and datapath flows flushed before each) and
iperf3 TCP a -> b; the memory of a hypervisor's own ovs-vswitchd.
Targets (issue 12): vxlan first packet <= 1.2x standalone; vxlan iperf3 >= 0.85x vlan.
Printed here, never asserted in tests.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

# The launcher imports Mininet and undoes its logger-class side effect: import it first.
from sdnvirt.emulation import lab  # noqa: E402
from sdnvirt.emulation.underlay import Hypervisor, vtep_plan  # noqa: E402
from sdnvirt import config as sdnconfig  # noqa: E402

import fabric as path  # noqa: E402  (bench/fabric.py: the path, its measurements and its peer)
from common import (  # noqa: E402
    attempts, begin, fabric_programmed, flow_changes, fmt, machine, measured, out, ratio, report,
    sdnvirt_fabric, wait_reconcile_quiet)

SETUPS = ("vxlan", "vlan", "standalone")


def vswitchd_rss_kib(hv: Hypervisor) -> int | None:
    assert hv.ovs is not None
    try:
        pid = (hv.ovs.rundir / "ovs-vswitchd.pid").read_text().strip()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    return next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), None)


def run_vxlan_path(args, workdir: Path, iterations: int, reps: int) -> dict:
    doc = {"controller": {"openflow": {"port": lab.free_port()}, "fabric": {"encapsulation": "vxlan"}},
           "tenants": path.PATH_TENANTS, "hypervisors": vtep_plan(["leaf1", "leaf2"])}
    cfg = sdnconfig.parse(doc, "bench")
    with sdnvirt_fabric(doc, cfg, path.PATH_TOPO, workdir, args.wait_others) as run:
        ctl, emu, res = run.ctl, run.emu, run.res
        # Two OpenFlow switches: the spine is the underlay's.
        if not fabric_programmed(ctl, switches=2, vms=2, timeout=30):
            raise RuntimeError(f"vxlan path not programmed in 30 s; controller log: {ctl.log_path}")
        res["settled"] = wait_reconcile_quiet(ctl, quiet=2.0, timeout=30)
        hvs = [sw for sw in emu.net.switches if isinstance(sw, Hypervisor)]
        res["vswitchd_rss_kib"] = [vswitchd_rss_kib(hv) for hv in hvs]

        def flush() -> None:
            for hv in hvs:
                hv.ovs.appctl("revalidator/purge")

        def count(_ports) -> int:
            # Each hypervisor's datapath holds only this run's ports.
            return sum(len(hv.ovs.appctl("dpctl/dump-flows", path.NETDEV_DP).splitlines()) for hv in hvs)

        a, b = emu.host("a"), emu.host("b")
        cursor = ctl.cursor()
        res.update(path.path_measurements(a, b, path.PATH_TENANTS["bench"]["vms"]["b"]["ip"], set(),
                                          iterations, args.iperf_seconds, reps, flush=flush, count=count))
        res["controller_flow_changes_during_measurement"] = sum(
            map(flow_changes, ctl.events("reconciled", after=cursor)))
        return res


def run_rounds(args, workdir: Path) -> dict[str, dict]:
    per_round_iter = math.ceil(args.iterations / args.rounds)
    per_round_reps = math.ceil(args.iperf_reps / args.rounds)
    rounds: dict[str, list[dict]] = {s: [] for s in SETUPS}
    for r in range(args.rounds):
        order = SETUPS[r % 3:] + SETUPS[:r % 3]
        for setup in order:
            out(f"   round {r + 1}/{args.rounds}: {setup}")
            where = lambda i, s=setup, r=r: workdir / f"{s}-{r + 1}{f'-again{i}' if i else ''}"  # noqa: E731
            if setup == "vxlan":
                run = lambda i, w=where: run_vxlan_path(args, w(i), per_round_iter, per_round_reps)  # noqa: E731
            elif setup == "vlan":
                run = lambda i, w=where: path.run_sdnvirt_path(args, w(i), per_round_iter, per_round_reps)  # noqa: E731
            else:
                run = lambda i: path.run_standalone_path(args, per_round_iter, per_round_reps)  # noqa: E731
            got = attempts(f"round {r + 1} {setup}", run)
            got["round"] = r + 1
            rounds[setup].append(got)
    merged = {s: path.merge_rounds(rs) for s, rs in rounds.items()}
    merged["vxlan"]["vswitchd_rss_kib"] = [k for r in rounds["vxlan"] for k in r["vswitchd_rss_kib"]]
    return merged


def table(results: dict) -> list[list[str]]:
    x, v, s = (results.get(k) for k in SETUPS)
    if not (x and v and s):
        return []
    rows = []
    r = ratio(x["first_packet_median_ms"], s["first_packet_median_ms"])
    rows.append(["first-packet RTT median, vxlan / standalone", fmt(x["first_packet_median_ms"], " ms"),
                 fmt(s["first_packet_median_ms"], " ms"), fmt(r, "", 2), "ratio <= 1.2",
                 "yes" if r is not None and r <= 1.2 and not x["first_packet_lost"] else "NO"])
    rows.append(["  vlan mode (context)", fmt(v["first_packet_median_ms"], " ms"),
                 fmt(s["first_packet_median_ms"], " ms"),
                 fmt(ratio(v["first_packet_median_ms"], s["first_packet_median_ms"]), "", 2), "-", "-"])
    lost = lambda d: f"{d['first_packet_lost']}/{len(d['first_packet_ms']) + d['first_packet_lost']}"  # noqa: E731
    rows.append(["first packets lost (ping -W 2)", lost(x), lost(s), "-", "0",
                 "yes" if not x["first_packet_lost"] else "NO"])
    r = ratio(x["iperf3_median_bps"], v["iperf3_median_bps"])
    gbit = lambda d: fmt(d["iperf3_median_bps"] / 1e9 if d["iperf3_median_bps"] else None, " Gbit/s")  # noqa: E731
    rows.append(["iperf3 TCP a->b median, vxlan / vlan", gbit(x), gbit(v), fmt(r, "", 2), "ratio >= 0.85",
                 "yes" if r is not None and r >= 0.85 else "NO"])
    rows.append(["  vxlan / standalone (context)", gbit(x), gbit(s),
                 fmt(ratio(x["iperf3_median_bps"], s["iperf3_median_bps"]), "", 2), "-", "-"])
    rss = [k for k in x.get("vswitchd_rss_kib", []) if k]
    rows.append(["a hypervisor's ovs-vswitchd RSS, max", fmt(max(rss) / 1024 if rss else None, " MiB"),
                 "-", "-", "-", "-"])
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    path.path_arguments(ap, "the three setups")
    args = ap.parse_args(argv)
    params = path.path_params(args)
    started = begin("bench/vxlan.py", "sdnvirt-bench")
    if started is None:
        return 2
    stamp, workdir = started
    results: dict = {"started_utc": stamp, "quick": args.quick, "machine": machine(), "params": params}
    out(f"sdnvirt VXLAN benchmark {'(quick) ' if args.quick else ''}- logs in {workdir}")

    def parts():
        out(f"leaf-spine 1x2, VM a (leaf1) -> VM b (leaf2): vxlan, vlan, standalone OVS, {args.rounds} round(s) ...")
        results.update(run_rounds(args, workdir))
    errors = measured(results, parts)
    return report(results, errors, "vxlan", stamp, "-quick" if args.quick else "", workdir, table,
                  "peer (standalone OVS / vlan mode)")


if __name__ == "__main__":
    sys.exit(main())
