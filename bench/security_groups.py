#!/usr/bin/env python3
"""Security-group benchmark: the same two VMs with and without groups, in one run.

    .venv/bin/python bench/security_groups.py [--quick] [--rounds N] [--wait-others S]

On bench/fabric.py's path (VM a on leaf1, VM b on leaf2, 1 spine), b is
reconfigured (SIGHUP) between interleaved settings:

- none: b in no group (the peer: open inside its tenant, no conntrack);
- N extra rules, N in 0, 10, 200: b in one group holding the three rules the
  traffic needs (ingress tcp 80, tcp 5201, icmp, from anywhere) after N
  others (ingress tcp ports from /32s and ranges, never matching the
  traffic), so the switch holds b's rules and a's packets must get past them.

Each setting measures, as bench/fabric.py and bench/lb.py do: a) first-packet
RTT a -> b (ARP caches and datapath flows flushed before each ping), b) new
TCP connections per second (ab -c 20, a new connection per request, a ->
b:80; with the datapath's packets and recirculations per connection), c) iperf3
a -> b.  Prints the medians, and the median (and range) of the ratios to "none"
round by round, with the issue's targets
(200 rules: throughput and connections/s >= 0.9x, first packet <= 1.1x); writes
bench/results/security-groups-<UTC time>[-quick].json.
"""

from __future__ import annotations

import argparse
import copy
import signal
import sys
import time
from pathlib import Path

# The launcher imports Mininet and undoes its logger-class side effect: import it first.
from sdnvirt.emulation import lab, launcher  # noqa: E402,F401
from sdnvirt import config as sdnconfig  # noqa: E402

from common import (  # noqa: E402  (bench/common.py)
    attempts, begin, fabric_programmed, fmt, machine, measured, median, our_port_names, out, ratio, report,
    sdnvirt_fabric, wait_reconcile_quiet, wait_others_argument)
from fabric import PATH_TENANTS, PATH_TOPO, path_measurements  # noqa: E402  (the same path, the same figures)
from lb import ab, pmd_delta, pmd_stats  # noqa: E402  (ab's figures and the datapath's, read the same way)

HTTP_PORT = 80
EXTRA = (0, 10, 200)
SETTINGS = ("none", *(f"{n} rules" for n in EXTRA))
NEEDED = [{"direction": "ingress", "protocol": "tcp", "port": HTTP_PORT},
          {"direction": "ingress", "protocol": "tcp", "port": 5201},
          {"direction": "ingress", "protocol": "icmp"}]


def filler(n: int) -> list[dict]:
    """``n`` rules that never match the traffic: one port from one address, or a range from a /24."""
    rules = []
    for i in range(n):
        if i % 4 == 3:
            rules.append({"direction": "ingress", "protocol": "udp", "port": f"{20000 + 10 * i}-{20000 + 10 * i + 9}",
                          "remote_ip": f"10.7.{1 + i % 200}.0/24"})
        else:
            rules.append({"direction": "ingress", "protocol": "tcp", "port": 10000 + i,
                          "remote_ip": f"10.7.0.{100 + i % 150}/32"})
    return rules


def tenants(setting: str) -> dict:
    doc = copy.deepcopy(PATH_TENANTS)
    if setting != "none":
        n = int(setting.split()[0])
        doc["bench"]["security_groups"] = {"bench": {"rules": filler(n) + NEEDED}}
        doc["bench"]["vms"]["b"]["security_groups"] = ["bench"]
    return doc


def apply(ctl, base: dict, setting: str) -> None:
    """Reload the controller with ``setting`` and wait until the switches hold it."""
    cursor = ctl.cursor()
    ctl.write_config({**base, "tenants": tenants(setting)})
    ctl.send(signal.SIGHUP)
    applied = ctl.wait_event("config_applied", after=cursor, timeout=20)
    if applied is None:
        raise RuntimeError(f"setting {setting!r} was not applied; controller log: {ctl.log_path}")
    ctl.wait_programmed(applied["id"], timeout=10)
    wait_reconcile_quiet(ctl, quiet=1.0, timeout=15)


def measure(args, workdir: Path) -> dict:
    doc = {"controller": {"openflow": {"port": lab.free_port()}}, "tenants": tenants("none")}
    cfg = sdnconfig.parse(doc, "bench-security-groups")
    with sdnvirt_fabric(doc, cfg, PATH_TOPO, workdir, args.wait_others) as run:
        ctl, emu = run.ctl, run.emu
        if not fabric_programmed(ctl, switches=3, vms=2, timeout=30):
            raise RuntimeError(f"fabric not programmed in 30 s; controller log: {ctl.log_path}")
        a, b = emu.host("a"), emu.host("b")
        ip_b = PATH_TENANTS["bench"]["vms"]["b"]["ip"]
        server = lab.serve_http(b, HTTP_PORT, "b")
        rounds = []
        try:
            for i in range(args.rounds):
                order = list(SETTINGS[i % len(SETTINGS):] + SETTINGS[:i % len(SETTINGS)])     # interleaved
                for setting in order:
                    apply(ctl, doc, setting)
                    flows = sum(1 for f in lab.dump_flows("leaf2") if "table=2," in f or "table=8," in f)
                    res = {"setting": setting, "round": i, "leaf2_group_flows": flows}
                    res.update(path_measurements(a, b, ip_b, our_port_names(emu.net), args.iterations,
                                                 args.iperf_seconds, 1))
                    before = pmd_stats()
                    res["ab"] = ab(a, f"http://{ip_b}:{HTTP_PORT}/", args.ab_n)
                    # What the datapath did per connection: load-independent, unlike the rates.
                    res["ab_datapath"] = pmd_delta(before, pmd_stats(), res["ab"]["complete"] or 0)
                    out(f"   round {i + 1} {setting:10s}: first packet {fmt(res['first_packet_median_ms'], ' ms')}, "
                        f"{fmt(res['ab']['rps'], ' conn/s', 0)}, iperf3 {fmt(res['iperf3_median_bps'] / 1e9, ' Gb/s')}"
                        f" ({flows} flows in leaf2's tables 2 and 8)")
                    rounds.append(res)
                    time.sleep(1.0)
            run.guard.check(ctl, after=run.cursor)
            return {**run.res, "runs": rounds}
        finally:
            server.terminate()


