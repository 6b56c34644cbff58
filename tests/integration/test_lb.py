"""The L4 load balancer on a real fabric: VIPs, weights, health checks, failover, drain."""

import copy
import json
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
import yaml

from sdnvirt.emulation import lab

from .conftest import Fabric

pytestmark = pytest.mark.integration

VIP = "10.1.0.100"
CHECK = {"type": "tcp", "interval": 0.2, "timeout": 0.2, "rise": 2, "fall": 2}
TENANTS = {
    "blue": {"segment": 101, "subnet": "10.1.0.0/24", "vms": {
        "c1": {"mac": "02:00:00:00:01:01", "ip": "10.1.0.11", "host": "leaf1"},
        "b1": {"mac": "02:00:00:00:01:02", "ip": "10.1.0.12", "host": "leaf2"},
        "b2": {"mac": "02:00:00:00:01:03", "ip": "10.1.0.13", "host": "leaf3"},
        "b3": {"mac": "02:00:00:00:01:04", "ip": "10.1.0.14", "host": "leaf1"},
    }, "services": {"web": {
        "vip": VIP, "port": 80, "health_check": CHECK,
        "backends": [{"vm": "b1", "port": 8080, "weight": 2}, {"vm": "b2", "port": 8080}]},
        "echo": {"vip": VIP, "protocol": "udp", "port": 7, "health_check": {**CHECK, "type": "icmp"},
                 "backends": [{"vm": "b1", "port": 7007}, {"vm": "b2", "port": 7007}]}}},
    # The same VIP, another tenant, another pool.
    "red": {"segment": 102, "subnet": "10.1.0.0/24", "vms": {
        "r1": {"mac": "02:00:00:00:02:01", "ip": "10.1.0.11", "host": "leaf1"},
        "r2": {"mac": "02:00:00:00:02:02", "ip": "10.1.0.12", "host": "leaf3"},
    }, "services": {"web": {
        "vip": VIP, "port": 80, "health_check": CHECK, "on_empty": "drop",
        "backends": [{"vm": "r2", "port": 8080}]},
        # http checks on r2's second server: one expects what it answers, one does not.
        "api": {"vip": "10.1.0.101", "port": 80, "backends": [{"vm": "r2", "port": 8081}],
                "health_check": {**CHECK, "type": "http", "path": "/healthz"}},
        "api204": {"vip": "10.1.0.102", "port": 80, "backends": [{"vm": "r2", "port": 8081}],
                   "health_check": {**CHECK, "type": "http", "expect": 204}}}},
}


@pytest.fixture(scope="module")
def lb(tmp_path_factory):
    fab = Fabric(tmp_path_factory.mktemp("lb"), TENANTS, "leafspine", {"spines": 2, "leaves": 4})
    try:
        fab.start()
        fab.servers = {n: lab.serve_http(fab.host(n), 8080, n) for n in ("b1", "b2", "b3", "r2")}
        fab.servers["r2:8081"] = lab.serve_http(fab.host("r2"), 8081, "r2:8081")
        time.sleep(1.0)
        yield fab
    finally:
        for proc in getattr(fab, "servers", {}).values():
            proc.terminate()
        fab.stop()


def _wait_state(fab, names, state, timeout, after=0):
    """Until the controller has marked the backends (events after the cursor ``after``)
    and put that into the switches."""
    deadline = time.monotonic() + timeout
    marks = []
    for n in names:
        mark = fab.ctl.wait_event(f"backend_{state.lower()}", {"service": "web", "backend": f"{n}:8080"},
                                  after=after, timeout=deadline - time.monotonic())
        if mark is None:
            return False
        marks.append(mark["id"])
    return fab.ctl.wait_programmed(max(marks), timeout=deadline - time.monotonic()) is not None


def _backends(fab, tenant="blue", service="web"):
    """The backends of a service as `sdnvirt services --json` shows them, by VM:port."""
    res = subprocess.run([sys.executable, "-m", "sdnvirt", "services", "--json", "--config",
                          str(fab.ctl.config_path)], capture_output=True, text=True, timeout=30)
    return {f"{b['vm']}:{b['port']}": b for s in json.loads(res.stdout or "[]")
            if (s["tenant"], s["name"]) == (tenant, service) for b in s["backends"]}


