#!/usr/bin/env python3
"""sdnvirt load-balancer benchmark: the in-switch L4 load balancer next to HAProxy, in one run.

    .venv/bin/python bench/lb.py [--quick]

One leaf-spine fabric (2 spines x 4 leaves), one tenant ``blue``: client VM c1, backends b1
and b2 with lab.serve_http on :8080, VM hap running HAProxy in TCP mode on :80 in front of the
same two backends.  sdnvirt services: ``web`` 10.1.0.100:80 -> b1:8080, b2:8080 and ``bulk``
10.1.0.100:5201 -> b1:5201 (iperf3), both with TCP health checks every 0.2 s (timeout 0.2,
rise 2, fall 2).  The VMs are placed two ways (PLACEMENTS), each on a fabric of its own:

- ``spread``: c1, b1, b2 and hap each on its own leaf (leaf1 to leaf4), so every connection
  crosses leaf, spine and leaf; all of parts 1 to 3.
- ``one hypervisor``: all four on leaf1, the setup the issue's reference figures come from;
  part 1 only.

1. new TCP connections per second: ab -c 20 -n 20000 (a new connection per request) from c1
   to the VIP, straight to b1:8080 and to HAProxy; 3 interleaved rounds, medians.  Every VIP
   run starts from a clean slate (no connection of c1 left in conntrack or in the backends'
   TIME_WAIT); a direct connection from a source port a VIP connection just used is checked.
2. iperf3 TCP throughput c1 -> b1 through the VIP vs straight to b1; 3 interleaved runs.
3. failover at 100 new connections/s for 12 s, b1's server killed at t=4 s: sdnvirt, HAProxy
   (check inter 500 fall 2 rise 2) and HAProxy with option redispatch + retries 3.
Then a PNG of the failover runs, the table, and everything in bench/results/lb-<UTC time>.json.

Targets are printed here, never asserted in tests.  See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

# The launcher imports Mininet and undoes its logger-class side effect: import it first.
# The launcher imports Mininet and undoes its logger-class side effect: import it first.
from sdnvirt.emulation import lab, launcher  # noqa: E402,F401
from sdnvirt import config as sdnconfig  # noqa: E402

from common import (  # noqa: E402  (bench/common.py: shared with bench/fabric.py)
    RESULTS_DIR, attempts, begin, fabric_programmed, fmt, machine, measured, median, out, ratio, report,
    sdnvirt_fabric, sh, wait_reconcile_quiet, wait_others_argument)

TOPO = ("leafspine", {"spines": 2, "leaves": 4})
VIP = "10.1.0.100"
B1_IP, B2_IP, HAP_IP = "10.1.0.12", "10.1.0.13", "10.1.0.14"
HTTP_PORT, IPERF_PORT = 8080, 5201
CHECK = {"type": "tcp", "interval": 0.2, "timeout": 0.2, "rise": 2, "fall": 2}
# Every ovs-vswitchd bridge of the emulation is served by one datapath thread, so each leaf or
# spine a packet crosses costs that thread another pass: spread out, HAProxy's two legs cost
# it six passes where a VIP connection costs three (see BENCHMARKS.md).
PLACEMENTS = {
    "spread": {"c1": "leaf1", "b1": "leaf2", "b2": "leaf3", "hap": "leaf4"},
    "one hypervisor": {"c1": "leaf1", "b1": "leaf1", "b2": "leaf1", "hap": "leaf1"},
}
VMS = {
    "c1": {"mac": "02:00:00:00:01:01", "ip": "10.1.0.11"},
    "b1": {"mac": "02:00:00:00:01:02", "ip": B1_IP},
    "b2": {"mac": "02:00:00:00:01:03", "ip": B2_IP},
    "hap": {"mac": "02:00:00:00:01:04", "ip": HAP_IP},
}
TENANTS = {
    "blue": {"segment": 101, "subnet": "10.1.0.0/24", "vms": {}, "services": {
        "web": {"vip": VIP, "port": 80, "health_check": CHECK,
                "backends": [{"vm": "b1", "port": HTTP_PORT}, {"vm": "b2", "port": HTTP_PORT}]},
        # iperf3's control and data connections must reach the same server: one backend,
        # so that "through the VIP" and "direct" are the same path end to end.
        "bulk": {"vip": VIP, "port": IPERF_PORT, "health_check": CHECK,
                 "backends": [{"vm": "b1", "port": IPERF_PORT}]},
    }},
}
TARGETS = {"vip": f"http://{VIP}/", "direct": f"http://{B1_IP}:{HTTP_PORT}/", "haproxy": f"http://{HAP_IP}/"}

# HAProxy as the issue describes it: TCP mode, round robin, checks every 500 ms, fall 2, rise 2.
# Server state changes are logged to stdout (the backend's `log global`); the frontend logs
# nothing, so that 20,000 connections do not cost HAProxy 20,000 log writes.
# maxconn 8000: far above the 20 concurrent connections of ab; 2 fds per connection must fit
# under the 20,000 fds a Mininet host may open (HAProxy refuses to start with 100000).
HAPROXY_CFG = """\
global
    maxconn 8000
    log stdout format raw local0

defaults
    mode tcp
    maxconn 8000
    timeout connect 2s
    timeout client 30s
    timeout server 30s

frontend web
    bind :80
    default_backend web

backend web
    log global
    balance roundrobin
{extra}\
    server b1 {b1}:{port} check inter 500 fall 2 rise 2
    server b2 {b2}:{port} check inter 500 fall 2 rise 2
"""
HAPROXY_VARIANTS = {
    "default": "",                                                # retries 3 is HAProxy's default
    "redispatch": "    option redispatch\n    retries 3\n",
}
RE_HAP_STATE = re.compile(r"Server web/(b\d) is (UP|DOWN)")

# The failover client, run in c1: a new connection every `interval` s for `duration` s, one
# HTTP/1.0 request each ("Connection: close": lab.serve_http keeps a connection open unless
# asked to close it).  Prints START <wall time> at once, then per request at the end:
# index, start (wall time), seconds taken, backend name or FAIL <why>.
FAILOVER_CLIENT = r"""
import asyncio, sys, time
host, port, interval, duration, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
REQ = b"GET / HTTP/1.0\r\nHost: " + host.encode() + b"\r\nConnection: close\r\n\r\n"
results = []
async def exchange():
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(REQ)
        await writer.drain()
        return await reader.read()
    finally:
        writer.close()