KEYS = ("first_packet_ms", "conn_per_s", "iperf3_bps")


def figures(run: dict) -> dict:
    return {"first_packet_ms": run["first_packet_median_ms"], "conn_per_s": run["ab"]["rps"],
            "iperf3_bps": run["iperf3_median_bps"]}


def summary(results: dict) -> dict:
    """Per setting: the median of each figure, and the median of its ratios to "none" round by round
    (the machine's load drifts between rounds more than between the settings of one round)."""
    runs = results.get("runs", [])
    peer = {r["round"]: figures(r) for r in runs if r["setting"] == "none"}
    out_: dict = {}
    for setting in SETTINGS:
        mine = [(r["round"], figures(r)) for r in runs if r["setting"] == setting]
        if not mine:
            continue
        res = {k: median([f[k] for _, f in mine if f[k] is not None]) for k in KEYS}
        for k in KEYS:
            ratios = [ratio(f[k], peer[i][k]) for i, f in mine if i in peer]
            res[f"{k}_ratios"] = [x for x in ratios if x is not None]
            res[f"{k}_ratio"] = median(res[f"{k}_ratios"])
        out_[setting] = res
    return out_


def table(results: dict) -> list[list[str]]:
    s = results.get("summary") or {}
    peer = s.get("none")
    if peer is None:
        return []
    rows = []
    for setting in SETTINGS[1:]:
        got = s.get(setting)
        if got is None:
            continue
        last = setting == SETTINGS[-1]
        for key, label, unit, scale, target, ok in (
                ("first_packet_ms", "first-packet RTT", " ms", 1, "<= 1.1", lambda r: r <= 1.1),
                ("conn_per_s", "new TCP conns/s (ab -c 20)", "", 1, ">= 0.9", lambda r: r >= 0.9),
                ("iperf3_bps", "iperf3 throughput", " Gb/s", 1e9, ">= 0.9", lambda r: r >= 0.9)):
            r = got[f"{key}_ratio"]
            mine, theirs = (fmt(None if v is None else v / scale, unit, 3 if unit == " ms" else 2)
                            for v in (got[key], peer[key]))
            spread = "-".join(f"{x:.2f}" for x in (min(got[f"{key}_ratios"]), max(got[f"{key}_ratios"]))) \
                if got[f"{key}_ratios"] else "n/a"
            rows.append([f"{label}, b in groups with {setting}", mine, theirs, f"{fmt(r, '', 2)} ({spread})",
                         target if last else "-", ("yes" if r is not None and ok(r) else "NO") if last else "-"])
    dp = {setting: [r["ab_datapath"]["per_request"] for r in results.get("runs", [])
                    if r["setting"] == setting and r.get("ab_datapath", {}).get("per_request")]
          for setting in SETTINGS}
    if dp["none"] and dp[SETTINGS[-1]]:
        per = {k: median([d["packet recirculations"] for d in v]) for k, v in dp.items() if v}
        pk = {k: median([d["packets received"] for d in v]) for k, v in dp.items() if v}
        rows.append([f"datapath per connection, {SETTINGS[-1]}: packets / recirculations",
                     f"{fmt(pk[SETTINGS[-1]], '', 1)} / {fmt(per[SETTINGS[-1]], '', 1)}",
                     f"{fmt(pk['none'], '', 1)} / {fmt(per['none'], '', 1)}", "-", "-", "-"])
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one round, 5 first packets, ab -n 1000, iperf3 2 s")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of every setting (default 3)")
    wait_others_argument(ap)
    args = ap.parse_args(argv)
    args.iterations, args.ab_n, args.iperf_seconds = (5, 1000, 2.0) if args.quick else (10, 3000, 3.0)
    if args.quick:
        args.rounds = 1
    started = begin("bench/security_groups.py", "sdnvirt-bench-secgroups")
    if started is None:
        return 2
    stamp, workdir = started
    suffix = "-quick" if args.quick else ""
    results: dict = {"started_utc": stamp, "quick": args.quick, "machine": machine(),
                     "params": {"rounds": args.rounds, "first_packet_iterations": args.iterations, "ab_n": args.ab_n,
                                "iperf3_seconds": args.iperf_seconds, "settings": SETTINGS, "topology": PATH_TOPO,
                                "needed_rules": NEEDED}}
    out(f"sdnvirt security-group benchmark {'(quick) ' if args.quick else ''}- logs in {workdir}")
    errors = measured(results, lambda: results.update(
        attempts("security-group run", lambda i: measure(args, workdir / f"run{i + 1}"), tries=2)))
    results["summary"] = summary(results)
    return report(results, errors, "security-groups", stamp, suffix, workdir, table, peer="no groups")


if __name__ == "__main__":
    sys.exit(main())
