"""``sdnvirt demo``: the embedded default, end to end, then nothing left behind.

Starts the controller daemon, a 2-spine x 4-leaf fabric and two tenants that
use the same IP range, and shows with real traffic who reaches whom, what is
isolated, and the throughput inside a tenant.
"""

from __future__ import annotations

import itertools
import shutil
import time
from collections import Counter

from .. import config
from . import lab
from .launcher import Emulation, build_topo, wait_connected
from .underlay import vtep_plan

# Two tenants on the same subnet; web1/db1 and web2/db2 even share addresses.
DEMO_TENANTS = {
    "blue": {"segment": 101, "subnet": "10.1.0.0/24", "vms": {
        "web1": {"mac": "02:00:00:00:01:01", "ip": "10.1.0.11", "host": "leaf1"},
        "web2": {"mac": "02:00:00:00:01:02", "ip": "10.1.0.12", "host": "leaf2"},
        "web3": {"mac": "02:00:00:00:01:03", "ip": "10.1.0.13", "host": "leaf3"},
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
                 "tenants": DEMO_TENANTS}
    if encap == "vxlan":
        doc["hypervisors"] = vtep_plan(build_topo(*topo).hypervisors())
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
        failures += _reachability(emu, cfg)
        failures += _isolation(emu, cfg)
        failures += _throughput(emu, cfg)
        failures += _load_balancer(emu, ctl)
    finally:
        emu.stop()
        ctl.stop()
        if keep_logs:
            _out(f"\ncontroller config and log kept in {ctl.workdir}")
        else:
            shutil.rmtree(ctl.workdir, ignore_errors=True)
    _out("\nall checks passed" if not failures else f"\n{failures} check(s) FAILED")
    return 0 if not failures else 1


def _reachability(emu, cfg) -> int:
    _out("\nReachability inside each tenant (ping by IP; ARP answered by the edge switch):")
    failures = 0
    for tname, tenant in sorted(cfg.tenants.items()):
        for a, b in itertools.permutations(sorted(tenant.vms), 2):
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
            ctl.wait_event("reconciled", lambda f: f["planned_after"] >= down["id"], after=down["id"],
                           timeout=5 - (time.monotonic() - killed))
        detected = time.monotonic() - killed
        after = Counter(lab.http_get(emu.host("web1"), "http://10.1.0.100/") for _ in range(20))
        _out(f"  web3's server killed: marked down and out of the switches in {detected * 1000:.0f} ms "
             f"(interval 0.2 s, fall 2); the next 20 connections: {dict(after)}")
        failures += int(dict(after) != {"web2": 20})
        return failures
    finally:
        for proc in servers.values():
            proc.terminate()