def _cli_health(fab, timeout=5.0):
    """What `sdnvirt services` shows for blue/web, through the API."""
    deadline = time.monotonic() + timeout
    while True:
        health = {b["vm"]: "UP" if b["up"] else "DOWN" for b in _backends(fab).values()}
        if "DOWN" in health.values() or time.monotonic() > deadline:
            return health
        time.sleep(0.2)


def _restart_server(fab, name):
    fab.servers[name].terminate()
    fab.servers[name].wait(5)
    fab.servers[name] = lab.serve_http(fab.host(name), 8080, name)


def get(fab, client="c1", timeout=2.0):
    return lab.http_get(fab.host(client), f"http://{VIP}/", timeout)


def _counted(fab):
    return {b["vm"]: b.get("connections", 0) for b in _backends(fab).values()}


def _to_controller(switch):
    """Packets sent up by the flows that are not LLDP or health-probe replies."""
    return sum(lab.flow_field(line, "n_packets") for line in lab.dump_flows(switch)
               if "CONTROLLER" in line and "dl_type=0x88cc" not in line and "priority=110" not in line)


def test_connections_are_spread_by_weight_and_only_the_vip_answers(lb):
    before = _counted(lb)
    sent_up = _to_controller("leaf1")
    got = Counter(get(lb) for _ in range(150))
    assert _to_controller("leaf1") == sent_up        # no new connection waited for the controller
    assert set(got) == {"b1", "b2"}, got
    assert 0.55 < got["b1"] / 150 < 0.78, got       # weights 2:1
    # The switches counted the same connections per backend (table 3, priority 95).
    deadline = time.monotonic() + 15
    while True:
        counted = {vm: n - before.get(vm, 0) for vm, n in _counted(lb).items()}
        if sum(counted.values()) >= 150 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert all(abs(counted[vm] - got[vm]) <= 2 for vm in ("b1", "b2")), (counted, got)
    # The client saw the VIP's address and MAC only.
    c1 = lb.host("c1")
    assert "0a:5d:0a:01:00:64" in c1.cmd(f"ip neigh show {VIP}")
    out = c1.cmd(f"curl -s -m 2 -o /dev/null -w '%{{remote_ip}}' http://{VIP}/")
    assert out.strip() == VIP


def test_the_same_vip_in_another_tenant_is_another_service(lb):
    assert {get(lb, "r1") for _ in range(10)} == {"r2"}
    assert {get(lb, "c1") for _ in range(10)} <= {"b1", "b2"}


def test_a_killed_backend_is_marked_down_in_time_and_no_request_fails_after(lb):
    cursor = lb.ctl.cursor()
    lb.servers["b2"].terminate()
    killed = time.monotonic()
    assert _wait_state(lb, ["b2"], "DOWN", 10, cursor)
    detected = time.monotonic() - killed
    # fall x interval + timeout, plus scheduling slack of a loaded 2-core machine
    assert detected <= 2 * 0.2 + 0.2 + 1.0, detected
    assert [get(lb) for _ in range(30)] == ["b1"] * 30
    assert _cli_health(lb)["b2"] == "DOWN"
    cursor = lb.ctl.cursor()
    _restart_server(lb, "b2")
    assert _wait_state(lb, ["b2"], "UP", 10, cursor)
    assert "b2" in {get(lb) for _ in range(40)}


def test_a_backend_whose_port_goes_down_is_down_at_once(lb):
    cursor = lb.ctl.cursor()
    lb.emu.net.configLinkStatus("b1", "leaf2", "down")
    try:
        assert _wait_state(lb, ["b1"], "DOWN", 2, cursor)
        assert [get(lb) for _ in range(20)] == ["b2"] * 20
    finally:
        cursor = lb.ctl.cursor()
        lb.emu.net.configLinkStatus("b1", "leaf2", "up")
    assert _wait_state(lb, ["b1"], "UP", 15, cursor)
    assert "b1" in {get(lb) for _ in range(40)}


