"""``sdnvirt demo``: the embedded default, end to end, then nothing left behind.

Starts the controller daemon, a 2-spine x 4-leaf fabric and two tenants that
use the same IP range, and shows with real traffic who reaches whom, what is
isolated, the throughput inside a tenant, a security group at a VM's port,
a tenant's own API token, the load balancer and its failover, a live
migration under a 1 ms ping stream (of a QEMU guest by QEMU itself where one
can boot, else of a namespace VM), and a few of the metrics the daemon
exports. Then, on a fabric of its own, two controller instances on a
three-member etcd: the master of a switch killed under a ping stream.
"""

from __future__ import annotations

import copy
import itertools
import shutil
import signal
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from .. import config
from ..api.client import ApiError
from ..migration import describe
from . import lab
from .agent import Agent
from .clusterlab import ClusterLab
from .launcher import Emulation, build_topo, wait_connected
from .qemu import cannot_boot
from .underlay import vtep_plan

CLUSTER_LEASE = 2.0

# Two tenants on the same subnet; web1/db1 and web2/db2 even share addresses.
DEMO_TENANTS: dict[str, Any] = {
    "blue": {"segment": 101, "subnet": "10.1.0.0/24", "vms": {
        "web1": {"mac": "02:00:00:00:01:01", "ip": "10.1.0.11", "host": "leaf1"},
        "web2": {"mac": "02:00:00:00:01:02", "ip": "10.1.0.12", "host": "leaf2"},
        "web3": {"mac": "02:00:00:00:01:03", "ip": "10.1.0.13", "host": "leaf3"},
        # The VM that live-migrates: a QEMU guest where one can boot (run_demo decides).
        "app1": {"mac": "02:00:00:00:01:04", "ip": "10.1.0.14", "host": "leaf2"},
    }, "services": {"www": {
        "vip": "10.1.0.100", "port": 80,
        "backends": [{"vm": "web2", "port": 8080, "weight": 2}, {"vm": "web3", "port": 8080}],
        "health_check": {"type": "tcp", "interval": 0.2, "timeout": 0.2, "rise": 2, "fall": 2}}}},
    "red": {"segment": 102, "subnet": "10.1.0.0/24", "vms": {
        "db1": {"mac": "02:00:00:00:02:01", "ip": "10.1.0.11", "host": "leaf1"},
        "db2": {"mac": "02:00:00:00:02:02", "ip": "10.1.0.12", "host": "leaf3"},
        "db3": {"mac": "02:00:00:00:02:03", "ip": "10.1.0.14", "host": "leaf4"},
    }},
}


def _out(line: str = "") -> None:
    print(line, flush=True)


def run_demo(keep_logs: bool = False, encap: str = "vlan") -> int:
    if not lab.is_root():
        _out("sdnvirt demo needs root (it creates Open vSwitch bridges and network namespaces)")
        return 2
    lab.ensure_ovs()
    topo = ("leafspine", {"spines": 2, "leaves": 4})
    doc: dict = {"controller": {"openflow": {"port": lab.free_port()}, "fabric": {"encapsulation": encap}},
                 "tenants": copy.deepcopy(DEMO_TENANTS)}
    if encap == "vxlan":
        doc["hypervisors"] = vtep_plan(build_topo(*topo).hypervisors())
    cfg = config.parse(doc, "demo")
    # QEMU guests sit on taps of the VLAN mode's bridges; VXLAN mode's hypervisors keep namespace VMs.
    why_not = cannot_boot(cfg) if encap == "vlan" else "QEMU guests are shown in VLAN mode"
    if why_not is None:
        doc["tenants"]["blue"]["vms"]["app1"].update(kind="qemu", memory=128)
        cfg = config.parse(doc, "demo")
    ctl = lab.ControllerProcess(doc)
    emu = Emulation(cfg, *topo, controller_port=ctl.port)
    failures = 0
    try:
        _out("sdnvirt demo: controller + 2 spines x 4 leaves + tenants blue and red, both on 10.1.0.0/24")
        ctl.start()
        started = time.monotonic()
        emu.start()
        wait_connected(emu.net)
        _out(f"  fabric up and programmed in {time.monotonic() - started:.1f} s "
             f"(OpenFlow 1.3, userspace datapath, fail-mode secure)")
        if encap == "vxlan":
            _out("  VXLAN mode: each leaf is a hypervisor with its own Open vSwitch and a VTEP "
                 "(192.168.254.1-4); the spines are Linux bridges, no OpenFlow, no tenant state")
            # The underlay's spanning tree opens its ports after two forward delays.
            lab.wait_for(lambda: all(lab.reachable(emu.host(a), str(t.vms[b].ip))
                                     for t in cfg.tenants.values() for a, b in itertools.pairwise(sorted(t.vms))),
                         timeout=60, interval=1)
        if why_not is None:
            failures += _guest_booted(emu, cfg, started)
        failures += _reachability(emu, cfg)
        failures += _isolation(emu, cfg)
        failures += _throughput(emu, cfg)
        failures += _security_group(emu, ctl, cfg)
        failures += _tenant_token(ctl)
        failures += _load_balancer(emu, ctl)
        failures += _migration(emu, ctl, cfg, why_not)
        failures += _metrics(ctl)
    finally:
        emu.stop()
        ctl.stop()
        if keep_logs:
            _out(f"\ncontroller config and log kept in {ctl.workdir}")
        else:
            shutil.rmtree(ctl.workdir, ignore_errors=True)
    failures += _cluster(keep_logs)
    _out("\nall checks passed" if not failures else f"\n{failures} check(s) FAILED")
    return 0 if not failures else 1


