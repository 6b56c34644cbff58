#!/usr/bin/env python3
"""sdnvirt fabric benchmark: every figure next to a peer measured in the same run.

    .venv/bin/python bench/fabric.py [--quick]

a) first-packet latency VM a (leaf1) -> VM b (leaf2) on a 1-spine x 2-leaf fabric:
   sdnvirt (controller daemon + fail-secure bridges) vs the same Mininet fabric
   with standalone OVS bridges (NORMAL learning switch, no controller);
   plus the warm RTT of both for context.
b) iperf3 TCP throughput over the same path, same two setups.
c) programming time of a k=4 fat tree (20 switches) with 4 tenants x 16 VMs:
   the emulation comes up first, the controller later; from the last
   ``switch ... connected`` log line to ``fabric programmed: 20 switches ...
   64 of 64 VMs located``; the data plane is then checked (flow count, pings).
   Reference: a warm restart (kill -9, start again) must change 0 flows.

Targets are printed here, never asserted in tests.  See bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import re
import signal
import sys
import time
from functools import partial
from pathlib import Path

# The launcher imports Mininet and undoes its logger-class side effect: import it first.
from sdnvirt.emulation import lab, launcher  # noqa: E402
from sdnvirt.emulation.launcher import Emulation  # noqa: E402
from sdnvirt import config as sdnconfig  # noqa: E402

from mininet.net import Mininet  # noqa: E402
from mininet.node import OVSSwitch  # noqa: E402

from common import (  # noqa: E402  (bench/common.py: shared with bench/lb.py)
    BridgeGuard, attempts, begin, ensure_no_clash, fabric_programmed, flow_changes, fmt, machine, measured, median,
    our_port_names, out, p90, raise_if_disturbed, ratio, report, sdnvirt_fabric, sh, wait_quiet,
    wait_reconcile_quiet, wait_others_argument)

NETDEV_DP = "netdev@ovs-netdev"      # the one datapath every userspace bridge shares

# -- the path of a) and b) ------------------------------------------------------------
PATH_TOPO = ("leafspine", {"spines": 1, "leaves": 2})
PATH_TENANTS = {
    "bench": {"segment": 77, "subnet": "10.7.0.0/24", "vms": {
        "a": {"mac": "02:00:00:07:00:0a", "ip": "10.7.0.10", "host": "leaf1"},
        "b": {"mac": "02:00:00:07:00:0b", "ip": "10.7.0.11", "host": "leaf2"},
    }},
}

# -- c) fat tree k=4: 4 tenants x 16 VMs, all tenants on 10.9.0.0/24 (.10-.25) ----------
FATTREE = ("fattree", {"k": 4})
N_TENANTS, VMS_PER_TENANT = 4, 16


def fattree_tenants(edges: list[str]) -> dict:
    """VM i of every tenant on edges[i % len(edges)]: round-robin, every edge
    switch carries VMs of every tenant, with the same IPs side by side."""
    tenants = {}
    for t in range(1, N_TENANTS + 1):
        tenants[f"t{t}"] = {"segment": 300 + t, "subnet": "10.9.0.0/24", "vms": {
            f"t{t}v{i}": {"mac": f"02:00:00:09:{t:02x}:{i:02x}", "ip": f"10.9.0.{10 + i}",
                          "host": edges[i % len(edges)]}
            for i in range(VMS_PER_TENANT)}}
    return tenants


def parse_rtts(ping_output: str) -> list[float]:
    return [float(x) for x in re.findall(r"time=([\d.]+) ms", ping_output)]


def dp_flow_count(port_names: set[str]) -> int:
    """Datapath (megaflow cache) flows entering through one of our bridges' ports."""
    dump = sh(["ovs-appctl", "dpctl/dump-flows", "-m", NETDEV_DP])
    return sum(1 for line in dump.splitlines()
               if (m := re.match(r"ufid:[0-9a-f-]+,.*?\bin_port\(([^)]+)\)", line)) and m.group(1) in port_names)


