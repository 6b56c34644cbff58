"""High-availability benchmark: how long a switch goes without a master when
its controller dies, and what the traffic and the flows see of it.

Three controller instances on a three-member etcd (lease_ttl 2 s), one
leaf-spine fabric (2 spines, 3 leaves) connected to all of them, the
integration tests' two tenants. Interleaved rounds of:

- kill: the master of leaf1 killed with SIGKILL: its lease expires, the
  survivors claim its switches;
- term: the same instance stopped with SIGTERM: it revokes its lease, the
  survivors claim at once;
- none (the peer): no instance stopped.

In each round web1 (leaf1) pings web2 (leaf2) every millisecond, and right
after the signal a VM on leaf1 is added through the API of an instance
that did not master leaf1: the round measures the time from the signal to
the survivors' ``role_changed`` (MASTER) events for every switch the
victim mastered, to the new VM's flows seen in leaf1's table (a change
programmed by the new master; in the peer rounds by the unchanged master),
the echo requests lost, and the flow changes the instances made (the VM's
own, which the peer rounds count, and any rewrite beyond them). The VM is
then deleted, the stopped instance started again and the cluster settled
(it takes its share of switches back: the flow changes of that handback
are counted too).  At the signal, web3's server (leaf1: a backend of the
service web whose switch the victim masters) is stopped as well: the round
measures when a survivor finds it down (in the peer rounds, the unchanged
master), against lease_ttl + fall x interval + timeout after a kill -9.

Then rounds of migrations across instances: db1 moves between leaf1 and
leaf2 under a 1 ms ping stream from db2 (leaf3), coordinated either by an
instance that masters neither leaf3 nor the target ("elsewhere": the
others prepare and flip it when etcd brings them its word) or by the
master of leaf3 (the peer: the client's switch flips with the
coordinator's own). Each measures the echo requests lost and the longest
gap beyond the record's downtime (what waiting for etcd adds).

First, the anchor for all of it: how long after the last renewal etcd
itself deletes a key of a lease of lease_ttl (its lessor looks for expired
leases on a loop of its own).

Targets (issue 14): kill -9 -> programmed <= 2.5 s, SIGTERM -> MASTER
<= 0.3 s, 0 packets lost, 0 flows rewritten. Writes
bench/results/ha-<UTC time>[-quick].json and a timeline of one kill round,
ha-timeline-<UTC time>.png.

    python bench/ha.py [--quick] [--rounds N] [--wait-others S]
"""

from __future__ import annotations

import argparse
import re
import signal
import sys
import time
from pathlib import Path

# The launcher imports Mininet and undoes its logger-class side effect: import it first.
from sdnvirt.emulation import lab, launcher  # noqa: E402,F401
from sdnvirt.emulation.agent import Agent  # noqa: E402
from sdnvirt.emulation.clusterlab import ClusterLab  # noqa: E402
from sdnvirt.store import EtcdStore  # noqa: E402

from common import (  # noqa: E402  (bench/common.py)
    RESULTS_DIR, BridgeGuard, begin, ensure_no_clash, fmt, machine, measured, median, out,
    ratio, report, wait_quiet, wait_reconcile_quiet, wait_others_argument)

TOPO = ("leafspine", {"spines": 2, "leaves": 3})
LEASE = 2.0
STREAM_S = 6
LEAD = 1.0              # s of stream before the signal
KINDS = ("kill", "term", "none")
SIGNALS = {"kill": signal.SIGKILL, "term": signal.SIGTERM}
TENANTS = {
    "blue": {"segment": 101, "subnet": "10.1.0.0/24", "vms": {
        "web1": {"mac": "02:00:00:00:01:01", "ip": "10.1.0.11", "host": "leaf1"},
        "web2": {"mac": "02:00:00:00:01:02", "ip": "10.1.0.12", "host": "leaf2"},
        "web3": {"mac": "02:00:00:00:01:03", "ip": "10.1.0.13", "host": "leaf1"}}},
    "red": {"segment": 102, "subnet": "10.1.0.0/24", "vms": {
        "db1": {"mac": "02:00:00:00:02:01", "ip": "10.1.0.11", "host": "leaf1"},
        "db2": {"mac": "02:00:00:00:02:02", "ip": "10.1.0.12", "host": "leaf3"}}},
}
# web3 (leaf1, a switch of the victim) dies with it: a survivor must find it down once it masters leaf1.
CHECK = {"type": "tcp", "interval": 0.2, "timeout": 0.2, "rise": 2, "fall": 2}
TENANTS["blue"]["services"] = {"web": {"vip": "10.1.0.100", "port": 80, "health_check": CHECK, "backends": [
    {"vm": "web2", "port": 8080}, {"vm": "web3", "port": 8080}]}}