def _guest_booted(emu, cfg, started: float) -> int:
    """A QEMU guest boots in the background: it answers once it has announced itself."""
    ip = str(cfg.tenants["blue"].vms["app1"].ip)
    if not lab.wait_for(lambda: lab.ping(emu.host("web1"), ip, wait=0.5), timeout=30):
        _out("  QEMU guest app1 did not answer within 30 s")
        return 1
    _out(f"  QEMU guest app1 (TCG) booted and answering {time.monotonic() - started:.1f} s after the start")
    return 0


def _reachability(emu, cfg) -> int:
    _out("\nReachability inside each tenant (ping by IP; ARP answered by the edge switch):")
    failures = 0
    for tname, tenant in sorted(cfg.tenants.items()):
        # A QEMU guest has no shell to ping from: only namespace VMs are sources.
        for a, b in ((a, b) for a, b in itertools.permutations(sorted(tenant.vms), 2)
                     if tenant.vms[a].kind == "netns"):
            ok = lab.reachable(emu.host(a), str(tenant.vms[b].ip))
            failures += not ok
            _out(f"  {tname:5} {a:5} -> {b:5} {str(tenant.vms[b].ip):10} {'reachable' if ok else 'UNREACHABLE'}")
    return failures


def _isolation(emu, cfg) -> int:
    _out("\nIsolation across tenants (each VM aims frames at the other tenant's MACs; tcpdump at the targets):")
    failures = 0
    for src, dst in itertools.permutations(sorted(cfg.tenants), 2):
        for name, seen in lab.cross_tenant_leaks(emu, cfg, src, dst).items():
            failures += bool(seen)
            verdict = "isolated, 0 frames arrived" if not seen else f"LEAKED {len(seen)} frames"
            _out(f"  {src} -> {dst}/{name}: {verdict}")
    return failures


def _throughput(emu, cfg) -> int:
    blue = cfg.tenants["blue"].vms
    _out("\nThroughput inside tenant blue (iperf3 TCP, web1 on leaf1 -> web2 on leaf2, through a spine):")
    try:
        bps = lab.iperf3(emu.host("web2"), emu.host("web1"), str(blue["web2"].ip), seconds=3)
    except RuntimeError as err:
        _out(f"  FAILED: {err}")
        return 1
    _out(f"  {bps / 1e9:.2f} Gbit/s")
    return 0


def _security_group(emu, ctl, cfg) -> int:
    _out("\nSecurity group at a VM's port: web2 put in group 'web' (ingress tcp 8080 only) through the API:")
    api, web2, ip = ctl.api(), DEMO_TENANTS["blue"]["vms"]["web2"], str(cfg.tenants["blue"].vms["web2"].ip)
    server = lab.serve_http(emu.host("web2"), 8080, "web2")
    try:
        api.post("/tenants/blue/security-groups", {"name": "web", "rules": [
            {"direction": "ingress", "protocol": "tcp", "port": 8080}, {"direction": "egress"}]})
        _in_the_switches(ctl, lambda: api.put("/tenants/blue/vms/web2", {**web2, "security_groups": ["web"]}))
        served = lab.http_get(emu.host("web1"), f"http://{ip}:8080/") == "web2"
        pinged = lab.ping(emu.host("web1"), ip, wait=0.5)
        _out(f"  web1 -> web2:8080 HTTP {'answered' if served else 'NOT ANSWERED'}; "
             f"web1 -> web2 ping {'ANSWERED' if pinged else 'dropped at its port'}")
        _in_the_switches(ctl, lambda: api.put("/tenants/blue/vms/web2", web2))
        api.delete("/tenants/blue/security-groups/web")
        back = lab.ping(emu.host("web1"), ip, wait=0.5)
        _out(f"  group removed: ping {'answered again' if back else 'STILL DROPPED'}")
        return int(not served) + int(pinged) + int(not back)
    except (ApiError, RuntimeError) as err:
        _out(f"  FAILED: {err}")
        return 1
    finally:
        server.terminate()