def _reconfigure(fab, change):
    doc = yaml.safe_load(fab.ctl.config_path.read_text())
    change(doc["tenants"]["blue"]["services"]["web"])
    cursor = fab.ctl.cursor()
    fab.ctl.write_config(doc)
    fab.ctl.send(signal.SIGHUP)
    applied = fab.ctl.wait_event("config_applied", after=cursor)
    assert applied
    # Its changes in the switches (a change that touches no flow is reconciled by nothing).
    fab.ctl.wait_programmed(applied["id"], timeout=5)


def _original(fab):
    def restore(svc):
        svc.clear()
        svc.update(copy.deepcopy(TENANTS["blue"]["services"]["web"]))
    return restore


def test_drain_stops_new_connections_while_existing_ones_finish(lb):
    held = {}
    for _ in range(20):     # a keep-alive connection that landed on b1
        proc = lab.keepalive_client(lb.host("c1"), VIP, 80, count=30, interval=0.1)
        first = proc.stdout.readline().strip()
        if first == "b1":
            held = {"proc": proc}
            break
        proc.kill()
    assert held, "no connection landed on b1"
    try:
        _reconfigure(lb, lambda svc: svc["backends"][0].update(weight=0))
        assert [get(lb) for _ in range(20)] == ["b2"] * 20
        out, _ = held["proc"].communicate(timeout=30)
        assert out.split() == ["b1"] * 29, out
    finally:
        _reconfigure(lb, _original(lb))


def test_long_lived_connections_survive_adding_and_removing_other_backends(lb):
    clients = [lab.keepalive_client(lb.host("c1"), VIP, 80, count=40, interval=0.1) for _ in range(6)]
    firsts = [c.stdout.readline().strip() for c in clients]
    assert "b1" in firsts, firsts
    try:
        _reconfigure(lb, lambda svc: svc["backends"].append({"vm": "b3", "port": 8080}))
        _reconfigure(lb, lambda svc: svc["backends"].pop(1))          # b2 leaves the pool
        for first, client in zip(firsts, clients, strict=True):
            out, _ = client.communicate(timeout=30)
            if first == "b2":
                continue        # its own backend was removed: not an "other" backend
            assert out.split() == [first] * 39, (first, out)      # the first was read above
        assert "b3" in {get(lb) for _ in range(30)}
    finally:
        _reconfigure(lb, _original(lb))


def test_with_no_backend_reject_answers_at_once_and_drop_stays_silent(lb):
    cursor = lb.ctl.cursor()
    for name in ("b1", "b2", "r2"):
        lb.servers[name].terminate()
    try:
        assert _wait_state(lb, ["b1", "b2", "r2"], "DOWN", 10, cursor)
        started = time.monotonic()
        out = lb.host("c1").cmd(f"curl -s -m 3 -o /dev/null -w '%{{http_code}} %{{errormsg}}' http://{VIP}/")
        assert "Couldn't connect" in out or "refused" in out.lower(), out
        assert time.monotonic() - started < 1.5
        out = lb.host("r1").cmd(f"curl -s -m 2 -o /dev/null -w '%{{http_code}} %{{errormsg}}' http://{VIP}/")
        assert "timed out" in out.lower() or "timeout" in out.lower(), out
    finally:
        cursor = lb.ctl.cursor()
        for name in ("b1", "b2", "r2"):
            _restart_server(lb, name)
        assert _wait_state(lb, ["b1", "b2", "r2"], "UP", 15, cursor)