def flush_datapath() -> None:
    """Empty the datapath flow cache *and* ofproto's record of it (the ukeys).

    ``ovs-appctl dpctl/del-flows`` deletes the datapath flows behind ofproto's back:
    the ukeys stay, and a later upcall with the same flow key cannot install its
    flow again (measured: after the first iteration a ping re-installed 0 datapath
    flows, each packet went through the slow path uninstalled).  ``revalidator/purge``
    deletes both, so every iteration's ping really is a cold miss that installs its
    flows (8-19 of them per ping on this path).  Like dpctl/del-flows on netdev it acts
    on the one shared datapath, i.e. on every userspace bridge; wait_quiet() makes sure
    no other Mininet run shares it at that time.
    """
    sh(["ovs-appctl", "revalidator/purge"])


def bridge_flows(switches: list[str]) -> dict[str, list[str]]:
    return {sw: lab.dump_flows(sw) for sw in switches}


# -- a) and b): one fabric, either setup ----------------------------------------------

def path_measurements(a, b, ip_b: str, port_names: set[str], iterations: int,
                      iperf_seconds: float, iperf_reps: int, flush=flush_datapath, count=dp_flow_count) -> dict:
    """``flush`` and ``count``: the datapath's, the machine's one by default (bench/vxlan.py: the hypervisors')."""
    res: dict = {}
    # Warm-up: learning done, both ARP caches filled.
    if not lab.reachable(a, ip_b, tries=5):
        raise RuntimeError(f"{a} cannot reach {ip_b} before measuring")
    # First packet: no ARP entry in either VM, no datapath flow (nor ukey) anywhere.
    rtts, lost, left, installed = [], 0, [], []
    for _ in range(iterations):
        for h in (a, b):
            h.cmd(f"ip neigh flush dev {h.defaultIntf()}")
        flush()
        left.append(count(port_names))
        time.sleep(0.2)
        got = parse_rtts(a.cmd(f"ping -n -c 1 -W 2 {ip_b}"))
        installed.append(count(port_names))
        if got:
            rtts.append(got[0])
        else:
            lost += 1
    res["first_packet_ms"] = rtts
    res["first_packet_lost"] = lost
    res["first_packet_median_ms"] = median(rtts)
    res["first_packet_p90_ms"] = p90(rtts)
    # Evidence that every iteration started cold and the ping took the slow path:
    res["dp_flows_left_after_flush"] = left             # all 0
    res["dp_flows_after_ping"] = installed              # > 0: the ping's upcalls installed flows
    # Warm: ARP cached and datapath flows in place.
    lab.ping(a, ip_b, count=3, interval=0.1)
    warm = parse_rtts(a.cmd(f"ping -n -c 20 -i 0.05 -W 2 {ip_b}"))
    res["warm_rtt_ms"] = warm
    res["warm_rtt_median_ms"] = median(warm)
    # iperf3 TCP a -> b.
    bps = []
    try:
        for _ in range(iperf_reps):
            bps.append(lab.iperf3(b, a, ip_b, seconds=iperf_seconds))
    finally:
        # lab.iperf3's one-off server exits after its test; kill it if a client failed.
        b.cmd("f=/tmp/sdnvirt-iperf3-$$.pid; [ -f $f ] && kill $(cat $f) 2>/dev/null; rm -f $f")
    res["iperf3_bps"] = bps
    res["iperf3_median_bps"] = median(bps)
    res["loadavg_after"] = os.getloadavg()
    return res


def run_sdnvirt_path(args, workdir: Path, iterations: int, reps: int) -> dict:
    doc = {"controller": {"openflow": {"port": lab.free_port()}}, "tenants": PATH_TENANTS}
    cfg = sdnconfig.parse(doc, "bench")
    with sdnvirt_fabric(doc, cfg, PATH_TOPO, workdir, args.wait_others) as run:
        ctl, emu, res = run.ctl, run.emu, run.res
        if not fabric_programmed(ctl, switches=3, vms=2, timeout=30):
            raise RuntimeError(f"sdnvirt path fabric not programmed in 30 s; controller log: {ctl.log_path}")
        # Links are learnt in both directions within an LLDP round or two: measure a settled fabric.
        res["settled"] = wait_reconcile_quiet(ctl, quiet=2.0, timeout=30)
        a, b = emu.host("a"), emu.host("b")
        cursor = ctl.cursor()
        res.update(path_measurements(a, b, PATH_TENANTS["bench"]["vms"]["b"]["ip"], our_port_names(emu.net),
                                     iterations, args.iperf_seconds, reps))
        during = ctl.events("reconciled", after=cursor)
        run.guard.check(ctl, after=run.cursor)
        # The first packet never needs the controller: no flow change while measuring.
        res["controller_flow_changes_during_measurement"] = sum(map(flow_changes, during))
        return res