def _in_the_switches(ctl, change) -> None:
    """Make an API change and wait until a reconcile planned after it is in the switches."""
    cursor = ctl.cursor()
    change()
    applied = ctl.wait_event("config_applied", after=cursor, timeout=10)
    if applied is None or ctl.wait_programmed(applied["id"]) is None:
        raise RuntimeError("the change did not reach the switches within 10 s")


def _tenant_token(ctl) -> int:
    _out("\nA tenant's own API token: issued to red by the operator, then used as red:")
    admin = ctl.api()
    issued = admin.post("/tokens", {"tenant": "red", "description": "sdnvirt demo"})
    red = ctl.api(issued["token"])
    try:
        seen = sorted(vm["name"] for vm in red.get("/vms"))
        try:
            red.get("/tenants/blue/vms")
            refused = None
        except ApiError as err:
            refused = err.status
        # Another tenant is answered as if it did not exist: its name is not revealed.
        _out(f"  GET /v1/vms as red: {', '.join(seen)}; GET /v1/tenants/blue/vms as red: "
             f"{f'{refused}, as if blue did not exist' if refused == 404 else refused or 'ANSWERED'}")
        return int(seen != sorted(DEMO_TENANTS["red"]["vms"])) + int(refused != 404)
    finally:
        admin.delete(f"/tokens/{issued['id']}")