async def one(i):
    start = time.time()
    try:
        data = await asyncio.wait_for(exchange(), timeout)
        head, _, body = data.partition(b"\r\n\r\n")
        if not data:
            res = "FAIL empty"
        elif not head.startswith(b"HTTP/1.1 200"):
            res = "FAIL bad-response"
        else:
            res = body.decode(errors="replace").strip() or "FAIL empty-body"
    except asyncio.TimeoutError:
        res = "FAIL timeout"
    except OSError as err:
        res = "FAIL " + type(err).__name__
    results.append("%d %.6f %.6f %s" % (i, start, time.time() - start, res))
async def main():
    loop = asyncio.get_running_loop()
    n = round(duration / interval)
    t0 = loop.time() + 0.2
    print("START %.6f" % (time.time() + 0.2), flush=True)
    tasks = []
    for i in range(n):
        await asyncio.sleep(max(0.0, t0 + i * interval - loop.time()))
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
asyncio.run(main())
print("\n".join(sorted(results, key=lambda l: int(l.split()[0]))), flush=True)
"""


def now_wall() -> float:
    return time.time()


# -- processes in the hosts, all stopped by PID ------------------------------------------

class HAProxy:
    """HAProxy in the foreground (-db) in a Mininet host, with its own config file; its
    stdout/stderr are read by a thread that stamps every line with the time it arrived."""

    def __init__(self, host, workdir: Path, variant: str):
        self.host, self.variant = host, variant
        self.cfg = workdir / f"haproxy-{variant}.cfg"
        self.cfg.write_text(HAPROXY_CFG.format(extra=HAPROXY_VARIANTS[variant], b1=B1_IP, b2=B2_IP,
                                               port=HTTP_PORT))
        self.proc: subprocess.Popen | None = None
        self.lines: list[tuple[float, str]] = []
        self.reader: threading.Thread | None = None

    def start(self) -> "HAProxy":
        check = self.host.cmd(f"haproxy -c -f {self.cfg} 2>&1; echo rc=$?")
        if "rc=0" not in check:
            raise RuntimeError(f"haproxy config {self.cfg} rejected: {check.strip()}")
        self.proc = self.host.popen(["haproxy", "-db", "-f", str(self.cfg)], stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True, bufsize=1)
        self.reader = threading.Thread(target=self._read, name=f"haproxy-{self.variant}", daemon=True)
        self.reader.start()
        time.sleep(0.5)
        if self.proc.poll() is not None:
            raise RuntimeError(f"haproxy exited with {self.proc.returncode}: {self.text()}")
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append((now_wall(), line.rstrip("\n")))

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()            # SIGTERM: HAProxy's hard stop
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self.reader is not None:
            self.reader.join(2)

    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def state_changes(self, since: float) -> list[tuple[float, str, str, str]]:
        """(arrival time, server, UP/DOWN, line) after ``since``; each change once (HAProxy
        may print it on stderr and log it on stdout)."""
        seen, res = set(), []
        for ts, line in list(self.lines):
            m = RE_HAP_STATE.search(line)
            if m and ts >= since:
                key = (m.group(1), m.group(2), round(ts, 1))
                if key not in seen:
                    seen.add(key)
                    res.append((ts, m.group(1), m.group(2), line))
        return res


class Servers:
    """The backends' servers: lab.serve_http on :8080 in b1 and b2, iperf3 -s on :5201 in b1."""

    def __init__(self, emu):
        self.emu = emu
        self.http: dict[str, subprocess.Popen] = {}
        self.iperf: subprocess.Popen | None = None

    def start_http(self, name: str) -> None:
        self.http[name] = lab.serve_http(self.emu.host(name), HTTP_PORT, name)

    def kill_http(self, name: str) -> None:
        proc = self.http.pop(name)
        proc.kill()                     # SIGKILL: a crash, not a graceful stop
        proc.wait(5)

    def start_iperf(self) -> None:
        self.iperf = self.emu.host("b1").popen(["iperf3", "-s", "-p", str(IPERF_PORT)],
                                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        for proc in list(self.http.values()) + ([self.iperf] if self.iperf else []):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        self.http, self.iperf = {}, None


# -- the controller's view of the backends -----------------------------------------------

def _backend(vm: str, port: int, svc: str) -> dict:
    return {"tenant": "blue", "service": svc, "backend": f"{vm}:{port}"}


def marked(ctl, vm: str, port: int, svc: str, state: str, after: int = 0):
    """The first event of the backend going ``state`` (UP, DOWN) after the cursor ``after``
    and the first reconcile after it: (its event, the reconcile's or None), or None."""
    marks = ctl.events(f"backend_{state.lower()}", _backend(vm, port, svc), after)
    if not marks:
        return None
    recs = ctl.events("reconciled", lambda f: f["planned_after"] >= marks[0]["id"], marks[0]["id"])
    return marks[0], (recs[0] if recs else None)


def backends_up(ctl) -> bool:
    """Every backend's last change was to UP (they start UP) and a reconcile followed it."""
    for vm, port, svc in (("b1", HTTP_PORT, "web"), ("b2", HTTP_PORT, "web"), ("b1", IPERF_PORT, "bulk")):
        changes = ctl.events(["backend_up", "backend_down"], _backend(vm, port, svc))
        if changes and changes[-1]["kind"] == "backend_down":
            return False
        last = changes[-1]["id"] if changes else None
        if last is not None and not ctl.events("reconciled", lambda f, last=last: f["planned_after"] >= last, last):
            return False
    return True


def answers(host, url: str, tries: int = 20) -> Counter:
    return Counter(lab.http_get(host, url, timeout=2) or "FAIL" for _ in range(tries))


def wait_answering(host, url: str, want: set[str], timeout: float = 20) -> Counter:
    """Until GET url from ``host`` has been answered by every backend in ``want``."""
    got: Counter = Counter()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got.update(answers(host, url, tries=6))
        if want <= set(got):
            return got
        time.sleep(0.2)
    raise RuntimeError(f"{url} from {host}: answered by {dict(got)} in {timeout:.0f} s, wanted {sorted(want)}")


def group_buckets(switch: str) -> dict:
    """The web service's select group on a switch: packets per backend (one per new connection:
    only a connection's first packet goes through the group)."""
    groups = sh(["ovs-ofctl", "-O", "OpenFlow13", "dump-groups", switch])
    stats = sh(["ovs-ofctl", "-O", "OpenFlow13", "dump-group-stats", switch])
    res = {}
    for line in groups.splitlines():
        m = re.search(r"group_id=(\d+),type=select,(.*)", line)
        if not m:
            continue
        gid = m.group(1)
        targets = [t.group(1) for part in m.group(2).split("bucket=")[1:]
                   if (t := re.search(r"nat\(dst=([\d.]+:\d+)\)", part))]
        sline = next((s for s in stats.splitlines() if f"group_id={gid}," in s), "")
        counts = [int(x) for x in re.findall(r"bucket\d+:packet_count=(\d+)", sline)]
        per: Counter = Counter()
        for t, c in zip(targets, counts):
            per[t] += c
        res[gid] = {"buckets": len(targets), "packets_per_backend": dict(per),
                    "buckets_per_backend": dict(Counter(targets))}
    return res


def ct_stats() -> str:
    return sh(["ovs-appctl", "dpctl/ct-stats-show", "netdev@ovs-netdev"], check=False, timeout=20)


def pmd_stats() -> dict[str, float]:
    """ovs-vswitchd's datapath counters (``dpif-netdev/pmd-stats-show``, summed over its threads:
    here only the main thread), to be diffed around a measurement.  The datapath is shared by every
    userspace bridge on the machine; wait_quiet() made sure ours are the only ones."""
    text = sh(["ovs-appctl", "dpif-netdev/pmd-stats-show"], check=False)
    tot: dict[str, float] = {}
    for line in text.splitlines():
        m = re.match(r"^\s+([a-z][a-z .]+):\s+([\d.]+)", line)
        if m:
            tot[m.group(1)] = tot.get(m.group(1), 0) + float(m.group(2))
    return tot


def pmd_delta(before: dict, after: dict, per: int) -> dict:
    keys = ("packets received", "packet recirculations", "megaflow hits", "miss with success upcall",
            "miss with failed upcall")
    d = {k: after.get(k, 0) - before.get(k, 0) for k in keys}
    d["per_request"] = {k: round(v / per, 2) for k, v in d.items()} if per else None
    return d


def cpu_snapshot() -> dict:
    """CPU time so far (clock ticks) of ovs-vswitchd's main thread (it polls the userspace
    datapath's ports), of all its threads, and of the machine (busy, total)."""
    snap = {"wall": time.monotonic()}
    pid = sh(["pidof", "ovs-vswitchd"], check=False).split()
    if pid:
        def ticks(path: str) -> int:
            f = Path(path).read_text().rsplit(")", 1)[1].split()
            return int(f[11]) + int(f[12])          # utime + stime
        try:
            snap["ovs_main"] = ticks(f"/proc/{pid[0]}/task/{pid[0]}/stat")
            snap["ovs_all"] = ticks(f"/proc/{pid[0]}/stat")
        except OSError:
            pass
    cpu = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    snap["machine_total"], snap["machine_idle"] = sum(cpu), cpu[3] + cpu[4]
    return snap


def cpu_delta(a: dict, b: dict) -> dict:
    """Cores used meanwhile (1.0 = one core busy all the time)."""
    hz, wall = os.sysconf("SC_CLK_TCK"), b["wall"] - a["wall"]
    res = {k: round((b[k] - a[k]) / hz / wall, 2) for k in ("ovs_main", "ovs_all") if k in a and k in b}
    total = b["machine_total"] - a["machine_total"]
    if total:
        res["machine_busy"] = round((1 - (b["machine_idle"] - a["machine_idle"]) / total) * (os.cpu_count() or 1), 2)
    return res


# c1's ephemeral ports: one range per target; and every VIP run starts from a clean slate
# (wait_clean_slate).  Measured (bench/README.md, "Source-port reuse through the VIP"):
# - a direct connection c1:P -> b1:8080 does not complete while OVS's conntrack still holds a VIP
#   connection c1:P -> VIP:80 that went to b1 (TIME_WAIT, ~30 s): that connection's reply tuple,
#   b1:8080 -> c1:P, is the direct connection's, so b1's SYN-ACK is translated to VIP:80 and c1
#   resets it;
# - a VIP connection from a port whose previous VIP connection conntrack still holds is given
#   another source port towards the backend by OVS's NAT; when the backend still holds a
#   TIME_WAIT (60 s) for that port from an earlier connection, it may answer the SYN with an
#   ACK for the old connection, conntrack drops c1's RST (TCP sequence check), so every SYN
#   retransmission gets the same ACK and the connection hangs until that TIME_WAIT ends: most
#   VIP runs of ab that started within 60 s of earlier runs stopped after a few hundred requests.
# The throughput figures keep the first out (disjoint ranges) and start every VIP run from a clean
# slate; part 1 checks the first (reuse_prime/reuse_direct).  The second still happens within
# one run of 20,000 connections now and then (Linux reuses a source port before it has gone
# through the whole range): such a run is reported as aborted, with the requests it left.
PORT_RANGES = {"vip": (10000, 29999), "direct": (30000, 49999), "haproxy": (50000, 60999)}


def vip_conntrack_entries() -> dict[str, int]:
    """c1's VIP connections OVS's conntrack holds from the VIP port range, by TCP state."""
    lo, hi = PORT_RANGES["vip"]
    dump = sh(["ovs-appctl", "dpctl/dump-conntrack", "netdev@ovs-netdev", "zone=101"], check=False, timeout=60)
    rx = re.compile(r"orig=\(src=10\.1\.0\.11,dst=10\.1\.0\.100,sport=(\d+),dport=\d+\).*state=(\w+)")
    return dict(Counter(m.group(2) for m in map(rx.search, dump.splitlines()) if m and lo <= int(m.group(1)) <= hi))


def backend_time_waits(emu) -> dict[str, int]:
    """TIME_WAIT sockets the backends hold for connections from c1."""
    res = {}
    for b in ("b1", "b2"):
        got = emu.host(b).cmd("ss -Htan state time-wait dst 10.1.0.11 | wc -l").strip()
        res[b] = int(got) if got.isdigit() else -1
    return res


def wait_clean_slate(emu, timeout: float = 80) -> dict:
    """Before a VIP run: until OVS's conntrack holds no VIP connection of c1 and the backends no
    TIME_WAIT from c1 (60 s after the last connection), so that no source port is reused into an
    old connection (see PORT_RANGES)."""
    t0 = time.monotonic()
    while True:
        ct, tw = vip_conntrack_entries(), backend_time_waits(emu)
        if (not ct and not any(tw.values())) or time.monotonic() - t0 >= timeout:
            return {"waited_s": round(time.monotonic() - t0, 1), "conntrack_left": ct, "backend_time_waits_left": tw}
        time.sleep(1.0)


def use_ports(host, target: str) -> None:
    lo, hi = PORT_RANGES[target]
    got = host.cmd(f"sysctl -q -w net.ipv4.ip_local_port_range='{lo} {hi}' && "
                   "cat /proc/sys/net/ipv4/ip_local_port_range")
    if got.split() != [str(lo), str(hi)]:
        raise RuntimeError(f"could not set {host}'s ip_local_port_range to {lo}-{hi}: {got!r}")


# Direct connections from source ports that VIP connections to b1 used before.  "prime": VIP
# connections from ports FIRST.. until COUNT of them went to b1 (prints those ports); "direct":
# a connection to b1:8080 from each given port.  Every socket sets SO_REUSEADDR and waits for
# the server to close first, so c1 holds no TIME_WAIT that would stop the next bind (curl
# --local-port closes first and then cannot bind the port again for 60 s).
REUSE_CLIENT = r"""
import socket, sys, time
mode, ip, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
def get(src, timeout):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.settimeout(timeout)
    t = time.time()
    try:
        s.bind(("", src))
        s.connect((ip, port))
        s.sendall(b"GET / HTTP/1.0\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
        res = data.partition(b"\r\n\r\n")[2].decode().strip() or "FAIL-empty"
    except OSError as err:
        res = "FAIL-" + type(err).__name__
    finally:
        s.close()
    return res, time.time() - t
if mode == "prime":
    first, count = int(sys.argv[4]), int(sys.argv[5])
    hits = []
    for src in range(first, first + 20 * count):
        if get(src, 2)[0] == "b1":
            hits.append(src)
            if len(hits) == count:
                break
    print(" ".join(map(str, hits)))
else:
    for src in map(int, sys.argv[4:]):
        res, secs = get(src, 3.5)
        print(src, res, "%.3f" % secs)
"""
REUSE_PORTS = 61000          # above every range of PORT_RANGES: ab never uses them


def run_in(host, argv: list[str], timeout: float) -> str:
    """A short program in ``host``; its stdout (killed by PID after ``timeout`` s)."""
    proc = host.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        return proc.communicate(timeout=timeout)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def reuse_prime(c1, count: int = 10) -> dict:
    got = run_in(c1, [sys.executable, "-c", REUSE_CLIENT, "prime", VIP, "80", str(REUSE_PORTS), str(count)], 60)
    ports = [int(x) for x in got.split() if x.isdigit()]
    if len(ports) < count:
        raise RuntimeError(f"reuse check: only {len(ports)} VIP connections went to b1: {got!r}")
    return {"ports": ports, "primed_wall": now_wall()}


def reuse_direct(c1, ports: list[int], primed_wall: float | None) -> dict:
    """Direct connections to b1:8080 from ``ports``: answered within 3.5 s?  How long it took
    (a SYN retransmission is 1 s) and what conntrack held for those ports beforehand."""
    dump = sh(["ovs-appctl", "dpctl/dump-conntrack", "netdev@ovs-netdev", "zone=101"], check=False, timeout=60)
    held = {}
    for line in dump.splitlines():
        m = re.search(r"orig=\(src=10\.1\.0\.11,dst=10\.1\.0\.100,sport=(\d+),dport=80\).*state=(\w+)", line)
        if m and int(m.group(1)) in ports:
            held[int(m.group(1))] = m.group(2)
    age = now_wall() - primed_wall if primed_wall else None
    got = run_in(c1, [sys.executable, "-c", REUSE_CLIENT, "direct", B1_IP, str(HTTP_PORT)]
                 + [str(p) for p in ports], 60)
    res = []
    for line in got.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0].isdigit():
            res.append({"port": int(parts[0]), "answer": parts[1], "secs": float(parts[2]),
                        "conntrack_before": held.get(int(parts[0]))})
    return {"seconds_after_vip_connection": age, "results": res,
            "answered": sum(1 for r in res if r["answer"] == "b1"), "tried": len(ports)}


