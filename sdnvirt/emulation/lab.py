"""A controller daemon process and traffic between emulated VMs.

Shared by ``sdnvirt demo``, the integration tests and the benchmarks, so that
all three drive the real daemon and real hosts the same way.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

from ..api.client import Client
from ..api.token import read_token


def wait_for(cond, timeout: float, interval: float = 0.05):
    """Poll ``cond()`` until it returns something truthy; None after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        res = cond()
        if res:
            return res
        if time.monotonic() > deadline:
            return None
        time.sleep(interval)


def ensure_ovs(timeout: float = 20.0) -> None:
    """Start Open vSwitch if it is not running (the embedded default needs nothing else)."""
    if _ovs_up():
        return
    subprocess.run(["/usr/share/openvswitch/scripts/ovs-ctl", "start", "--system-id=random"],
                   check=False, capture_output=True, timeout=60)
    deadline = time.monotonic() + timeout
    while not _ovs_up():
        if time.monotonic() > deadline:
            raise RuntimeError("Open vSwitch did not start (ovs-vsctl show keeps failing)")
        time.sleep(0.2)


def _ovs_up() -> bool:
    return subprocess.run(["ovs-vsctl", "--timeout=2", "show"], capture_output=True).returncode == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ControllerProcess:
    """``sdnvirt controller`` as a child process, with its config and log in ``workdir``."""

    def __init__(self, doc: dict, workdir: str | Path | None = None):
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="sdnvirt-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.workdir / "sdnvirt.yaml"
        self.log_path = self.workdir / "controller.log"
        self.port = doc.get("controller", {}).get("openflow", {}).get("port", 6653)
        self.api_port = doc.get("controller", {}).get("api", {}).get("port") or free_port()
        self.metrics_port = doc.get("controller", {}).get("metrics", {}).get("port") or free_port()
        self.write_config(doc)
        self.proc: subprocess.Popen | None = None

    def write_config(self, doc: dict) -> None:
        """Write its config file; every version keeps its state in ``workdir``, never
        in the system's /var/lib/sdnvirt, and its API and metrics on its own ports."""
        doc = {**doc, "controller": {"state_dir": str(self.workdir), **doc.get("controller", {})}}
        doc["controller"]["api"] = {**doc["controller"].get("api", {}), "port": self.api_port}
        doc["controller"]["metrics"] = {**doc["controller"].get("metrics", {}), "port": self.metrics_port}
        self.config_path.write_text(yaml.safe_dump(doc, sort_keys=False))

    def start(self) -> ControllerProcess:
        log = open(self.log_path, "a")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sdnvirt", "controller", "--config", str(self.config_path)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        self.wait_listening()
        return self

    def wait_listening(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"controller exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"controller not listening on port {self.port}:\n{self.log_tail()}")

    def api(self, token: str | None = None) -> Client:
        """A client of its REST API, with its token unless told another."""
        return Client(f"http://127.0.0.1:{self.api_port}",
                      token if token is not None else read_token(self.workdir / "api-token"))

    def send(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return proc.returncode if proc else None
        proc.send_signal(signum)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait(5)

    def log_tail(self, chars: int = 3000) -> str:
        """The end of its log, for people: error messages quote it; programs read events and metrics."""
        try:
            return self.log_path.read_text()[-chars:]
        except OSError:
            return ""

    # -- what programs read: events and metrics ------------------------------------------
    def cursor(self) -> int:
        """The newest event id: events(after=cursor) and wait_event(after=cursor) see only what comes next."""
        return self.api().events()["last"]

    def events(self, kind: str | Iterable[str] = (), where: Where = None, after: int = 0) -> list[dict]:
        """The events the daemon still holds after ``after``, of ``kind`` (one or several;
        none: every kind), that match ``where``."""
        page = self.api().events(after, [kind] if isinstance(kind, str) else kind)
        _check_kept(page, after)
        return [e for e in page["events"] if _matches(e, where)]

    def wait_event(self, kind: str, where: Where = None, after: int = 0, timeout: float = 10.0) -> dict | None:
        """The first event of ``kind`` after ``after`` that matches ``where`` (a dict of
        fields to equal, or a predicate on the fields); None after ``timeout`` s."""
        client = self.api()
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            page = client.events(after, [kind], wait=min(left, 5.0))
            _check_kept(page, after)
            hit = next((e for e in page["events"] if _matches(e, where)), None)
            if hit is not None:
                return hit
            after = page["last"]

    def wait_programmed(self, after: int, timeout: float = 10.0) -> dict | None:
        """The first reconcile planned after event ``after`` (an id), once the switches confirmed
        it; None after ``timeout`` s (a change that touches no flow is reconciled by nothing)."""
        return self.wait_event("reconciled", lambda f: f["planned_after"] >= after, after=after, timeout=timeout)

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples of ``name`` (with these labels) on its /metrics now;
        KeyError if it has none."""
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10).read().decode()
        values = [sample.value for family in text_string_to_metric_families(text) for sample in family.samples
                  if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())]
        if not values:
            raise KeyError(f"no sample {name} {labels} on the controller's /metrics")
        return sum(values)


Where = dict | Callable[[dict], bool] | None


def _matches(event: dict, where: Where) -> bool:
    if where is None:
        return True
    if callable(where):
        return bool(where(event["fields"]))
    return all(event["fields"].get(k) == v for k, v in where.items())


def _check_kept(page: dict, after: int) -> None:
    if page["missed"]:
        raise RuntimeError(f"events after {after} are gone from the controller (it restarted, "
                           f"or kept fewer than came since): take a new cursor")


# -- traffic --------------------------------------------------------------------

def ping(host, ip: str, count: int = 1, wait: float = 1.0, interval: float | None = None) -> int:
    """Echo replies received by ``host`` from ``ip``."""
    opts = f"-c {count} -W {wait}" + (f" -i {interval}" if interval else "")
    return ping_stats(host.cmd(f"ping -n -q {opts} {ip}"))[1]


def ping_stats(out: str) -> tuple[int, int]:
    """(transmitted, received) from ping's summary; (0, 0) if it printed none."""
    for line in out.splitlines():
        if "transmitted" in line:
            fields = line.split(",")
            return int(fields[0].split()[0]), int(fields[1].split()[0])
    return 0, 0


def ping_stream(host, ip: str, seconds: int, interval: float = 0.001) -> subprocess.Popen:
    """Echo requests to ``ip`` every ``interval`` s for ``seconds`` (whole) s; see reply_times().

    Its output goes to a file, not a pipe: at 1,000 lines a second a pipe
    nobody reads fills up in under a second, and ping then stops sending.
    """
    out = tempfile.TemporaryFile(mode="w+")
    proc = host.popen(["ping", "-D", "-n", "-i", str(interval), "-w", str(int(seconds)), ip],
                      stdout=out, stderr=subprocess.DEVNULL)
    proc.output = out
    return proc


def reply_times(proc: subprocess.Popen, timeout: float = 60.0) -> list[float]:
    """When each echo reply of a ping_stream() arrived (wall clock), once it has ended."""
    return stream_result(proc, timeout)[0]


def stream_result(proc: subprocess.Popen, timeout: float = 60.0) -> tuple[list[float], int, int]:
    """(reply times, echo requests sent, requests lost) of a ping_stream() once it has ended: lost
    if a later one was answered (those after the last answer were cut short by ping's deadline)."""
    proc.wait(timeout=timeout)
    proc.output.seek(0)
    text = proc.output.read()
    proc.output.close()
    replies = re.findall(r"^\[(\d+\.\d+)\] \d+ bytes from .*icmp_seq=(\d+) ", text, re.M)
    answered, sent = {int(seq) for _, seq in replies}, ping_stats(text)[0]
    return [float(t) for t, _ in replies], sent, max(answered) - len(answered) if answered else sent


def longest_gap(times: list[float]) -> tuple[float, float, float]:
    """(gap, last reply before it, first reply after it) of the longest silence in ``times``."""
    if len(times) < 2:
        raise ValueError(f"{len(times)} replies: no gap to measure")
    gap, i = max((b - a, i) for i, (a, b) in enumerate(itertools.pairwise(times)))
    return gap, times[i], times[i + 1]


def reachable(host, ip: str, tries: int = 3) -> bool:
    return any(ping(host, ip) for _ in range(tries))


def iperf3(server, client, server_ip: str, seconds: float = 3.0) -> float:
    """TCP throughput from ``client`` to ``server`` in bits per second."""
    server.cmd("iperf3 -s -1 -D --pidfile /tmp/sdnvirt-iperf3-$$.pid >/dev/null 2>&1")
    time.sleep(0.3)
    out = client.cmd(f"timeout {int(seconds) + 15} iperf3 -J -c {server_ip} -t {seconds}")
    try:
        return float(json.loads(out)["end"]["sum_received"]["bits_per_second"])
    except (ValueError, KeyError) as err:
        raise RuntimeError(f"iperf3 failed: {out[-500:]}") from err


def capture(host, bpf: str, seconds: float) -> subprocess.Popen:
    """Start counting frames matching ``bpf`` on ``host``'s interface; see captured()."""
    intf = host.defaultIntf()
    return host.popen(["timeout", str(seconds), "tcpdump", "-l", "-n", "-e", "-i", str(intf), bpf],
                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def captured(proc: subprocess.Popen) -> list[str]:
    out, _ = proc.communicate(timeout=60)
    return [line for line in out.splitlines() if line.strip()]


def wait_tcpdump_ready() -> None:
    # tcpdump needs a moment to open its socket before frames are sent.
    time.sleep(0.5)


def is_root() -> bool:
    return os.geteuid() == 0


def send_scapy(host, frames: list[str], count: int = 1, inter: float = 0.01, iface: str | None = None) -> str:
    """Send raw frames from ``host``'s interface (or its ``iface``); each frame is a scapy expression."""
    code = ("from scapy.all import *\n"
            "conf.verb = 0\n"
            f"frames = [{', '.join(frames)}]\n"
            f"sendp(frames, iface={iface or str(host.defaultIntf())!r}, count={count}, inter={inter})\n")
    return host.cmd(f"{shlex.quote(sys.executable)} -c {shlex.quote(code)} 2>&1")


def dump_flows(switch: str) -> list[str]:
    out = subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", switch],
                         capture_output=True, text=True, timeout=10).stdout
    return [line.strip() for line in out.splitlines() if "actions=" in line]


def flow_field(line: str, name: str) -> float:
    """A numeric field (duration, n_packets, ...) of one dump-flows line."""
    for part in line.replace(",", " ").split():
        if part.startswith(name + "="):
            return float(part.split("=", 1)[1].rstrip("s"))
    raise KeyError(name)


def flow_key(line: str) -> str:
    """A dump-flows line without its counters: what identifies the flow and its actions."""
    return re.sub(r"\b(duration|n_packets|n_bytes|idle_age|hard_age)=[^,\s]+,?\s*", "", line)


def cross_tenant_leaks(emu, cfg, src: str, dst: str, seconds: float = 4.0) -> dict[str, list[str]]:
    """Frames from tenant ``src`` that reach tenant ``dst``'s VMs when every ``src``
    VM aims pings straight at every ``dst`` MAC (static ARP entries for
    addresses ``src`` does not use).  Isolation holds when every list is empty.
    """
    # QEMU guests have no shell to send or capture from: the namespace VMs show it for every port.
    senders, targets = ({n: vm for n, vm in cfg.tenants[t].vms.items() if vm.kind == "netns"} for t in (src, dst))
    bpf = " or ".join(f"ether src {vm.mac}" for vm in senders.values())
    caps = {name: capture(emu.host(name), bpf, seconds) for name in targets}
    wait_tcpdump_ready()
    spare = [ip for ip in cfg.tenants[src].subnet.hosts()
             if ip not in {vm.ip for vm in senders.values()}][-len(targets):]
    for name in senders:
        host = emu.host(name)
        intf = host.defaultIntf()
        for ip, vm in zip(spare, targets.values(), strict=False):
            host.cmd(f"ip neigh replace {ip} lladdr {vm.mac} dev {intf} nud permanent")
            host.cmd(f"ping -n -q -c 3 -i 0.2 -W 0.3 {ip} >/dev/null 2>&1 &")
    leaks = {name: captured(proc) for name, proc in caps.items()}
    for name in senders:
        emu.host(name).cmd(f"ip neigh flush nud permanent dev {emu.host(name).defaultIntf()}")
    return leaks


# A small HTTP/1.1 server for backends: asyncio, no reverse DNS, a real
# listen backlog, keep-alive; answers every request with its name.
_HTTP_SERVER = r"""
import asyncio, sys
name, port = sys.argv[1].encode(), int(sys.argv[2])
async def handle(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            body = name + b"\n"
            close = b"connection: close" in head.lower()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n" % (
                len(body), b"Connection: close\r\n" if close else b"") + body)
            await writer.drain()
            if close:
                break
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()
async def main():
    server = await asyncio.start_server(handle, "0.0.0.0", port, backlog=1024, reuse_address=True)
    async with server:
        await server.serve_forever()
asyncio.run(main())
"""


def serve_http(host, port: int, name: str) -> subprocess.Popen:
    """Start an HTTP server in ``host`` answering ``name``; stop it with proc.terminate()."""
    return host.popen([sys.executable, "-c", _HTTP_SERVER, name, str(port)],
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def http_get(host, url: str, timeout: float = 2.0) -> str | None:
    """The body of GET url from ``host`` (a new connection), or None if it failed."""
    out = host.cmd(f"curl -s -m {timeout} {url}")
    return out.strip() or None


# One keep-alive connection that asks every `interval` seconds and prints,
# per request, the answer or FAIL: the connection must survive what happens
# to the load balancer meanwhile.
_KEEPALIVE_CLIENT = r"""
import http.client, sys, time
host, port, count, interval = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
conn = http.client.HTTPConnection(host, port, timeout=2)
for i in range(count):
    try:
        conn.request("GET", "/")
        print(conn.getresponse().read().decode().strip(), flush=True)
    except Exception as err:
        print("FAIL", type(err).__name__, flush=True)
        break
    time.sleep(interval)
"""


def keepalive_client(host, ip: str, port: int, count: int, interval: float) -> subprocess.Popen:
    """One long-lived HTTP connection from ``host``; read its answers with communicate()."""
    return host.popen([sys.executable, "-c", _KEEPALIVE_CLIENT, ip, str(port), str(count), str(interval)],
                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