def run_standalone_path(args, iterations: int, reps: int) -> dict:
    name, params = PATH_TOPO
    cfg = sdnconfig.parse({"tenants": PATH_TENANTS}, "bench")
    # The very same Topo object sdnvirt's launcher builds: same switches, dpids, hosts, MACs, IPs.
    topo = Emulation(cfg, name, params).build_topo()
    waited = wait_quiet(args.wait_others)
    ensure_no_clash(list(topo.switches()))
    switch = partial(OVSSwitch, datapath="user", protocols="OpenFlow13", failMode="standalone")
    net = Mininet(topo, switch=switch, controller=None, autoSetMacs=False, build=False)
    guard = None
    try:
        net.build()
        net.start()
        guard = BridgeGuard([sw.name for sw in net.switches])
        for host in net.hosts:
            launcher._boot(host)       # ethtool -K tx off, one gratuitous ARP: as the launcher does
        a, b = net.get("a"), net.get("b")
        res = {"waited_for_other_runs_s": waited}
        res.update(path_measurements(a, b, PATH_TENANTS["bench"]["vms"]["b"]["ip"], our_port_names(net),
                                     iterations, args.iperf_seconds, reps))
        guard.check()
        return res
    except Exception as err:
        raise_if_disturbed(guard, err)
        raise
    finally:
        if guard is not None:
            guard.release(net)
        net.stop()


def run_paths(args, workdir: Path) -> tuple[dict, dict]:
    """a) and b) for both setups in interleaved rounds (ABBA...): on this small machine the
    throughput drifts by +-10 % from minute to minute, and one long block per setup would
    turn that drift into a difference between the setups."""
    per_round_iter = math.ceil(args.iterations / args.rounds)
    per_round_reps = math.ceil(args.iperf_reps / args.rounds)
    rounds: dict[str, list[dict]] = {"sdnvirt": [], "standalone": []}
    for r in range(args.rounds):
        order = ["sdnvirt", "standalone"] if r % 2 == 0 else ["standalone", "sdnvirt"]
        for setup in order:
            out(f"   round {r + 1}/{args.rounds}: {setup}")
            if setup == "sdnvirt":
                got = attempts(f"round {r + 1} sdnvirt", lambda i, r=r: run_sdnvirt_path(
                    args, workdir / f"path-sdnvirt-{r + 1}{f'-again{i}' if i else ''}",
                    per_round_iter, per_round_reps))
            else:
                got = attempts(f"round {r + 1} standalone",
                               lambda i: run_standalone_path(args, per_round_iter, per_round_reps))
            got["round"] = r + 1
            rounds[setup].append(got)
    return merge_rounds(rounds["sdnvirt"]), merge_rounds(rounds["standalone"])


def merge_rounds(rounds: list[dict]) -> dict:
    cat = lambda key: [x for r in rounds for x in r[key]]   # noqa: E731
    rtts, warm, bps = cat("first_packet_ms"), cat("warm_rtt_ms"), cat("iperf3_bps")
    res = {
        "first_packet_ms": rtts,
        "first_packet_lost": sum(r["first_packet_lost"] for r in rounds),
        "first_packet_median_ms": median(rtts),
        "first_packet_p90_ms": p90(rtts),
        "warm_rtt_median_ms": median(warm),
        "iperf3_bps": bps,
        "iperf3_median_bps": median(bps),
        "rounds": rounds,
    }
    res["void_attempts"] = [v for r in rounds for v in r.get("void_attempts", [])]
    if all("controller_flow_changes_during_measurement" in r for r in rounds):
        res["controller_flow_changes_during_measurement"] = sum(
            r["controller_flow_changes_during_measurement"] for r in rounds)
    return res


