"""QEMU live migration benchmark (``bench/migration.py --qemu``): a 1 ms ping stream to a QEMU guest
that QEMU itself migrates between hypervisors.

In one run, on one fabric (leaf-spine, 1 spine, 3 leaves: a tree, so that the
standalone peer's MAC learning floods no loop; c1 on leaf1 pings the guest
every millisecond and talks to its TCP echo every 10 ms; the guests move
between leaf2 and leaf3), interleaved rounds of:

- coordinated: ``POST /v1/migrations``; the hypervisor agent runs QEMU's
  migration and reports the source's STOP, on which the controller flips the
  paths (sdnvirt/emulation/qemu_migration.py);
- uncoordinated: the same QEMU migration (the same code) with the controller
  not told: it learns the guest's new port from QEMU's self-announce (RARPs)
  and the guest's own frames;

each for an idle guest ``q`` and one rewriting ``--dirty`` MiB/s (``qd``).
Then, on the same bridges detached from the controller and in fail-mode
standalone (OVS's MAC learning, the NORMAL action), the same migrations:
- standalone.

Per migration: echo requests lost (unanswered while a later one was
answered), the gap across QEMU's STOP->RESUME and how much longer it is
than that window (the guest is silent then, whatever the network does),
split into the guest's own time from RESUME to its first echo reply on its
new tap (a capture of every interface) and the rest, the network's; the
longest gap anywhere in the stream; QEMU's downtime and total time, RAM
transferred, and whether the TCP conversation broke.  Targets (issue 13): median lost <= 1 for coordinated
rounds; longest gap <= STOP->RESUME + 5 ms; 0 TCP failures.  Writes
bench/results/migration-qemu-<UTC time>[-quick].json and a plot of one
coordinated migration's stream with QMP's STOP and RESUME marked.

    python bench/migration.py --qemu [--quick] [--rounds N] [--dirty MIB_S] [--wait-others S]
"""

from __future__ import annotations

import argparse
import itertools
import subprocess
import tempfile
import time
from pathlib import Path

from sdnvirt.emulation import echo, lab, launcher  # noqa: F401  (the launcher first: see migration.py)
from sdnvirt.emulation.agent import Agent
from sdnvirt.emulation.qemu_migration import QemuMove
from sdnvirt import config as sdnconfig

from common import (
    RESULTS_DIR, attempts, begin, fmt, machine, measured, median, out, report, sdnvirt_fabric, wait_others_argument)
from migration import plot_stream

TOPO = ("leafspine", {"spines": 1, "leaves": 3})
LEAVES = ("leaf2", "leaf3")
SECONDS = 5             # of each stream; the migration starts LEAD s into it
LEAD = 1.0
KINDS = ("coordinated", "uncoordinated")


def tenants(dirty: int) -> dict:
    return {"blue": {"segment": 101, "subnet": "10.6.0.0/24", "vms": {
        "c1": {"mac": "02:00:00:06:00:01", "ip": "10.6.0.11", "host": "leaf1"},
        "q": {"mac": "02:00:00:06:00:02", "ip": "10.6.0.12", "host": "leaf2", "kind": "qemu", "memory": 128},
        "qd": {"mac": "02:00:00:06:00:03", "ip": "10.6.0.13", "host": "leaf2", "kind": "qemu", "memory": 128,
               "dirty": dirty},
    }}}


class Unreported:
    """What QemuMove needs of the hypervisor agent, with nobody told: the controller is left to learn."""

    def __init__(self, emu, settings):
        self.emu, self.settings, self.reports = emu, settings, []

    def _report(self, mid: int, event: str, **fields) -> dict:
        self.reports.append((event, fields))
        return {"phase": "data_transfer", "outcome": None}


def guest_replies(ip: str) -> subprocess.Popen:
    """A capture of the guest's echo replies on every interface of the machine (its taps included),
    into a file: thousands of lines a second would fill a pipe nobody reads, and tcpdump would stall."""
    output = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(["tcpdump", "-i", "any", "-nn", "-tt", f"src host {ip} and icmp[icmptype] = 0"],
                            stdout=output, stderr=subprocess.DEVNULL, text=True)
    proc.output = output
    lab.wait_tcpdump_ready()
    return proc


def first_reply_on(capture: subprocess.Popen, tap: str, after: float) -> float | None:
    """When the guest's first echo reply after ``after`` left it through ``tap``."""
    capture.terminate()
    capture.wait(timeout=30)
    capture.output.seek(0)
    lines = capture.output.read().splitlines()
    capture.output.close()
    return min((float(f[0]) for f in (line.split() for line in lines)
                if len(f) > 1 and f[1] == tap and float(f[0]) > after), default=None)


def migration_gap(times: list[float], stop: float, resume: float) -> tuple[float, float, float]:
    """(gap, last reply before, first reply after) of the longest silence overlapping STOP->RESUME."""
    return max(((b - a, a, b) for a, b in itertools.pairwise(times) if a <= resume and b >= stop),
               default=(0.0, stop, stop))