def _cluster(keep_logs: bool) -> int:
    _out("\nSeveral controllers: two instances on a three-member etcd, a 1 spine x 2 leaf fabric connected to both:")
    if shutil.which("etcd") is None:
        _out("  FAILED: no etcd (Debian package etcd-server; scripts/setup.sh installs it)")
        return 1
    workdir = Path(tempfile.mkdtemp(prefix="sdnvirt-demo-cluster-"))
    vms = {"blue": {**DEMO_TENANTS["blue"], "services": {},
                    "vms": {n: DEMO_TENANTS["blue"]["vms"][n] for n in ("web1", "web2")}}}
    c = ClusterLab(workdir, {"controller": {"fabric": {"settle": 1.0}}, "tenants": vms}, "leafspine",
                   {"spines": 1, "leaves": 2}, size=2, lease_ttl=CLUSTER_LEASE)
    try:
        c.start()
        view = c.status(c.names[0])
        _out(f"  members {', '.join(view['members'])}, leader {view['leader']}; masters: "
             + ", ".join(f"{sw} {c.master_of(sw)}" for sw in ("spine1", "leaf1", "leaf2")))
        web2 = vms["blue"]["vms"]["web2"]["ip"]
        if not lab.wait_for(lambda: lab.ping(c.emu.host("web1"), web2), 20):
            _out("  FAILED: web1 cannot reach web2")
            return 1
        victim = c.master_of("leaf1")
        (survivor,) = [n for n in c.alive() if n != victim]
        mine = [d for d, m in c.masters().items() if m == [victim]]
        stream = lab.ping_stream(c.emu.host("web1"), web2, seconds=5)
        time.sleep(1.0)
        cursor = c.ctls[survivor].cursor()
        killed = time.time()
        c.ctls[victim].stop(signal.SIGKILL)
        taken = [t - killed for t in c.taken_over(mine, [survivor], {survivor: cursor}, CLUSTER_LEASE + 5).values()]
        times, sent, lost = lab.stream_result(stream)
        ok = len(taken) == len(mine) and lost == 0
        _out(f"  {victim} (master of leaf1) killed with SIGKILL: {survivor} took its {len(mine)} switch(es) over in "
             f"{max(taken, default=float('nan')):.2f} s (lease_ttl {CLUSTER_LEASE:g} s); ping web1 -> web2 "
             f"across it: {sent} echo requests, {lost} lost")
        return int(not ok)
    except (RuntimeError, TimeoutError, ApiError) as err:
        _out(f"  FAILED: {err}")
        return 1
    finally:
        c.stop()
        if keep_logs:
            _out(f"  cluster configs and logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def _load_balancer(emu, ctl) -> int:
    _out("\nLoad balancer: blue's VIP 10.1.0.100:80 -> web2:8080 (weight 2), web3:8080 (weight 1), "
         "HTTP from web1:")
    servers = {n: lab.serve_http(emu.host(n), 8080, n) for n in ("web2", "web3")}
    try:
        time.sleep(1.0)      # the servers start and the health checks see them
        got = Counter(lab.http_get(emu.host("web1"), "http://10.1.0.100/") for _ in range(60))
        _out(f"  60 new connections: {dict(sorted(got.items(), key=str))}")
        failures = int(set(got) != {"web2", "web3"})
        cursor = ctl.cursor()
        servers["web3"].terminate()
        killed = time.monotonic()
        down = ctl.wait_event("backend_down", {"tenant": "blue", "service": "www", "backend": "web3:8080"},
                              after=cursor, timeout=5)
        if down is not None:
            ctl.wait_programmed(down["id"], timeout=5 - (time.monotonic() - killed))
        detected = time.monotonic() - killed
        after = Counter(lab.http_get(emu.host("web1"), "http://10.1.0.100/") for _ in range(20))
        _out(f"  web3's server killed: marked down and out of the switches in {detected * 1000:.0f} ms "
             f"(interval 0.2 s, fall 2); the next 20 connections: {dict(after)}")
        failures += int(dict(after) != {"web2": 20})
        return failures
    finally:
        for proc in servers.values():
            proc.terminate()


def _migration(emu, ctl, cfg, why_not: str | None) -> int:
    vm = cfg.tenants["blue"].vms["app1"]
    what = "a QEMU guest (128 MiB, TCG), moved by QEMU's own live migration" if vm.kind == "qemu" else \
        f"a namespace VM (emulated pre-copy; no QEMU guest: {why_not})"
    _out(f"\nLive migration of app1 from leaf2 to leaf4, {what}, under a 1 ms ping stream from web1:")
    web1 = emu.host("web1")
    agent = Agent(emu, ctl.api(), cfg).start()
    stream = lab.ping_stream(web1, str(vm.ip), seconds=4)
    try:
        time.sleep(1.0)
        rec = agent.wait(agent.request("app1", "leaf4")["id"], timeout=40)
    except ApiError as err:
        _out(f"  FAILED: the controller refused it: {err}")
        return 1
    finally:
        times, sent, lost = lab.stream_result(stream, timeout=40)
        agent.stop()
    _out("  " + describe(rec).replace("\n", "\n  "))
    if rec["qemu"]:
        q = rec["qemu"]
        _out(f"  QEMU: total {q['total_time'] * 1000:.0f} ms, {q['ram_transferred'] / 2**20:.1f} MiB sent in "
             f"{q['dirty_passes']} passes, STOP->RESUME {q['stop_to_resume'] * 1000:.1f} ms "
             f"(its own downtime figure {q['downtime'] * 1000:.0f} ms); the paths flipped at the source's STOP")
    gap = lab.longest_gap(times)[0] if len(times) > 1 else float("nan")
    _out(f"  ping stream: {sent} echo requests, {lost} lost, longest gap {gap * 1000:.1f} ms")
    return int(rec["outcome"] != "ok" or len(times) < 2)


def _metrics(ctl) -> int:
    _out("\nA few of the daemon's metrics, scraped from its Prometheus endpoint (/metrics):")
    shown = [("switches connected", "sdnvirt_switch_connected", {}, 1),
             ("flows in the switches", "sdnvirt_switch_flows", {}, 1),
             ("reconcile runs", "sdnvirt_reconcile_runs_total", {"result": "success"}, 1),
             ("new connections sent to blue/www's backends", "sdnvirt_backend_connections_total",
              {"tenant": "blue", "service": "www"}, 1),
             ("migrations finished ok", "sdnvirt_migrations_total", {"outcome": "ok"}, 1),
             ("their downtime, ms", "sdnvirt_migration_downtime_seconds_sum", {}, 1000)]
    failures = 0
    for what, name, labels, scale in shown:
        try:
            value = f"{ctl.metric(name, **labels) * scale:.1f}".removesuffix(".0")
        except KeyError:
            value, failures = "MISSING", failures + 1
        selector = ",".join(f'{k}="{v}"' for k, v in labels.items())
        _out(f"  {what:45} {value:>8}   {name}{'{' + selector + '}' if selector else ''}")
    return failures
