"""Migration benchmark: how long a 1 ms ping stream to a moving VM goes silent.

In one run, on one fabric (leaf-spine, 2 spines, 3 leaves; c1 on leaf1 pings
m every millisecond; m moves between leaf2 and leaf3), interleaved rounds of:

- live: a coordinated live migration (``POST /v1/migrations``, the
  hypervisor agent of sdnvirt/emulation/agent.py): emulated pre-copy, then a
  stop-and-copy pause of ``--pause`` s;
- cold: the same move in cold mode (frozen for the whole copy);
- uncoordinated: the same interface move with the same pause, but nobody
  tells the controller: the old port disappears, the VM sends one
  gratuitous ARP from its new port (as QEMU's self-announce does once the
  VM runs again) and learning has to find it;
- silent: the same, without that gratuitous ARP (the issue's "interface
  moved, learning left to recover" taken literally, and a guest whose
  hypervisor does not announce it).  Its new interface has no IPv6 (whose
  link-up chatter would announce it), so m only ever answers and learning
  can only find it by sdnvirt's own probes (or by a frame it sends on its
  own, such as a TCP retransmission); SILENT_WINDOW s after the thaw m
  announces itself, so that the run can go on, and a gap that lasted until
  then is reported as at least that long.

During each move but the cold ones an HTTP keep-alive connection from
c1 to m asks every 20 ms: a failed request means a reset or stalled TCP
connection.  Prints a table with the ratios and targets (issue 4: live gap
<= 20 ms beyond the pause, >= 10x smaller than uncoordinated; 0 TCP
connections reset), writes bench/results/migration-<UTC time>[-quick].json
and a plot of one live migration's stream, migration-stream-<UTC time>.png.

    python bench/migration.py [--quick] [--rounds N] [--memory MB] [--pause S] [--wait-others S]

With ``--qemu``, the same for real QEMU guests migrated by QEMU itself: bench/migration_qemu.py.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

# The launcher imports Mininet and undoes its logger-class side effect: import it first.
from sdnvirt.emulation import lab, launcher  # noqa: E402,F401
from sdnvirt.emulation.agent import TIDY_AFTER, Agent  # noqa: E402
from sdnvirt.emulation.vmports import VMPorts  # noqa: E402
from sdnvirt import config as sdnconfig  # noqa: E402

from common import (  # noqa: E402  (bench/common.py)
    RESULTS_DIR, attempts, begin, fmt, machine, measured, median, out, ratio, report, sdnvirt_fabric, wait_others_argument)

TOPO = ("leafspine", {"spines": 2, "leaves": 3})
LEAVES = ("leaf2", "leaf3")
HTTP_PORT = 8080
STREAM_INTERVAL = 0.001
SILENT_WINDOW = 3.0
KINDS = ("live", "cold", "uncoordinated", "silent")
TENANTS = {"blue": {"segment": 101, "subnet": "10.5.0.0/24", "vms": {
    "c1": {"mac": "02:00:00:05:00:01", "ip": "10.5.0.11", "host": "leaf1"},
    "m": {"mac": "02:00:00:05:00:02", "ip": "10.5.0.12", "host": "leaf2"},
}}}


def move(emu, agent, kind: str, target: str, args, lead: float = 0.5) -> dict:
    """One move of m to ``target`` under the ping stream and the keep-alive client."""
    c1, m_ip = emu.host("c1"), TENANTS["blue"]["vms"]["m"]["ip"]
    copy = args.memory / args.copy_rate
    seconds = math.ceil(lead + copy + args.pause + 2.5 + (SILENT_WINDOW if kind == "silent" else 0))
    stream = lab.ping_stream(c1, m_ip, seconds=seconds, interval=STREAM_INTERVAL)
    client = None if kind == "cold" else lab.keepalive_client(c1, m_ip, HTTP_PORT, count=int(seconds / 0.02),
                                                                interval=0.02)
    time.sleep(lead)
    res: dict = {"kind": kind, "target": target, "started": time.time()}
    if kind in ("uncoordinated", "silent"):
        ports = VMPorts(emu, "m", 24, agent.plugged)
        try:
            new = ports.plug(target, "unco0")
            time.sleep(copy)           # the same pre-copy, unseen by the controller
            frozen_at = time.time()
            with ports.frozen():
                ports.swap(new)
                if kind == "silent":
                    ports.mute()
                time.sleep(max(0.0, frozen_at + args.pause - time.time()))
                ports.up()
            res.update(frozen_at=frozen_at, thawed_at=time.time())
            if kind == "uncoordinated":
                ports.announce()       # at once, as QEMU's self-announce would
            time.sleep(TIDY_AFTER)     # the old port goes when the agent's would
            ports.tidy()
            if kind == "silent":
                time.sleep(max(0.0, res["thawed_at"] + SILENT_WINDOW - time.time()))
                res["announced_at"] = time.time()
                ports.announce()
        finally:
            ports.close()
    else:
        rec = agent.request("m", target, kind)
        rec = agent.wait(rec["id"], timeout=30 + copy)
        if rec["outcome"] != "ok":
            raise RuntimeError(f"{kind} migration did not succeed: {rec}")
        res["record"] = rec
    times = lab.reply_times(stream, timeout=seconds + 30)
    gap, before, after = lab.longest_gap(times)
    res.update(gap_s=gap, gap_from=before, gap_to=after, replies=len(times), stream=times)
    if kind == "silent":
        res["found_before_announce"] = after < res["announced_at"]
    if client is not None:
        answers = client.communicate(timeout=seconds + 30)[0].split("\n")
        res["http"] = {"answered": sum(1 for a in answers if a == "m"),
                       "failed": [a for a in answers if a.startswith("FAIL")]}
    # m answers c1 again before the next move (learning may need a moment in the uncoordinated case)
    if not lab.wait_for(lambda: lab.ping(c1, m_ip, wait=0.3), timeout=15):
        raise RuntimeError(f"m unreachable after the {kind} move to {target}")
    out(f"   {kind:13s} -> {target}: longest gap {gap * 1000:7.1f} ms"
        + (f", record downtime {res['record']['downtime'] * 1000:.1f} ms" if "record" in res else "")
        + (f", HTTP {res['http']['answered']} answered / {len(res['http']['failed'])} failed" if "http" in res else ""))
    return res


def measure(args, workdir: Path) -> dict:
    doc = {"controller": {"openflow": {"port": lab.free_port()}},
           "migration": {"copy_rate": args.copy_rate, "stop_and_copy": args.pause},
           "tenants": TENANTS}
    doc["tenants"]["blue"]["vms"]["m"]["memory"] = args.memory
    cfg = sdnconfig.parse(doc, "bench-migration")
    with sdnvirt_fabric(doc, cfg, TOPO, workdir, args.wait_others) as run:
        emu, ctl = run.emu, run.ctl
        if not lab.wait_for(lambda: lab.ping(emu.host("c1"), TENANTS["blue"]["vms"]["m"]["ip"], wait=0.5), timeout=30):
            raise RuntimeError(f"c1 cannot reach m; controller log: {ctl.log_path}")
        agent = Agent(emu, ctl.api(), cfg).start()
        server = lab.serve_http(emu.host("m"), HTTP_PORT, "m")
        try:
            time.sleep(1.0)
            moves = []
            for i in range(args.rounds):
                kinds = list(KINDS)
                kinds = kinds[i % len(kinds):] + kinds[:i % len(kinds)]     # interleaved
                for kind in kinds:
                    target = LEAVES[1] if emu.placement["m"] == LEAVES[0] else LEAVES[0]
                    moves.append(move(emu, agent, kind, target, args))
                    time.sleep(1.0)
            run.guard.check(ctl, after=run.cursor)
            return {**run.res, "moves": moves}
        finally:
            server.terminate()
            agent.stop()


def plot_stream(mv: dict, png: Path) -> None:
    """Echo replies per 5 ms over time for one live migration, its phases shaded."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rec = mv["record"]
    t0 = rec["requested_at"]
    times = [t - t0 for t in mv["stream"]]
    fig, ax = plt.subplots(figsize=(13, 4))
    width = 0.005
    lo, hi = min(times), max(times)
    bins = [lo + i * width for i in range(int((hi - lo) / width) + 2)]
    ax.hist(times, bins=bins, color="tab:blue", label="echo replies to c1 (per 5 ms; 1 request/ms)")
    colors = {"preparation": "tab:gray", "state_capture": "tab:olive", "data_transfer": "tab:orange",
              "restoration": "tab:green"}
    for name, p in rec["phases"].items():
        if name in colors and p["end"] is not None:
            ax.axvspan(p["start"] - t0, p["end"] - t0, color=colors[name], alpha=0.15, label=name.replace("_", " "))
    frozen = "QMP: source STOP to destination RESUME" if rec.get("qemu") else "VM frozen (stop-and-copy)"
    ax.axvspan(rec["frozen_at"] - t0, rec["thawed_at"] - t0, color="red", alpha=0.3, label=frozen)
    ax.axvline(rec["flipped_at"] - t0, color="black", linestyle="--", label="paths flipped (switches confirmed)")
    ax.set_xlabel(f"seconds after the request (migration {rec['id']}: {rec['vm']} {rec['source']} -> "
                  f"{rec['target']}, longest gap {mv['gap_s'] * 1000:.1f} ms, "
                  f"record downtime {rec['downtime'] * 1000:.1f} ms)")
    ax.set_xlim(-0.2, rec["thawed_at"] - t0 + 0.5)
    ax.set_ylabel("replies")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)