# -- c) programming time and warm restart ---------------------------------------------

def set_max_backoff(switches: list[str], ms: int = 1000) -> list[str]:
    """Every one of *our* bridges reconnects to its controller at most ``ms`` apart.
    (Mininet already creates the Controller records with max_backoff=1000; this makes
    sure, and does not touch other bridges' controllers as ``--all`` would.)"""
    cmd = ["ovs-vsctl", "--timeout=10"]
    uuids = []
    for sw in switches:
        got = sh(["ovs-vsctl", "--timeout=5", "get", "bridge", sw, "controller"]).strip().strip("[]")
        uuids += [u.strip() for u in got.split(",") if u.strip()]
    for u in uuids:
        cmd += ["--", "set", "controller", u, f"max_backoff={ms}"]
    if uuids:
        sh(cmd)
    return [sh(["ovs-vsctl", "--timeout=5", "get", "controller", u, "max_backoff"]).strip() for u in uuids]


def run_programming(args, workdir: Path) -> dict:
    return attempts("fat tree", lambda i: programming(args, workdir / f"fattree{f'-again{i}' if i else ''}"),
                    tries=2)


def programming(args, workdir: Path) -> dict:
    name, params = FATTREE
    topo = launcher.build_topo(name, params)
    edges = list(topo.hypervisors())
    tenants = fattree_tenants(edges)
    port = lab.free_port()
    doc = {"controller": {"openflow": {"port": port}}, "tenants": tenants}
    cfg = sdnconfig.parse(doc, "bench-fattree")
    settle = cfg.controller.fabric.settle
    emu = Emulation(cfg, name, params, controller_port=port)
    switch_names = sorted(emu.build_topo().switches())
    waited = wait_quiet(args.wait_others)
    ensure_no_clash(switch_names)
    ctl = guard = None
    res: dict = {"waited_for_other_runs_s": waited, "switches": len(switch_names), "edges": edges,
                 "vms": sum(len(t["vms"]) for t in tenants.values()),
                 "vms_per_edge": sum(len(t["vms"]) for t in tenants.values()) // len(edges)}
    try:
        t0 = time.monotonic()
        emu.start()                                        # nobody listens on `port` yet
        res["emulation_start_s"] = time.monotonic() - t0
        assert emu.net is not None
        guard = BridgeGuard(switch_names)
        res["hosts_up"] = len(emu.net.hosts)
        if len(emu.net.hosts) != res["vms"] or len(emu.net.switches) != 20:
            raise RuntimeError(f"expected 20 switches and {res['vms']} hosts, got "
                               f"{len(emu.net.switches)} and {len(emu.net.hosts)}")
        res["max_backoff"] = sorted(set(set_max_backoff(switch_names, 1000)))
        workdir.mkdir()
        ctl = lab.ControllerProcess(doc, workdir)
        started_wall = dt.datetime.now()
        ctl.start()
        res["controller_log"] = str(ctl.log_path)
        prog = fabric_programmed(ctl, switches=20, vms=res["vms"], timeout=120)
        if not prog:
            raise RuntimeError(f"not programmed within 120 s; controller log: {ctl.log_path}")
        # Let it go quiet (no reconcile for 3 s, at most 30 s), then look at the switches.
        res["quiet_after_programmed"] = wait_reconcile_quiet(ctl, quiet=3.0, timeout=30)
        res.update(programming_timeline(ctl.events(), prog))
        res["controller_started_wall"] = started_wall.isoformat(timespec="milliseconds")
        # Verify the data plane: the switches hold what the controller says it programmed.
        flows = bridge_flows(switch_names)
        res["flows_in_switches"] = sum(len(v) for v in flows.values())
        res["flows_match_controller"] = res["flows_in_switches"] == res["final_programmed_flows"]
        res["pings"] = ping_sample(emu, tenants, edges)
        res["pings_ok"] = sum(1 for p in res["pings"] if p["ok"])
        # Reference: warm restart, zero flow changes expected.
        res["warm_restart"] = warm_restart(ctl, switch_names, flows, settle)
        res["loadavg_after"] = os.getloadavg()
        guard.check(ctl)
        return res
    except Exception as err:
        raise_if_disturbed(guard, err)
        raise
    finally:
        if guard is not None:
            guard.release(emu.net)
        emu.stop()
        if ctl is not None:
            ctl.stop()


def programming_timeline(events: list[dict], prog: dict) -> dict:
    """Where the time to ``prog`` (the "programmed" reconcile) went, from the controller's events
    (every kind, oldest first): connections, links, VMs located, each reconcile."""
    def of(kind, evs):
        return [e for e in evs if e["kind"] == kind]
    before = [e for e in events if e["id"] <= prog["id"]]
    conns = of("switch_connected", before)
    first_conn, last_conn = conns[0]["time"], conns[-1]["time"]
    links = of("link_up", before)
    # Located by a frame of theirs (their own or an answer to a probe), not read back from flows.
    vms = [e for e in of("vm_located", before) if e["fields"]["how"] != "recovered"]
    reconciles = of("reconciled", events)
    programmed = [e for e in reconciles if e["fields"]["programmed"]]
    return {
        "switch_connected_events": len(conns),
        "distinct_switches_connected": len({e["fields"]["dpid"] for e in conns}),
        "from_first_connected_s": prog["time"] - first_conn,
        "from_last_connected_s": prog["time"] - last_conn,
        "connect_spread_s": last_conn - first_conn,
        "programmed_flows": prog["fields"]["flows"],
        "timeline_s_after_last_connected": {
            "last_link_discovered": links[-1]["time"] - last_conn if links else None,
            "links_discovered": len(links),
            "last_vm_located": vms[-1]["time"] - last_conn if vms else None,
            "vms_located_by_frames": len(vms),
            "vms_located_after_last_connected": sum(1 for e in vms if e["time"] > last_conn),
            "vms_located_after_last_link": sum(1 for e in vms if links and e["time"] > links[-1]["time"]),
            "programmed": prog["time"] - last_conn,
        },
        "reconciles_until_programmed": [
            {"t_s_after_last_connected": round(e["time"] - last_conn, 3), "switches": e["fields"]["switches"],
             "changes": flow_changes(e), "ms": e["fields"]["ms"]} for e in reconciles if e["id"] <= prog["id"]],
        "flow_changes_after_programmed": sum(flow_changes(e) for e in reconciles if e["id"] > prog["id"]),
        "final_programmed_flows": programmed[-1]["fields"]["flows"],
    }


def ping_sample(emu, tenants: dict, edges: list[str]) -> list[dict]:
    """8 within-tenant pairs, every one across pods (k=4: edges 2 per pod)."""
    n = len(edges)
    # (src index, dst index) into a tenant's VMs; VM i sits on edges[i % n].
    picks = [(0, 7), (2, 13), (4, 9), (6, 11), (1, 14), (3, 12), (5, 8), (15, 10)]
    pod = lambda i: (i % n) // 2   # noqa: E731
    pairs = []
    for k, (i, j) in enumerate(picks):
        t = f"t{k % N_TENANTS + 1}"
        assert pod(i) != pod(j)
        src, dst = f"{t}v{i}", f"{t}v{j}"
        ip = tenants[t]["vms"][dst]["ip"]
        ok = lab.reachable(emu.host(src), ip, tries=3)
        pairs.append({"tenant": t, "src": src, "src_edge": edges[i % n], "dst": dst,
                      "dst_edge": edges[j % n], "dst_ip": ip, "ok": ok})
    return pairs


def warm_restart(ctl, switch_names: list[str], flows_before: dict[str, list[str]], settle: float) -> dict:
    res: dict = {}
    keys_before = {sw: {lab.flow_key(f) for f in fl} for sw, fl in flows_before.items()}
    killed = time.monotonic()
    ctl.stop(signal.SIGKILL)
    ctl.start()     # a new run: its events start afresh

    def all_hold():
        holds = ctl.events("switch_flows_read")
        return holds if len({e["fields"]["dpid"] for e in holds}) >= len(switch_names) else None

    holds = lab.wait_for(all_hold, timeout=60, interval=0.1)
    if not holds:
        raise RuntimeError(f"warm restart: not every switch read back in 60 s; controller log: {ctl.log_path}")
    first_conn = ctl.events("switch_connected")[0]["time"]
    res["first_connected_to_all_hold_s"] = holds[-1]["time"] - first_conn
    res["flows_held"] = sum(e["fields"]["flows"] for e in {e["fields"]["dpid"]: e for e in holds}.values())
    # Warm switches are left alone until the fabric has been quiet for `settle` s (links
    # are re-learnt by LLDP meanwhile); after that a reconcile must find nothing to do.
    # Wait for settle after the last link/flows read/connection, then 3 s more.
    def settled_plus_3():
        last = max(e["time"] for e in ctl.events(["link_up", "switch_flows_read", "switch_connected"]))
        return time.time() - last >= settle + 3.0
    lab.wait_for(settled_plus_3, timeout=30, interval=0.2)
    recs = ctl.events("reconciled")
    res["flow_changes"] = sum(map(flow_changes, recs))
    res["vms_found_in_flows"] = len(ctl.events("vm_located", {"how": "recovered"}))
    # Cross-check in the switches: same flows (minus counters), none re-created since the kill.
    flows_after = bridge_flows(switch_names)
    since_kill = time.monotonic() - killed
    res["switch_flows_differing"] = sum(
        len(keys_before[sw] ^ {lab.flow_key(f) for f in flows_after[sw]}) for sw in switch_names)
    res["switch_flows_younger_than_restart"] = sum(
        1 for fl in flows_after.values() for f in fl if lab.flow_field(f, "duration") < since_kill)
    return res


# -- report -----------------------------------------------------------------------------

def table(results: dict) -> list[list[str]]:
    rows = []
    s, p = results.get("sdnvirt_path"), results.get("standalone_path")
    if s and p:
        r = ratio(s["first_packet_median_ms"], p["first_packet_median_ms"])
        rows.append(["first-packet RTT median", fmt(s["first_packet_median_ms"], " ms"),
                     fmt(p["first_packet_median_ms"], " ms"), fmt(r, "", 2), "ratio <= 1.1",
                     "yes" if r is not None and r <= 1.1 and not s["first_packet_lost"] else "NO"])
        rows.append(["first-packet RTT p90", fmt(s["first_packet_p90_ms"], " ms"),
                     fmt(p["first_packet_p90_ms"], " ms"),
                     fmt(ratio(s["first_packet_p90_ms"], p["first_packet_p90_ms"]), "", 2), "-", "-"])
        rows.append(["first-packet lost (ping -W 2)", f"{s['first_packet_lost']}/{len(s['first_packet_ms']) + s['first_packet_lost']}",
                     f"{p['first_packet_lost']}/{len(p['first_packet_ms']) + p['first_packet_lost']}", "-", "0", "yes" if not s["first_packet_lost"] else "NO"])
        rows.append(["warm RTT median (context)", fmt(s["warm_rtt_median_ms"], " ms"),
                     fmt(p["warm_rtt_median_ms"], " ms"),
                     fmt(ratio(s["warm_rtt_median_ms"], p["warm_rtt_median_ms"]), "", 2), "-", "-"])
        sb, pb = s["iperf3_median_bps"], p["iperf3_median_bps"]
        r = ratio(sb, pb)
        rows.append(["iperf3 TCP a->b median", fmt(sb / 1e9 if sb else None, " Gbit/s"),
                     fmt(pb / 1e9 if pb else None, " Gbit/s"), fmt(r, "", 2), "ratio >= 0.95",
                     "yes" if r is not None and r >= 0.95 else "NO"])
        spread = lambda xs: f"{min(xs) / 1e9:.3f}-{max(xs) / 1e9:.3f}" if xs else "n/a"   # noqa: E731
        rows.append([f"  iperf3 min-max of {len(s['iperf3_bps'])} / {len(p['iperf3_bps'])} runs",
                     spread(s["iperf3_bps"]), spread(p["iperf3_bps"]), "-", "-", "-"])
    c = results.get("programming")
    if c:
        rows.append(["fattree k=4, 64 VMs: last switch connected -> programmed",
                     fmt(c["from_last_connected_s"], " s"), "-", "-", "< 1 s",
                     "yes" if c["from_last_connected_s"] < 1.0 else "NO"])
        rows.append(["  first switch connected -> programmed", fmt(c["from_first_connected_s"], " s"),
                     "-", "-", "-", "-"])
        rows.append(["  flows in switches == controller's M", fmt(c["flows_in_switches"]),
                     fmt(c["final_programmed_flows"]) + " (controller)", "-", "equal",
                     "yes" if c["flows_match_controller"] else "NO"])
        rows.append(["  flow changes after 'programmed'", fmt(c["flow_changes_after_programmed"]), "-", "-",
                     "0", "yes" if c["flow_changes_after_programmed"] == 0 else "NO"])
        rows.append(["  within-tenant pings across pods", f"{c['pings_ok']}/{len(c['pings'])}", "-", "-",
                     "all", "yes" if c["pings_ok"] == len(c["pings"]) else "NO"])
        w = c["warm_restart"]
        rows.append(["warm restart (ref): first connected -> all 20 hold", fmt(w["first_connected_to_all_hold_s"], " s"),
                     "-", "-", "-", "-"])
        ok = w["flow_changes"] == 0 and w["switch_flows_differing"] == 0
        rows.append(["warm restart: flow changes (controller / switches)",
                     f"{w['flow_changes']} / {w['switch_flows_differing']}", "-", "-", "0",
                     "yes" if ok else "NO"])
    return rows


def path_arguments(ap: argparse.ArgumentParser, rounds_of: str) -> None:
    """The path measurements' options (bench/vxlan.py measures the same path)."""
    ap.add_argument("--quick", action="store_true", help="10 first-packet iterations, iperf3 2 s x 1")
    ap.add_argument("--rounds", type=int, metavar="N", help=f"interleaved rounds of {rounds_of} (3; --quick: 1)")
    wait_others_argument(ap, "before each part")


def path_params(args: argparse.Namespace) -> dict:
    """The parsed path options completed with their defaults, as a result file records them."""
    args.iterations = 10 if args.quick else 30
    args.iperf_seconds, args.iperf_reps = (2.0, 1) if args.quick else (5.0, 3)
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    return {"first_packet_iterations": args.iterations, "rounds": args.rounds,
            "iperf3_seconds": args.iperf_seconds, "iperf3_reps": args.iperf_reps}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    path_arguments(ap, "sdnvirt and standalone OVS for a) and b)")
    ap.add_argument("--only", choices=["path", "programming"], help="run one part only")
    args = ap.parse_args(argv)
    params = path_params(args)
    started = begin("bench/fabric.py", "sdnvirt-bench")
    if started is None:
        return 2
    stamp, workdir = started
    results: dict = {"started_utc": stamp, "quick": args.quick, "machine": machine(), "params": params}
    out(f"sdnvirt fabric benchmark {'(quick) ' if args.quick else ''}- logs in {workdir}")

    def parts():
        if args.only in (None, "path"):
            out("a+b) leaf-spine 1x2, VM a (leaf1) -> VM b (leaf2): sdnvirt vs standalone OVS, "
                f"{args.rounds} interleaved round(s) ...")
            results["sdnvirt_path"], results["standalone_path"] = run_paths(args, workdir)
        if args.only in (None, "programming"):
            out("c) fat tree k=4, 4 tenants x 16 VMs: programming time, then warm restart ...")
            out("   (Mininet's 'Unable to contact the remote controller' is expected: it starts later)")
            results["programming"] = run_programming(args, workdir)
    errors = measured(results, parts)
    return report(results, errors, "fabric", stamp, "-quick" if args.quick else "", workdir, table,
                  "peer (standalone OVS)")


if __name__ == "__main__":
    sys.exit(main())