DYING = "web3"
ADDED = {"name": "web9", "mac": "02:00:00:00:01:09", "ip": "10.1.0.19", "host": "leaf1"}


def flows_seen(switch: str, mac: str, present: bool, timeout: float) -> float | None:
    """When (wall clock) ``switch``'s tables first held (or no longer held) a flow naming ``mac``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(mac in line for line in lab.dump_flows(switch)) == present:
            return time.time()
        time.sleep(0.01)
    return None


def stream_losses(proc, timeout: float) -> tuple[list[float], int, int, int]:
    """(reply times, echo requests sent, lost, unanswered at the end) of a ping_stream():
    lost are the requests before the last one answered that got no reply; the
    last few may still be in flight when ping's deadline ends it, in every round."""
    proc.wait(timeout=timeout)
    proc.output.seek(0)
    text = proc.output.read()
    proc.output.close()
    times = [float(t) for t in re.findall(r"^\[(\d+\.\d+)\] \d+ bytes from", text, re.M)]
    answered = {int(s) for s in re.findall(r"^\[\d+\.\d+\] \d+ bytes from .*icmp_seq=(\d+)", text, re.M)}
    sent = lab.ping_stats(text)[0]
    last = max(answered, default=0)
    return times, sent, last - len(answered), sent - last


def changes(c: ClusterLab, names: list[str], cursors: dict[str, int]) -> dict[str, int]:
    """Flow, group and meter changes the instances' reconciles made since their cursors."""
    total = {"flow_add": 0, "flow_modify": 0, "flow_delete": 0, "other": 0}
    for n in names:
        for e in c.ctls[n].events("reconciled", after=cursors.get(n, 0)):
            f = e["fields"]
            for k in ("flow_add", "flow_modify", "flow_delete"):
                total[k] += f[k]
            total["other"] += sum(v for k, v in f.items() if k.startswith(("group_", "meter_")))
    return total


def settle(c: ClusterLab) -> None:
    if not lab.wait_for(c.settled, 30, 0.2):
        raise RuntimeError(f"switches without exactly one master: {c.masters()}")
    for n in c.alive():
        wait_reconcile_quiet(c.ctls[n], quiet=1.5, timeout=20)


def backend_up_everywhere(c: ClusterLab, vm: str, timeout: float) -> bool:
    def up() -> bool:
        return all(h["up"] for n in c.alive() for h in c.ctls[n].api().get("/health") if h["vm"] == vm)
    return lab.wait_for(up, timeout, 0.1)


def one_round(c: ClusterLab, kind: str) -> dict:
    victim = c.master_of("leaf1")
    theirs = sorted(d for d, m in c.masters().items() if m == [victim])
    others = [n for n in c.alive() if n != victim]
    writer = others[0]
    survivors = others if kind != "none" else c.alive()
    cursors = {n: c.ctls[n].cursor() for n in c.alive()}
    stream = lab.ping_stream(c.emu.host("web1"), TENANTS["blue"]["vms"]["web2"]["ip"], seconds=STREAM_S)
    time.sleep(LEAD)
    t0 = time.time()
    if kind != "none":
        c.ctls[victim].send(SIGNALS[kind])
    c.servers.pop(DYING).terminate()
    c.ctls[writer].api().post("/tenants/blue/vms", ADDED)
    written = time.time()
    programmed = flows_seen(ADDED["host"], ADDED["mac"], True, LEASE + 8)
    taken = c.taken_over(theirs if kind != "none" else (), others, cursors, LEASE + 5)
    found = [e for n in survivors if (e := c.ctls[n].wait_event(
        "backend_down", {"backend": f"{DYING}:8080"}, cursors[n], timeout=LEASE + 5)) is not None]
    times, sent, lost, unanswered = stream_losses(stream, timeout=STREAM_S + 30)
    if kind != "none":
        c.ctls[victim].stop()   # reaps it: it has ended already
    settle(c)
    res = {"kind": kind, "victim": victim, "victim_switches": theirs, "writer": writer, "signalled": t0,
           "written": written, "programmed": programmed, "taken": taken,
           "takeover_s": max(taken.values()) - t0 if taken and len(taken) == len(theirs) else None,
           "programmed_s": None if programmed is None else programmed - t0,
           "sent": sent, "lost": lost, "unanswered_at_the_end": unanswered,
           "gap_s": lab.longest_gap(times)[0] if len(times) > 1 else None, "stream": times,
           "backend_down_s": min(e["time"] for e in found) - t0 if found else None,
           "changes": changes(c, survivors, cursors)}
    # Back to where the round started: the VM gone, the instance back with its share of switches.
    c.ctls[writer].api().delete(f"/tenants/blue/vms/{ADDED['name']}")
    if flows_seen(ADDED["host"], ADDED["mac"], False, 15) is None:
        raise RuntimeError(f"{ADDED['name']}'s flows still in {ADDED['host']} after its deletion")
    settle(c)
    if kind != "none":
        before = {n: c.ctls[n].cursor() for n in c.alive()}
        c.ctls[victim].start()
        settle(c)
        res["handback_changes"] = changes(c, c.alive(), before)
    c.servers[DYING] = lab.serve_http(c.emu.host(DYING), 8080, DYING)
    if not backend_up_everywhere(c, DYING, 15):
        raise RuntimeError(f"{DYING} not up again on every instance")
    settle(c)
    out(f"   {kind:4s} ({victim}, {len(theirs)} switches): MASTER after {fmt(res['takeover_s'], ' s')}, "
        f"programmed after {fmt(res['programmed_s'], ' s')}, "
        f"{DYING} down after {fmt(res['backend_down_s'], ' s')}, lost {res['lost']} of {sent}, "
        f"flow changes {res['changes']}" + (f", handback {res['handback_changes']}" if kind != "none" else ""))
    return res