def move(emu, agent, kind: str, vm: str, ip: str, target: str, settings) -> dict:
    c1 = emu.host("c1")
    capture = guest_replies(ip)
    stream = lab.ping_stream(c1, ip, seconds=SECONDS)
    conversation = echo.talk(c1, ip, seconds=SECONDS - 1)
    time.sleep(LEAD)
    res: dict = {"kind": kind, "vm": vm, "target": target}
    if kind == "coordinated":
        rec = agent.wait(agent.request(vm, target, "live")["id"], timeout=40)
        if rec["outcome"] != "ok":
            raise RuntimeError(f"coordinated migration did not succeed: {rec}")
        res["record"], qemu = rec, rec["qemu"]
    else:
        unreported = Unreported(emu, settings)
        mv = QemuMove(unreported, {"id": 0, "vm": vm, "mode": "live", "target": target})
        try:
            mv.run()
        except BaseException:
            mv.undo()
            raise
        finally:
            mv.close()
        qemu = dict(unreported.reports)["thawed"]["qemu"]
    times, sent, lost = lab.stream_result(stream, timeout=SECONDS + 30)
    lines, broke = echo.talked(conversation)
    gap, before, after = migration_gap(times, qemu["stop"], qemu["resume"])
    # The guest's own share: from its RESUME to its first echo reply leaving through its new tap.
    first = first_reply_on(capture, emu.guests[vm].tap, qemu["resume"])
    guest = None if first is None else first - qemu["resume"]
    beyond = gap - qemu["stop_to_resume"]
    anywhere, elsewhere, _ = lab.longest_gap(times)
    res.update(qemu=qemu, sent=sent, lost=lost, gap_s=gap, gap_from=before, gap_to=after, beyond_s=beyond,
               guest_s=guest, network_s=None if guest is None else beyond - guest, longest_anywhere_s=anywhere,
               longest_anywhere_from=elsewhere, tcp_lines=lines, tcp_broke=broke, stream=times)
    if not lab.wait_for(lambda: lab.ping(c1, ip, wait=0.3), timeout=15):
        raise RuntimeError(f"{vm} unreachable after the {kind} migration to {target}")
    ms = lambda v: "  n/a" if v is None else f"{v * 1000:5.1f}"  # noqa: E731
    out(f"   {kind:13s} {vm:2s} -> {target}: lost {lost:3d}, gap {gap * 1000:6.1f} ms from STOP"
        f"{(before - qemu['stop']) * 1000:+.1f} ms = STOP->RESUME {qemu['stop_to_resume'] * 1000:5.1f} + guest "
        f"{ms(guest)} + network {ms(res['network_s'])} ms (QEMU downtime {qemu['downtime'] * 1000:5.1f} ms, "
        f"total {qemu['total_time'] * 1000:4.0f} ms, {qemu['ram_transferred'] / 2**20:5.1f} MiB; longest gap "
        f"anywhere {anywhere * 1000:.1f} ms at STOP{(elsewhere - qemu['stop']) * 1000:+.0f} ms)"
        + (f", TCP broke: {broke}" if broke else ""))
    return res


def where(ctl, vm: str) -> str | None:
    return next((v["switch"] for v in ctl.api().get("/topology")["vms"] if v["name"] == vm), None)


def measure(args, workdir: Path, moves: list) -> dict:
    """Appends each migration to ``moves`` as it is measured: a failure keeps what came before."""
    doc = {"controller": {"openflow": {"port": lab.free_port()}}, "migration": {"timeout": 30.0},
           "tenants": tenants(args.dirty)}
    cfg = sdnconfig.parse(doc, "bench-migration-qemu")
    addresses = {name: vm["ip"] for name, vm in doc["tenants"]["blue"]["vms"].items()}
    with sdnvirt_fabric(doc, cfg, TOPO, workdir, args.wait_others) as run:
        emu, ctl = run.emu, run.ctl
        for vm in ("q", "qd"):
            if not lab.wait_for(lambda vm=vm: lab.ping(emu.host("c1"), addresses[vm], wait=0.5), timeout=60):
                raise RuntimeError(f"c1 cannot reach {vm}; controller log: {ctl.log_path}")
        agent = Agent(emu, ctl.api(), cfg).start()
        try:
            for i in range(args.rounds):
                for kind in KINDS[i % 2:] + KINDS[:i % 2]:       # interleaved
                    for vm in ("q", "qd"):
                        target = LEAVES[1] if emu.placement[vm] == LEAVES[0] else LEAVES[0]
                        moves.append(move(emu, agent, kind, vm, addresses[vm], target, cfg.migration))
                        # The controller knows where the guest is before the next round asks it.
                        if not lab.wait_for(lambda vm=vm, target=target: where(ctl, vm) == target, timeout=15):
                            raise RuntimeError(f"the controller did not locate {vm} on {target}")
            run.guard.check(ctl, after=run.cursor)
        finally:
            agent.stop()
        # The standalone peer: the same bridges, their controller gone, OVS's own MAC learning.
        for sw in emu.net.switches:
            subprocess.run(["ovs-vsctl", "--timeout=5", "del-controller", sw.name, "--", "set-fail-mode", sw.name,
                            "standalone", "--", "set", "bridge", sw.name, "protocols=OpenFlow13"], check=True,
                           capture_output=True, timeout=10)
            for cmd in (["del-flows", sw.name], ["add-flow", sw.name, "priority=0,actions=NORMAL"]):
                subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", *cmd], check=True, capture_output=True, timeout=10)
        for _ in range(args.rounds):
            for vm in ("q", "qd"):
                target = LEAVES[1] if emu.placement[vm] == LEAVES[0] else LEAVES[0]
                moves.append(move(emu, None, "standalone", vm, addresses[vm], target, cfg.migration))
        run.guard.check()
        return run.res