def test_a_probe_reply_spoofed_from_another_tenant_changes_nothing(lb):
    cursor = lb.ctl.cursor()
    lb.servers["b2"].terminate()
    try:
        assert _wait_state(lb, ["b2"], "DOWN", 10, cursor)
        # r1 (red, same switch as c1) fires SYN-ACKs at blue's probe address
        # from blue b2's address, over the whole probe port range.
        lab.send_scapy(lb.host("r1"), [
            'Ether(src="02:00:00:00:02:01", dst="0a:5d:0a:01:00:fe")/IP(src="10.1.0.11", dst="10.1.0.254")'
            '/TCP(sport=8080, dport=(33000, 34999), flags="SA")',
            'Ether(src="02:00:00:00:02:01", dst="0a:5d:0a:01:00:fe")/IP(src="10.1.0.13", dst="10.1.0.254")'
            '/TCP(sport=8080, dport=(33000, 34999), flags="SA")',
        ])
        time.sleep(1)
        assert not lb.ctl.events("backend_up", {"tenant": "blue", "service": "web", "backend": "b2:8080"}, after=cursor)
        assert {get(lb) for _ in range(10)} == {"b1"}
    finally:
        cursor = lb.ctl.cursor()
        _restart_server(lb, "b2")
        assert _wait_state(lb, ["b2"], "UP", 15, cursor)


_UDP_ECHO = ("import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('', 7007))\n"
             "while True:\n    data, peer = s.recvfrom(2048); s.sendto(data, peer)")
_UDP_BURST = ("import socket, sys; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)\n"
              "for i in range(5): s.sendto(b'%d' % i, (sys.argv[1], 7))\n"
              "got = []\n"
              "try:\n    while len(got) < 5: got.append(s.recv(100).decode())\n"
              "except OSError: pass\nprint(' '.join(sorted(got)))")


def test_udp_datagrams_sent_before_any_reply_all_get_through(lb):
    echoes = [lb.host(n).popen([sys.executable, "-c", _UDP_ECHO]) for n in ("b1", "b2")]
    try:
        time.sleep(0.5)
        for _ in range(5):      # five flows, each five datagrams back to back
            proc = lb.host("c1").popen([sys.executable, "-c", _UDP_BURST, VIP], stdout=subprocess.PIPE, text=True)
            out, _ = proc.communicate(timeout=10)
            assert out.split() == ["0", "1", "2", "3", "4"], out
    finally:
        for proc in echoes:
            proc.terminate()


def test_http_health_checks_get_a_path_and_expect_a_status(lb):
    def checked(service, up, reason, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            b = _backends(lb, "red", service).get("r2:8081", {})
            if (b.get("up"), b.get("last_check")) == (up, reason):
                return True
            time.sleep(0.2)
        return False

    assert checked("api", True, "HTTP 200"), lb.ctl.log_tail(2000)
    assert checked("api204", False, "HTTP 200")         # it answers, but not what this one expects
    server = lb.servers.pop("r2:8081")
    server.terminate()
    server.wait(5)
    assert checked("api", False, "RST", timeout=5)
    lb.servers["r2:8081"] = lab.serve_http(lb.host("r2"), 8081, "r2:8081")
    assert checked("api", True, "HTTP 200")
    assert lab.http_get(lb.host("r1"), "http://10.1.0.101/") == "r2:8081"
    assert not lb.ctl.events("backend_up", {"service": "api204"})


def test_an_out_of_window_reset_of_a_connection_still_reaches_its_backend(lb):
    """How a reused client port gets past a backend's stale TIME_WAIT (docs/pipeline.md,
    *Connection tracking*): the client's RST is out of window for conntrack, yet must arrive."""
    c1 = lb.host("c1")
    conn = c1.popen([sys.executable, "-c", "import socket, time\n"
                     "s = socket.create_connection(('10.1.0.100', 80), source_address=('10.1.0.11', 45123))\n"
                     "time.sleep(6)"])
    try:
        time.sleep(1.0)
        caps = [lab.capture(lb.host(n), "src host 10.1.0.11 and tcp src port 45123 and tcp[13] & 4 != 0", 3)
                for n in ("b1", "b2")]
        lab.wait_tcpdump_ready()
        lab.send_scapy(c1, ['Ether(src="02:00:00:00:01:01", dst="0a:5d:0a:01:00:64")/'
                            'IP(src="10.1.0.11", dst="10.1.0.100")/TCP(sport=45123, dport=80, flags="R", seq=12345)'])
        assert sum(len(lab.captured(cap)) for cap in caps) == 1
    finally:
        conn.kill()