# -- 1. new connections per second ----------------------------------------------------

RE_AB = {
    "rps": re.compile(r"Requests per second:\s+([\d.]+)"),
    "complete": re.compile(r"Complete requests:\s+(\d+)"),
    "failed": re.compile(r"Failed requests:\s+(\d+)"),
    "non_2xx": re.compile(r"Non-2xx responses:\s+(\d+)"),
    "seconds": re.compile(r"Time taken for tests:\s+([\d.]+)"),
    "ms_per_request": re.compile(r"Time per request:\s+([\d.]+) \[ms\] \(mean\)"),
    "longest_ms": re.compile(r"100%\s+(\d+) \(longest request\)"),
}


def ab(host, url: str, n: int, concurrency: int = 20) -> dict:
    # No -k: a new connection per request.  "Connection: close" makes the server close after its
    # answer (ab's HTTP/1.0 request alone does not: lab.serve_http would keep it open).
    cmd = f"timeout 300 ab -r -s 10 -c {concurrency} -n {n} -H 'Connection: close' {url} 2>&1"
    started = now_wall()
    text = host.cmd(cmd)
    res = {"url": url, "n": n, "concurrency": concurrency, "started": started}
    for key, rx in RE_AB.items():
        m = rx.search(text)
        res[key] = (float(m.group(1)) if "." in m.group(1) else int(m.group(1))) if m else None
    if res["non_2xx"] is None and res["rps"] is not None:
        res["non_2xx"] = 0
    if res["rps"] is None or res["complete"] != n:
        res["error"] = text[-1500:]
        m = re.search(r"Total of (\d+) requests completed", text)
        done = res["complete"] if res["complete"] is not None else int(m.group(1)) if m else 0
        res["aborted_unanswered"] = n - done       # counted as failed
    res["errors_lines"] = [ln for ln in text.splitlines() if "apr_" in ln or "error" in ln.lower()][:10]
    return res