def table(results: dict, args) -> list[list[str]]:
    moves = results.get("moves")
    if not moves:
        return []
    ms = lambda v: fmt(None if v is None else v * 1000, " ms", 1)  # noqa: E731
    rows = []
    for vm, load in (("q", "idle guest"), ("qd", f"guest dirtying {args.dirty} MiB/s")):
        of = {k: [m for m in moves if m["kind"] == k and m["vm"] == vm] for k in (*KINDS, "standalone")}

        def med(key: str, kind: str = "coordinated", of=of) -> float | None:
            return median([m[key] for m in of[kind] if m.get(key) is not None])

        def peers(key: str, f, med=med) -> str:
            return f"{f(med(key, 'uncoordinated'))} uncoord. / {f(med(key, 'standalone'))} standalone"
        lost, beyond, network = med("lost"), med("beyond_s"), med("network_s")
        coordinated = of["coordinated"]
        qemu = lambda key, ms_=coordinated: median([m["qemu"][key] for m in ms_])  # noqa: E731
        broke = {k: sum(1 for m in ms_ if m["tcp_broke"]) for k, ms_ in of.items()}
        rows += [
            [f"{load}: echo requests lost (median, coordinated)", fmt(lost, digits=3),
             peers("lost", lambda v: fmt(v, digits=3)), "-", "<= 1", "yes" if lost is not None and lost <= 1 else "NO"],
            ["  gap across STOP->RESUME (median)", ms(med("gap_s")), peers("gap_s", ms), "-", "-", "-"],
            ["  gap beyond QEMU's STOP->RESUME (median)", ms(beyond), peers("beyond_s", ms), "-", "<= 5 ms",
             "yes" if beyond is not None and beyond <= 0.005 else "NO"],
            # Coordinated, the requests of the silence wait in the new tap: this is the guest's own time.
            # The peers' includes finding the new port (no request waits there).
            ["    RESUME to the guest's first reply on its new tap", ms(med("guest_s")), peers("guest_s", ms),
             "-", "-", "-"],
            ["    the rest: the network's", ms(network), peers("network_s", ms), "-", "<= 5 ms",
             "yes" if network is not None and network <= 0.005 else "NO"],
            ["  QEMU's STOP->RESUME / its downtime (median)", ms(qemu("stop_to_resume")), ms(qemu("downtime")),
             "-", "-", "-"],
            ["  QEMU's total time / RAM sent (median)", ms(qemu("total_time")),
             fmt(median([m["qemu"]["ram_transferred"] / 2**20 for m in coordinated]), " MiB", 1), "-", "-", "-"],
            ["  longest gap anywhere in the stream (median)", ms(med("longest_anywhere_s")),
             peers("longest_anywhere_s", ms), "-", "-", "-"],
            ["  TCP conversations broken (coordinated)", str(broke["coordinated"]),
             f"{broke['uncoordinated']} uncoord. / {broke['standalone']} standalone", "-", "0",
             "yes" if broke["coordinated"] == 0 else "NO"],
        ]
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one round")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of every kind and guest (default 3)")
    ap.add_argument("--dirty", type=int, default=32, metavar="MIB_S",
                    help="what the dirtying guest rewrites, MiB/s (default 32)")
    wait_others_argument(ap)
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds = 1
    started = begin("bench/migration.py --qemu", "sdnvirt-bench-migration-qemu")
    if started is None:
        return 2
    stamp, workdir = started
    suffix = "-quick" if args.quick else ""
    results: dict = {"started_utc": stamp, "quick": args.quick, "machine": machine(),
                     "params": {"rounds": args.rounds, "dirty_mib_s": args.dirty, "stream_s": SECONDS,
                                "topology": TOPO, "tenants": tenants(args.dirty)}}
    out(f"sdnvirt QEMU migration benchmark {'(quick) ' if args.quick else ''}- logs in {workdir}")
    moves: list = []
    results["moves"] = moves

    def attempt(i: int) -> dict:
        moves.clear()       # a disturbed attempt's figures are void
        return measure(args, workdir / f"run{i + 1}", moves)
    errors = measured(results, lambda: results.update(attempts("QEMU migration run", attempt, tries=2)))
    coordinated = [m for m in results.get("moves", []) if m["kind"] == "coordinated"]
    plot = (RESULTS_DIR / f"migration-qemu-stream-{stamp}{suffix}.png", lambda png: plot_stream(coordinated[0], png)) \
        if coordinated else None
    return report(results, errors, "migration-qemu", stamp, suffix, workdir, lambda r: table(r, args),
                  peer="peers", plot=plot)