MIGRATING, CLIENT = "db1", "db2"       # db2 is on leaf3
COORDINATORS = ("elsewhere", "client's master")


def one_migration(c: ClusterLab, how: str) -> dict:
    """``MIGRATING`` moved to the other of leaf1 and leaf2, coordinated as ``how`` says."""
    target = "leaf2" if c.emu.placement[MIGRATING] == "leaf1" else "leaf1"
    client = c.master_of("leaf3")
    coordinator = client if how != "elsewhere" else \
        next((n for n in c.alive() if n not in (client, c.master_of(target))), None)
    if coordinator is None:
        raise RuntimeError(f"one instance masters both leaf3 and {target}: no instance is elsewhere")
    api = c.ctls[coordinator].api()
    stream = lab.ping_stream(c.emu.host(CLIENT), TENANTS["red"]["vms"][MIGRATING]["ip"], seconds=3)
    time.sleep(0.5)
    agent = Agent(c.emu, api, c.cfg)
    rec = agent.wait(agent.request(MIGRATING, target)["id"], timeout=20)
    times, sent, lost, _ = stream_losses(stream, timeout=30)
    gap = lab.longest_gap(times)[0] if len(times) > 1 else None
    res = {"how": how, "coordinator": coordinator, "target": target, "outcome": rec["outcome"], "sent": sent,
           "lost": lost, "gap_s": gap, "downtime_s": rec["downtime"],
           "beyond_s": None if gap is None or rec["downtime"] is None else gap - rec["downtime"]}
    if rec["outcome"] != "ok":
        raise RuntimeError(f"migration {rec['id']} of {MIGRATING}: {rec['outcome']}: {rec['reason']}")
    settle(c)
    out(f"   migration coordinated {how} ({coordinator}) to {target}: lost {lost} of {sent}, "
        f"gap {fmt(gap, ' s')}, downtime {fmt(rec['downtime'], ' s')}")
    return res


def lease_expiry(c: ClusterLab, rounds: int) -> list[float]:
    """Seconds from a lease's last renewal to its key's deletion, renewed at different moments."""
    store = EtcdStore(c.etcd.endpoints)
    out = []
    for i in range(rounds):
        lease = store.grant(LEASE)
        store.put_leased(f"/bench/lease/{i}", i, lease)
        time.sleep(0.1 + (i % 4) * 0.13)
        store.keepalive(lease)
        renewed = time.monotonic()
        while store.get(f"/bench/lease/{i}") is not None and time.monotonic() - renewed < LEASE + 5:
            time.sleep(0.005)
        out.append(time.monotonic() - renewed)
    return out