def table(results: dict, args) -> list[list[str]]:
    moves = results.get("moves")
    if not moves:
        return []
    gaps = {k: [m["gap_s"] for m in moves if m["kind"] == k] for k in KINDS}
    live, cold, unco, silent = (median(gaps[k]) for k in KINDS)
    beyond = None if live is None else live - args.pause
    beyond_unco = None if unco is None else unco - args.pause
    downtime = median([m["record"]["downtime"] for m in moves if m["kind"] == "live"])
    failed = {k: sum(len(m["http"]["failed"]) for m in moves if m["kind"] == k) for k in KINDS if k != "cold"}
    silent_moves = [m for m in moves if m["kind"] == "silent"]
    found = sum(1 for m in silent_moves if m["found_before_announce"])
    r, rs = ratio(live, unco), ratio(live, silent)
    ms = lambda v: fmt(None if v is None else v * 1000, " ms", 1)  # noqa: E731
    rng = lambda xs: "-".join(f"{x * 1000:.1f}" for x in (min(xs), max(xs))) if xs else "n/a"  # noqa: E731
    return [
        ["live migration: longest gap (median)", ms(live), f"{ms(unco)} uncoord.", fmt(r, digits=3),
         "ratio <= 0.1", "yes" if r is not None and r <= 0.1 else "NO"],
        ["  against a silent guest", ms(live), f"{'>= ' if found < len(silent_moves) else ''}{ms(silent)} silent",
         fmt(rs, digits=3), "ratio <= 0.1", "yes" if rs is not None and rs <= 0.1 else "NO"],
        [f"  silent guest found by learning before it spoke (of {len(silent_moves)})", str(found),
         f"{SILENT_WINDOW:g} s window", "-", "-", "-"],
        ["  gap beyond the stop-and-copy pause", ms(beyond), f"{ms(beyond_unco)} uncoord.",
         fmt(ratio(beyond, beyond_unco), digits=3), "<= 20 ms", "yes" if beyond is not None and beyond <= 0.020 else "NO"],
        ["  min-max (live / uncoordinated)", rng(gaps["live"]), rng(gaps["uncoordinated"]), "-", "-", "-"],
        ["  record's downtime (median)", ms(downtime), "-", "-", "-", "-"],
        ["cold migration: longest gap (median)", ms(cold), f"copy {args.memory / args.copy_rate * 1000:.0f} ms",
         "-", "-", "-"],
        ["TCP requests failed during live moves", str(failed["live"]),
         f"{failed['uncoordinated']} uncoord. / {failed['silent']} silent", "-", "0",
         "yes" if failed["live"] == 0 else "NO"],
    ]


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--qemu" in argv:
        from migration_qemu import main as qemu_main
        return qemu_main([a for a in argv if a != "--qemu"])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one round of each kind")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of live, cold, uncoordinated and silent moves (default 3)")
    ap.add_argument("--memory", type=int, default=512, help="m's memory in MB (default 512)")
    ap.add_argument("--copy-rate", type=float, default=1000.0, help="MB/s of the emulated copy (default 1000)")
    ap.add_argument("--pause", type=float, default=0.1, help="stop-and-copy pause in s (default 0.1)")
    wait_others_argument(ap)
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds = 1
    started = begin("bench/migration.py", "sdnvirt-bench-migration")
    if started is None:
        return 2
    stamp, workdir = started
    suffix = "-quick" if args.quick else ""
    results: dict = {"started_utc": stamp, "quick": args.quick, "machine": machine(),
                     "params": {"rounds": args.rounds, "memory_mb": args.memory, "copy_rate_mb_s": args.copy_rate,
                                "stop_and_copy_s": args.pause, "stream_interval_s": STREAM_INTERVAL,
                                "topology": TOPO, "tenants": TENANTS}}
    out(f"sdnvirt migration benchmark {'(quick) ' if args.quick else ''}- logs in {workdir}")
    errors = measured(results, lambda: results.update(
        attempts("migration run", lambda i: measure(args, workdir / f"run{i + 1}"), tries=2)))
    live = [m for m in results.get("moves", []) if m["kind"] == "live"]
    plot = (RESULTS_DIR / f"migration-stream-{stamp}{suffix}.png", lambda png: plot_stream(live[0], png)) \
        if live else None
    return report(results, errors, "migration", stamp, suffix, workdir, lambda r: table(r, args),
                  peer="peer / context", plot=plot)


if __name__ == "__main__":
    sys.exit(main())