def part_connections(emu, args, hap: HAProxy) -> dict:
    c1 = emu.host("c1")
    order = list(TARGETS)
    runs: dict[str, list[dict]] = {k: [] for k in order}
    groups_before = group_buckets("leaf1")
    # The reuse check, first half: VIP connections from ports ab never uses, then direct
    # connections from half of those ports at once (the other half: after part 2, > 30 s later).
    reuse = reuse_prime(c1)
    reuse["fresh"] = reuse_direct(c1, [REUSE_PORTS + 900 + i for i in range(5)], None)
    reuse["at_once"] = reuse_direct(c1, reuse["ports"][:5], reuse["primed_wall"])
    out(f"   direct c1 -> b1:8080 from a port whose VIP connection went to b1 "
        f"{reuse['at_once']['seconds_after_vip_connection']:.0f} s ago: {reuse['at_once']['answered']}/5 answered "
        f"(fresh ports: {reuse['fresh']['answered']}/5)")
    for r in range(args.rounds):
        rot = order[r % len(order):] + order[:r % len(order)]
        for target in rot:
            use_ports(c1, target)
            clear = wait_clean_slate(emu) if target == "vip" else None
            before, cpu0 = pmd_stats(), cpu_snapshot()
            got = ab(c1, TARGETS[target], args.ab_n)
            got["cores_used"] = cpu_delta(cpu0, cpu_snapshot())
            if clear is not None:
                got["conntrack_before"] = clear
            got["datapath"] = pmd_delta(before, pmd_stats(), got["complete"] or 0)
            got["round"] = r + 1
            runs[target].append(got)
            out(f"   round {r + 1}/{args.rounds} {target:8s} {fmt(got['rps'], ' req/s', 0)}, "
                f"failed {got['failed']}, non-2xx {got['non_2xx']}, ovs-vswitchd main thread "
                f"{got['cores_used'].get('ovs_main', 'n/a')} core, machine {got['cores_used'].get('machine_busy', 'n/a')} cores"
                + (f"  ERROR: {got['error'][-200:]}" if "error" in got else ""))
            time.sleep(1.0)
    # Churn: two VIP runs back to back from the same ports, no clean slate, so that client
    # ports come back while conntrack and the backends still hold their last connections.
    use_ports(c1, "vip")
    churn = [ab(c1, TARGETS["vip"], args.ab_n) for _ in range(2)]
    out(f"   churn: 2 x {args.ab_n} VIP requests back to back from one port range: failed "
        f"{sum((x['failed'] or 0) + x.get('aborted_unanswered', 0) for x in churn)}, "
        f"longest {max((x['longest_ms'] or 0) for x in churn)} ms")
    res: dict = {"runs": runs, "port_ranges": PORT_RANGES, "reused_port_check": reuse, "churn": churn}
    for target in order:
        rps = [x["rps"] for x in runs[target] if x["rps"] is not None]
        res[f"{target}_rps"] = rps
        res[f"{target}_median_rps"] = median(rps)
        res[f"{target}_failed"] = sum((x["failed"] or 0) + (x["non_2xx"] or 0) + x.get("aborted_unanswered", 0)
                                      for x in runs[target])
        res[f"{target}_requests"] = sum(x["n"] for x in runs[target])
        res[f"{target}_datapath_per_request"] = [x["datapath"]["per_request"] for x in runs[target]]
        res[f"{target}_cores_used"] = [x["cores_used"] for x in runs[target]]
        res[f"{target}_incomplete_runs"] = sum(1 for x in runs[target] if "error" in x)
    res["vip_over_direct"] = ratio(res["vip_median_rps"], res["direct_median_rps"])
    res["vip_over_haproxy"] = ratio(res["vip_median_rps"], res["haproxy_median_rps"])
    # Where the VIP's new connections went: the select group on c1's edge switch.
    res["leaf1_group_before"], res["leaf1_group_after"] = groups_before, group_buckets("leaf1")
    res["conntrack_after"] = ct_stats()
    res["haproxy_log_lines"] = len(hap.lines)
    return res