def measure(args, workdir: Path) -> dict:
    doc = {"controller": {"fabric": {"settle": 1.0}}, "tenants": TENANTS}
    waited = wait_quiet(args.wait_others)
    c = ClusterLab(workdir, doc, *TOPO, lease_ttl=LEASE)
    ensure_no_clash(list(c.emu.build_topo().switches()))
    guard = None
    try:
        c.start()
        c.servers = {vm: lab.serve_http(c.emu.host(vm), 8080, vm) for vm in ("web2", DYING)}
        guard = BridgeGuard(list(c.emu.topo.switches()))
        settle(c)
        if not lab.wait_for(lambda: lab.ping(c.emu.host("web1"), TENANTS["blue"]["vms"]["web2"]["ip"]), 20):
            raise RuntimeError("web1 cannot reach web2")
        expiry = lease_expiry(c, 2 * args.rounds)
        out(f"   etcd deletes a {LEASE:g} s lease's key {min(expiry):.3f}-{max(expiry):.3f} s after its last renewal")
        rounds = []
        for i in range(args.rounds):
            kinds = KINDS[i % len(KINDS):] + KINDS[:i % len(KINDS)]     # interleaved
            for kind in kinds:
                rounds.append(one_round(c, kind))
        migrations = [one_migration(c, how) for i in range(args.rounds)
                      for how in (COORDINATORS if i % 2 else COORDINATORS[::-1])]
        guard.check()
        return {"waited_for_other_runs_s": waited, "lease_expiry_s": expiry, "rounds": rounds,
                "migrations": migrations}
    finally:
        for server in getattr(c, "servers", {}).values():
            server.terminate()
        if guard is not None:
            guard.release(c.emu.net)
        c.stop()


def plot_timeline(rnd: dict, png: Path) -> None:
    """Echo replies per 5 ms around one kill -9, with the takeover's events."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    t0 = rnd["signalled"]
    times = [t - t0 for t in rnd["stream"]]
    fig, ax = plt.subplots(figsize=(13, 4))
    width = 0.005
    lo, hi = min(times), max(times)
    ax.hist(times, bins=[lo + i * width for i in range(int((hi - lo) / width) + 2)], color="tab:blue",
            label="echo replies web1 -> web2 (per 5 ms; 1 request/ms)")
    ax.axvline(0, color="red", label=f"SIGKILL to {rnd['victim']}")
    ax.axvline(LEASE, color="gray", linestyle=":", label=f"lease_ttl ({LEASE:g} s) after the kill")
    ax.axvline(rnd["written"] - t0, color="tab:purple", linestyle="-.", label=f"{ADDED['name']} added (API answered)")
    for i, t in enumerate(sorted(rnd["taken"].values())):
        ax.axvline(t - t0, color="tab:green", label="a survivor MASTER of a victim's switch" if i == 0 else None)
    if rnd["programmed"] is not None:
        ax.axvline(rnd["programmed"] - t0, color="black", linestyle="--",
                   label=f"{ADDED['name']}'s flows in {ADDED['host']} (new master)")
    ax.set_xlabel(f"seconds after the kill ({len(rnd['victim_switches'])} switches moved, "
                  f"{rnd['lost']} of {rnd['sent']} echo requests lost, longest gap "
                  f"{fmt(None if rnd['gap_s'] is None else rnd['gap_s'] * 1000, ' ms', 1)})")
    ax.set_ylabel("replies")
    ax.set_xlim(-LEAD, STREAM_S - LEAD)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)


def table(results: dict) -> list[list[str]]:
    rounds = results.get("rounds")
    if not rounds:
        return []
    by = {k: [r for r in rounds if r["kind"] == k] for k in KINDS}
    med = lambda k, f: median([r[f] for r in by[k] if r[f] is not None])  # noqa: E731
    s = lambda v: fmt(v, " s")  # noqa: E731
    n = {k: len(by[k]) for k in KINDS}
    prog = {k: med(k, "programmed_s") for k in KINDS}
    take = {k: med(k, "takeover_s") for k in ("kill", "term")}
    lost = {k: sum(r["lost"] for r in by[k]) for k in KINDS}
    sent = {k: sum(r["sent"] for r in by[k]) for k in KINDS}
    moved = {k: sum(1 for r in by[k] if r["takeover_s"] is not None) for k in ("kill", "term")}
    flows = {k: [sum(r["changes"][f] for f in ("flow_add", "flow_modify", "flow_delete")) + r["changes"]["other"]
                 for r in by[k]] for k in KINDS}
    base = median(flows["none"])
    extra = {k: None if base is None or not flows[k] else max(flows[k]) - base for k in ("kill", "term")}
    handback = [sum(r["handback_changes"].values()) for k in ("kill", "term") for r in by[k]]
    down = {k: med(k, "backend_down_s") for k in KINDS}
    bound = LEASE + CHECK["fall"] * CHECK["interval"] + CHECK["timeout"]
    yes = lambda ok: "yes" if ok else "NO"  # noqa: E731
    expiry = results.get("lease_expiry_s") or [None]
    return [
        [f"etcd: a {LEASE:g} s lease's key deleted after its last renewal (median; the anchor)", s(median(expiry)),
         f"{s(min(expiry))} - {s(max(expiry))}", "-", "-", "-"],
        [f"kill -9: a survivor MASTER of all its switches (median of {n['kill']})", s(take["kill"]),
         f"{moved['kill']}/{n['kill']} moved", "-", f"<= {LEASE + 0.5:g} s",
         yes(take["kill"] is not None and take["kill"] <= LEASE + 0.5 and moved["kill"] == n["kill"])],
        ["kill -9: the added VM programmed by the new master", s(prog["kill"]), f"{s(prog['none'])} no failover",
         fmt(ratio(prog["kill"], prog["none"]), digits=1), "<= 2.5 s",
         yes(prog["kill"] is not None and prog["kill"] <= 2.5)],
        [f"SIGTERM: a survivor MASTER of all its switches (median of {n['term']})", s(take["term"]),
         f"{moved['term']}/{n['term']} moved", "-", "<= 0.3 s", yes(take["term"] is not None and take["term"] <= 0.3)],
        ["SIGTERM: the added VM programmed by the new master", s(prog["term"]), f"{s(prog['none'])} no failover",
         fmt(ratio(prog["term"], prog["none"]), digits=1), "-", "-"],
        ["echo requests lost, 1 ms stream (kill / term)",
         f"{lost['kill']}/{sent['kill']} / {lost['term']}/{sent['term']}",
         f"{lost['none']}/{sent['none']} no failover", "-", "0", yes(lost["kill"] == lost["term"] == 0)],
        ["flow changes beyond the added VM's (kill / term, worst round)", f"{extra['kill']} / {extra['term']}",
         f"{base} for the VM, no failover", "-", "0", yes(extra["kill"] == 0 and extra["term"] == 0)],
        [f"kill -9: {DYING}, killed with it on its switch, found down", s(down["kill"]),
         f"{s(down['none'])} no failover", fmt(ratio(down["kill"], down["none"]), digits=1),
         f"<= {bound:g} s", yes(down["kill"] is not None and down["kill"] <= bound)],
        [f"SIGTERM: {DYING} found down", s(down["term"]), f"{s(down['none'])} no failover",
         fmt(ratio(down["term"], down["none"]), digits=1), "-", "-"],
        ["flow changes when the instance comes back (all rounds)", str(sum(handback)) if handback else "n/a",
         "-", "-", "0", yes(handback and sum(handback) == 0)],
        *migration_rows(results.get("migrations", [])),
    ]


def migration_rows(migrations: list[dict]) -> list[list[str]]:
    if not migrations:
        return []
    by = {how: [m for m in migrations if m["how"] == how] for how in COORDINATORS}
    lost = {how: median([m["lost"] for m in ms]) for how, ms in by.items()}
    beyond = {how: median([m["beyond_s"] * 1000 for m in ms if m["beyond_s"] is not None]) for how, ms in by.items()}
    mine, peer = COORDINATORS
    return [
        [f"migration coordinated {mine}: echo requests lost (median of {len(by[mine])})", fmt(lost[mine]),
         f"{fmt(lost[peer])} by the client's master", "-", "-", "-"],
        ["  its longest gap beyond the record's downtime (median)", fmt(beyond[mine], " ms", 1),
         f"{fmt(beyond[peer], ' ms', 1)} by the client's master", "-", "-", "-"],
    ]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one round of each kind")
    ap.add_argument("--rounds", type=int, default=5, help="rounds of kill, term and none (default 5)")
    wait_others_argument(ap)
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds = 1
    started = begin("bench/ha.py", "sdnvirt-bench-ha")
    if started is None:
        return 2
    stamp, workdir = started
    suffix = "-quick" if args.quick else ""
    results: dict = {"started_utc": stamp, "quick": args.quick, "machine": machine(),
                     "params": {"rounds": args.rounds, "lease_ttl_s": LEASE, "stream_s": STREAM_S,
                                "instances": 3, "etcd_members": 3, "topology": TOPO, "added_vm": ADDED}}
    out(f"sdnvirt HA benchmark {'(quick) ' if args.quick else ''}- logs in {workdir}")
    errors = measured(results, lambda: results.update(measure(args, workdir / "run")))
    kills = [r for r in results.get("rounds", []) if r["kind"] == "kill" and r["taken"]]
    plot = (RESULTS_DIR / f"ha-timeline-{stamp}{suffix}.png", lambda png: plot_timeline(kills[0], png)) \
        if kills else None
    return report(results, errors, "ha", stamp, suffix, workdir, table, peer="peer", plot=plot)


if __name__ == "__main__":
    sys.exit(main())