# -- 2. iperf3 ------------------------------------------------------------------------

def iperf3_run(host, ip: str, seconds: float) -> dict:
    text = host.cmd(f"timeout {int(seconds) + 20} iperf3 -J -c {ip} -p {IPERF_PORT} -t {seconds}")
    try:
        doc = json.loads(text)
        return {"ip": ip, "bps": float(doc["end"]["sum_received"]["bits_per_second"]),
                "retransmits": doc["end"]["sum_sent"].get("retransmits")}
    except (ValueError, KeyError) as err:
        return {"ip": ip, "bps": None, "error": f"{type(err).__name__}: {text[-400:]}"}


def part_iperf(emu, args) -> dict:
    c1 = emu.host("c1")
    runs: dict[str, list[dict]] = {"vip": [], "direct": []}
    for r in range(args.iperf_reps):
        order = ["vip", "direct"] if r % 2 == 0 else ["direct", "vip"]
        for target in order:
            got = iperf3_run(c1, VIP if target == "vip" else B1_IP, args.iperf_seconds)
            got["round"] = r + 1
            runs[target].append(got)
            out(f"   run {r + 1}/{args.iperf_reps} {target:6s} "
                + (f"{got['bps'] / 1e9:.3f} Gbit/s, {got['retransmits']} retransmits" if got["bps"]
                   else f"FAILED {got.get('error', '')[-200:]}"))
            time.sleep(0.5)
    res: dict = {"runs": runs, "seconds": args.iperf_seconds}
    for target in runs:
        bps = [x["bps"] for x in runs[target] if x["bps"]]
        res[f"{target}_bps"] = bps
        res[f"{target}_median_bps"] = median(bps)
    res["vip_over_direct"] = ratio(res["vip_median_bps"], res["direct_median_bps"])
    return res


# -- 3. failover ----------------------------------------------------------------------

def failover_run(emu, servers: Servers, ip: str, port: int, args) -> dict:
    """The client in c1 for args.fo_duration s, b1's HTTP server killed at args.fo_kill_at s."""
    c1 = emu.host("c1")
    use_ports(c1, "vip" if ip == VIP else "haproxy")
    clear = wait_clean_slate(emu) if ip == VIP else None
    proc = c1.popen([sys.executable, "-c", FAILOVER_CLIENT, ip, str(port), str(args.fo_interval),
                     str(args.fo_duration), str(args.fo_timeout)],
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 15)
        first = proc.stdout.readline() if ready else ""
        if not first.startswith("START "):
            raise RuntimeError(f"failover client did not start: {first!r}")
        start = float(first.split()[1])
        time.sleep(max(0.0, start + args.fo_kill_at - now_wall()))
        servers.kill_http("b1")
        killed = now_wall()
        rest, _ = proc.communicate(timeout=args.fo_duration + args.fo_timeout + 30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    reqs = []
    for line in rest.splitlines():
        parts = line.split(maxsplit=3)
        if len(parts) == 4 and parts[0].isdigit():
            reqs.append({"i": int(parts[0]), "t": round(float(parts[1]) - start, 6),
                         "secs": float(parts[2]), "result": parts[3]})
    if len(reqs) != round(args.fo_duration / args.fo_interval):
        raise RuntimeError(f"failover client: {len(reqs)} results; output tail: {rest[-500:]}")
    fails = [r for r in reqs if r["result"].startswith("FAIL")]
    after = [r for r in reqs if r["t"] >= killed - start]
    return {
        "conntrack_before": clear,
        "target": f"{ip}:{port}", "start_wall": start, "kill_t": killed - start, "requests": reqs,
        "total": len(reqs), "failed": len(fails),
        "fail_kinds": dict(Counter(r["result"] for r in fails)),
        "answered_by": dict(Counter(r["result"] for r in reqs if not r["result"].startswith("FAIL"))),
        "first_failure_after_kill_s": (min(r["t"] for r in fails) - (killed - start)) if fails else None,
        "last_failure_after_kill_s": (max(r["t"] for r in fails) - (killed - start)) if fails else None,
        "b1_answers_after_kill": sum(1 for r in after if r["result"] == "b1"),
        "slowest_request_s": max(r["secs"] for r in reqs),
        "requests_slower_than_0.5s": sum(1 for r in reqs if r["secs"] > 0.5),
    }


def part_failover_sdnvirt(emu, ctl, servers: Servers, args) -> dict:
    cursor = ctl.cursor()
    res = failover_run(emu, servers, VIP, 80, args)
    start, kill = res["start_wall"], res["start_wall"] + res["kill_t"]
    got = marked(ctl, "b1", HTTP_PORT, "web", "DOWN", cursor)
    if got:
        mark, rec = got
        res["marked_down_after_kill_s"] = mark["time"] - kill
        res["reconciled_after_kill_s"] = rec["time"] - kill if rec else None
        if rec:
            res["failed_started_after_reconciled"] = sum(
                1 for r in res["requests"] if r["result"].startswith("FAIL") and r["t"] > rec["time"] - start)
    else:
        res["marked_down_after_kill_s"] = res["reconciled_after_kill_s"] = None
    # b1 back for the next runs: UP in the controller and in the switches.
    cursor = ctl.cursor()
    servers.start_http("b1")
    back = lab.wait_for(lambda: (m := marked(ctl, "b1", HTTP_PORT, "web", "UP", cursor)) and m[1], timeout=15)
    res["b1_up_again"] = bool(back)
    res["plot_marks"] = {"start": start}
    return res


def part_failover_haproxy(emu, servers: Servers, hap: HAProxy, args) -> dict:
    res = failover_run(emu, servers, HAP_IP, 80, args)
    kill = res["start_wall"] + res["kill_t"]
    downs = [c for c in hap.state_changes(kill) if c[1] == "b1" and c[2] == "DOWN"]
    res["marked_down_line"] = downs[0][3] if downs else None
    res["marked_down_after_kill_s"] = downs[0][0] - kill if downs else None
    res["haproxy_variant"] = hap.variant
    since = now_wall()
    servers.start_http("b1")
    back = lab.wait_for(lambda: [c for c in hap.state_changes(since) if c[1] == "b1" and c[2] == "UP"], timeout=15)
    res["b1_up_again"] = bool(back)
    return res


# -- 4. the plot ----------------------------------------------------------------------

def plot_failover(runs: list[tuple[str, dict]], path: Path, args) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bin_s = 0.1
    nbins = round(args.fo_duration / bin_s)
    colours = {"b1": "#4c72b0", "b2": "#55a868"}
    heights = [3.2] + [1.9] * (len(runs) - 1)
    fig, axes = plt.subplots(len(runs), 1, figsize=(12, sum(heights) + 1.2), sharex=True,
                             gridspec_kw={"height_ratios": heights})
    axes = axes if len(runs) > 1 else [axes]
    for ax, (title, run) in zip(axes, runs):
        counts = {k: [0] * nbins for k in ("b1", "b2", "FAIL")}
        for r in run["requests"]:
            b = min(nbins - 1, max(0, int(r["t"] / bin_s)))
            key = "FAIL" if r["result"].startswith("FAIL") else r["result"] if r["result"] in colours else "FAIL"
            counts[key][b] += 1
        xs = [i * bin_s for i in range(nbins)]
        bottom = [0] * nbins
        for key, colour in (("b1", colours["b1"]), ("b2", colours["b2"]), ("FAIL", "#d62728")):
            ax.bar(xs, counts[key], width=bin_s, bottom=bottom, align="edge", color=colour,
                   label=f"{key} ({sum(counts[key])})" if key != "FAIL" else f"failed ({sum(counts[key])})",
                   linewidth=0)
            bottom = [a + b for a, b in zip(bottom, counts[key])]
        kill = run["kill_t"]
        ax.axvline(kill, color="black", linestyle="-", linewidth=1.2, label=f"b1 killed (t={kill:.2f} s)")
        if run.get("marked_down_after_kill_s") is not None:
            t = kill + run["marked_down_after_kill_s"]
            ax.axvline(t, color="#ff7f0e", linestyle="--", linewidth=1.5,
                       label=f"marked down (+{run['marked_down_after_kill_s']:.3f} s)")
        if run.get("reconciled_after_kill_s") is not None:
            t = kill + run["reconciled_after_kill_s"]
            ax.axvline(t, color="#9467bd", linestyle=":", linewidth=1.8,
                       label=f"in the switches (+{run['reconciled_after_kill_s']:.3f} s)")
        ax.set_title(f"{title}: {run['failed']} of {run['total']} requests failed", fontsize=10, loc="left")
        ax.set_ylabel(f"requests / {int(bin_s * 1000)} ms")
        ax.set_ylim(0, max(max(bottom), 1) * 1.35)
        ax.legend(loc="upper right", fontsize=8, ncol=3, framealpha=0.9)
        ax.grid(axis="y", alpha=0.3)
    axes[-1].set_xlabel("seconds since the client started (a new TCP connection every "
                        f"{args.fo_interval * 1000:.0f} ms)")
    axes[-1].set_xlim(0, args.fo_duration)
    fig.suptitle("Failover: b1's HTTP server killed (SIGKILL) while c1 opens 100 new connections/s",
                 fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- the run ----------------------------------------------------------------------------

def tenants(placement: str) -> dict:
    """TENANTS with the VMs on the leaves PLACEMENTS[placement] names."""
    blue = {**TENANTS["blue"], "vms": {vm: {**spec, "host": PLACEMENTS[placement][vm]} for vm, spec in VMS.items()}}
    return {"blue": blue}


def measure(args, workdir: Path, placement: str) -> dict:
    """Parts 1 to 3 on the fabric with the VMs placed as PLACEMENTS[placement] says; part 1
    only, unless ``placement`` is "spread"."""
    doc = {"controller": {"openflow": {"port": lab.free_port()}}, "tenants": tenants(placement)}
    cfg = sdnconfig.parse(doc, "bench-lb")
    with sdnvirt_fabric(doc, cfg, TOPO, workdir, args.wait_others) as run:
        ctl, emu, guard, res, cursor = run.ctl, run.emu, run.guard, run.res, run.cursor
        hap = servers = None
        try:
            servers = Servers(emu)
            for b in ("b1", "b2"):
                servers.start_http(b)
            servers.start_iperf()
            if not fabric_programmed(ctl, switches=6, vms=4, timeout=30):
                raise RuntimeError(f"fabric not programmed in 30 s; controller log: {ctl.log_path}")
            res["settled"] = wait_reconcile_quiet(ctl, quiet=2.0, timeout=30)
            c1 = emu.host("c1")
            for ip in (B1_IP, B2_IP, HAP_IP):
                if not lab.reachable(c1, ip, tries=5):
                    raise RuntimeError(f"c1 cannot reach {ip}")
            if not lab.wait_for(lambda: backends_up(ctl), timeout=20, interval=0.2):
                raise RuntimeError(f"backends not UP in the controller after 20 s; log: {ctl.log_path}")
            hap = HAProxy(emu.host("hap"), workdir, "default").start()
            res["warmup"] = {}
            for t, url in TARGETS.items():
                use_ports(c1, t)
                res["warmup"][t] = dict(wait_answering(c1, url, {"b1"} if t == "direct" else {"b1", "b2"}))
            guard.check(ctl, after=cursor)

            out(f"1) new TCP connections/s, VMs placed {placement}: ab -c 20 -n {args.ab_n} from c1, "
                f"{args.rounds} interleaved round(s)")
            res["connections"] = part_connections(emu, args, hap)
            res["loadavg_after_connections"] = list(os.getloadavg())
            guard.check(ctl, after=cursor)
            if placement != "spread":
                return res

            out(f"2) iperf3 c1 -> b1 through the VIP and direct, {args.iperf_seconds:g} s x {args.iperf_reps} each")
            res["iperf3"] = part_iperf(emu, args)
            guard.check(ctl, after=cursor)

            # The reuse check, second half: once OVS's conntrack has let the VIP connections go
            # (TCP TIME_WAIT: 30 s in the userspace datapath), from the other five ports.
            reuse = res["connections"]["reused_port_check"]
            time.sleep(max(0.0, reuse["primed_wall"] + 35 - now_wall()))
            reuse["later"] = reuse_direct(c1, reuse["ports"][5:], reuse["primed_wall"])
            out(f"   direct c1 -> b1:8080 from a port whose VIP connection went to b1 "
                f"{reuse['later']['seconds_after_vip_connection']:.0f} s ago: {reuse['later']['answered']}/5 answered")

            out(f"3) failover: a new connection every {args.fo_interval * 1000:.0f} ms for {args.fo_duration:g} s, "
                f"b1's server killed at t={args.fo_kill_at:g} s")
            fo: dict = {}
            time.sleep(1.0)
            fo["sdnvirt"] = part_failover_sdnvirt(emu, ctl, servers, args)
            out(f"   sdnvirt:            {fo['sdnvirt']['failed']}/{fo['sdnvirt']['total']} failed, marked down "
                f"+{fmt(fo['sdnvirt']['marked_down_after_kill_s'], ' s')}, reconciled "
                f"+{fmt(fo['sdnvirt']['reconciled_after_kill_s'], ' s')}")
            use_ports(c1, "haproxy")
            wait_answering(c1, TARGETS["haproxy"], {"b1", "b2"})
            time.sleep(1.0)
            fo["haproxy"] = part_failover_haproxy(emu, servers, hap, args)
            out(f"   HAProxy:            {fo['haproxy']['failed']}/{fo['haproxy']['total']} failed, marked down "
                f"+{fmt(fo['haproxy']['marked_down_after_kill_s'], ' s')}")
            res["haproxy_default_log"] = hap.text().splitlines()[-60:]
            hap.stop()
            hap = HAProxy(emu.host("hap"), workdir, "redispatch").start()
            use_ports(c1, "haproxy")
            wait_answering(c1, TARGETS["haproxy"], {"b1", "b2"})
            lab.wait_for(lambda: backends_up(ctl), timeout=15, interval=0.2)
            time.sleep(1.0)
            fo["haproxy_redispatch"] = part_failover_haproxy(emu, servers, hap, args)
            out(f"   HAProxy redispatch: {fo['haproxy_redispatch']['failed']}/{fo['haproxy_redispatch']['total']} "
                f"failed, marked down +{fmt(fo['haproxy_redispatch']['marked_down_after_kill_s'], ' s')}")
            res["haproxy_redispatch_log"] = hap.text().splitlines()[-60:]
            res["failover"] = fo
            guard.check(ctl, after=cursor)
            return res
        finally:
            if hap is not None:
                hap.stop()
            if servers is not None:
                servers.stop()


# -- report -----------------------------------------------------------------------------

def connection_rows(c: dict, n: int, where: str) -> list[list[str]]:
    """Part 1's rows for one placement of the VMs."""
    rows = []
    rnd = lambda v: fmt(v, " req/s", 0)   # noqa: E731
    r = c["vip_over_direct"]
    rows.append([f"new TCP conns/s, {where} (ab -c 20 -n {n}): VIP vs direct b1", rnd(c["vip_median_rps"]),
                 rnd(c["direct_median_rps"]) + " direct", fmt(r, "", 2), "ratio >= 0.9",
                 "yes" if r is not None and r >= 0.9 else "NO"])
    r = c["vip_over_haproxy"]
    rows.append(["  VIP vs HAProxy (tcp mode)", rnd(c["vip_median_rps"]),
                 rnd(c["haproxy_median_rps"]) + " HAProxy", fmt(r, "", 2), "ratio >= 2",
                 "yes" if r is not None and r >= 2 else "NO"])
    spread = lambda xs: f"{min(xs):.0f}-{max(xs):.0f}" if xs else "n/a"   # noqa: E731
    rows.append([f"  min-max of {len(c['vip_rps'])} runs (direct / HAProxy)", spread(c["vip_rps"]),
                 f"{spread(c['direct_rps'])} / {spread(c['haproxy_rps'])}", "-", "-", "-"])
    def failed(t: str) -> str:
        k = c[f"{t}_incomplete_runs"]
        return f"{c[f'{t}_failed']}/{c[f'{t}_requests']}" + (f" ({k} aborted)" if k else "")
    rows.append(["  failed requests (direct / HAProxy)", failed("vip"), f"{failed('direct')} / {failed('haproxy')}",
                 "-", "0", "yes" if c["vip_failed"] == 0 and not c["vip_incomplete_runs"] else "NO"])
    if c.get("churn"):
        ch = c["churn"]
        rows.append([f"  churn: 2 x {n} VIP requests back to back, same ports",
                     f"{sum((x['failed'] or 0) + x.get('aborted_unanswered', 0) for x in ch)}/{2 * n} failed",
                     "-", "-", "0 failed", "yes" if all(not x["failed"] and "error" not in x for x in ch) else "NO"])
        rows.append(["  churn: longest request", fmt(max((x["longest_ms"] or 0) for x in ch), " ms", 0),
                     "-", "-", "-", "-"])
    return rows


def table(results: dict) -> list[list[str]]:
    rows = []
    n = results["params"]["ab_n"]
    c = results.get("connections")
    if c:
        rows += connection_rows(c, n, "VMs spread")
        u = c.get("reused_port_check") or {}
        if u.get("at_once"):
            a, f = u["at_once"], u["fresh"]
            rows.append([f"  direct to b1 from the port of a VIP conn. to b1 {a['seconds_after_vip_connection']:.0f} s old",
                         f"{a['answered']}/{a['tried']}", f"{f['answered']}/{f['tried']} fresh ports", "-",
                         "all answered", "yes" if a["answered"] == a["tried"] else "NO"])
        if u.get("later"):
            la = u["later"]
            rows.append([f"  same, VIP conn. {la['seconds_after_vip_connection']:.0f} s old (left conntrack)",
                         f"{la['answered']}/{la['tried']}", "-", "-", "all answered",
                         "yes" if la["answered"] == la["tried"] else "NO"])
    one = results.get("one_hypervisor", {}).get("connections")
    if one:
        rows += connection_rows(one, n, "VMs on one hypervisor")
    p = results.get("iperf3")
    if p:
        sb, pb = p["vip_median_bps"], p["direct_median_bps"]
        r = p["vip_over_direct"]
        rows.append(["iperf3 TCP c1 -> b1: VIP vs direct", fmt(sb / 1e9 if sb else None, " Gbit/s"),
                     fmt(pb / 1e9 if pb else None, " Gbit/s") + " direct", fmt(r, "", 2), "ratio >= 0.9",
                     "yes" if r is not None and r >= 0.9 else "NO"])
        spread = lambda xs: f"{min(xs) / 1e9:.3f}-{max(xs) / 1e9:.3f}" if xs else "n/a"   # noqa: E731
        rows.append([f"  min-max of {len(p['vip_bps'])} / {len(p['direct_bps'])} runs", spread(p["vip_bps"]),
                     spread(p["direct_bps"]), "-", "-", "-"])
    f = results.get("failover")
    if f:
        s, h, hr = f["sdnvirt"], f["haproxy"], f["haproxy_redispatch"]
        d, hd = s["marked_down_after_kill_s"], h["marked_down_after_kill_s"]
        rows.append(["failover: kill -> marked down", fmt(d, " s"), fmt(hd, " s") + " HAProxy",
                     fmt(ratio(d, hd), "", 2), "<= 0.5 s", "yes" if d is not None and d <= 0.5 else "NO"])
        rows.append(["  kill -> reconciled (in the switches)", fmt(s["reconciled_after_kill_s"], " s"), "-", "-",
                     "-", "-"])
        rows.append(["  failed requests, HAProxy default (retries 3)", f"{s['failed']}/{s['total']}",
                     f"{h['failed']}/{h['total']}", "-", "< HAProxy",
                     "yes" if s["failed"] < h["failed"] else "NO"])
        rows.append(["  failed requests, HAProxy redispatch + retries 3", f"{s['failed']}/{s['total']}",
                     f"{hr['failed']}/{hr['total']}", "-", "-", "-"])
        rows.append(["  HAProxy redispatch: kill -> marked down", "-",
                     fmt(hr["marked_down_after_kill_s"], " s"), "-", "-", "-"])
        rows.append(["  last failure after kill (default / redispatch)",
                     fmt(s["last_failure_after_kill_s"], " s"),
                     f"{fmt(h['last_failure_after_kill_s'], ' s')} / {fmt(hr['last_failure_after_kill_s'], ' s')}",
                     "-", "-", "-"])
        rows.append(["  slowest request (default / redispatch)", fmt(s["slowest_request_s"], " s"),
                     f"{fmt(h['slowest_request_s'], ' s')} / {fmt(hr['slowest_request_s'], ' s')}", "-", "-", "-"])
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="ab -n 3000 x 1 round, iperf3 3 s x 1")
    wait_others_argument(ap)
    args = ap.parse_args(argv)
    args.ab_n, args.rounds = (3000, 1) if args.quick else (20000, 3)
    args.iperf_seconds, args.iperf_reps = (3.0, 1) if args.quick else (5.0, 3)
    args.fo_interval, args.fo_duration, args.fo_kill_at, args.fo_timeout = 0.01, 12.0, 4.0, 5.0
    started = begin("bench/lb.py", "sdnvirt-bench-lb")
    if started is None:
        return 2
    stamp, workdir = started
    suffix = "-quick" if args.quick else ""
    haproxy_version = sh(["haproxy", "-v"], check=False).splitlines()
    ab_version = sh(["ab", "-V"], check=False).splitlines()
    results: dict = {"started_utc": stamp, "quick": args.quick, "machine": machine(),
                     "haproxy": haproxy_version[0] if haproxy_version else None,
                     "ab": ab_version[0] if ab_version else None,
                     "params": {"ab_n": args.ab_n, "ab_concurrency": 20, "rounds": args.rounds,
                                "iperf3_seconds": args.iperf_seconds, "iperf3_reps": args.iperf_reps,
                                "failover_interval_s": args.fo_interval, "failover_duration_s": args.fo_duration,
                                "failover_kill_at_s": args.fo_kill_at, "failover_client_timeout_s": args.fo_timeout,
                                "health_check": CHECK, "tenants": TENANTS, "vms": VMS, "placements": PLACEMENTS,
                                "haproxy_cfg": {k: HAPROXY_CFG.format(extra=v, b1=B1_IP, b2=B2_IP, port=HTTP_PORT)
                                                for k, v in HAPROXY_VARIANTS.items()}}}
    out(f"sdnvirt load-balancer benchmark {'(quick) ' if args.quick else ''}- logs in {workdir}")
    def both() -> None:
        results.update(attempts("lb run", lambda i: measure(args, workdir / f"run{i + 1}", "spread"), tries=2))
        results["one_hypervisor"] = attempts(
            "lb run, one hypervisor", lambda i: measure(args, workdir / f"one{i + 1}", "one hypervisor"), tries=2)
    errors = measured(results, both)
    plot = None
    if "failover" in results:
        fo = results["failover"]
        plot = (RESULTS_DIR / f"lb-failover-{stamp}{suffix}.png", lambda png: plot_failover([
            ("sdnvirt VIP 10.1.0.100:80 (health check tcp, interval 0.2 s, fall 2)", fo["sdnvirt"]),
            ("HAProxy, check inter 500 fall 2 rise 2 (retries 3, no redispatch)", fo["haproxy"]),
            ("HAProxy, + option redispatch, retries 3", fo["haproxy_redispatch"])], png, args))
    return report(results, errors, "lb", stamp, suffix, workdir, table, plot=plot)


if __name__ == "__main__":
    sys.exit(main())
