"""Security groups on a real fabric: the allowed/denied matrix, replies, a removed rule, a membership change
through the API, a backend behind a group."""

import copy
import signal
import subprocess
import sys

import pytest
import yaml

from sdnvirt.emulation import lab
from sdnvirt.emulation.launcher import wait_connected

from .conftest import Fabric

pytestmark = pytest.mark.integration

VIP = "10.1.0.100"
VMS = {
    "web1": {"mac": "02:00:00:00:01:01", "ip": "10.1.0.11", "host": "leaf1"},      # open
    "web2": {"mac": "02:00:00:00:01:02", "ip": "10.1.0.12", "host": "leaf2", "security_groups": ["web"]},
    "adm": {"mac": "02:00:00:00:01:03", "ip": "10.1.0.13", "host": "leaf1", "security_groups": ["admin"]},
}
TENANTS = {"blue": {
    "segment": 101, "subnet": "10.1.0.0/24", "vms": VMS,
    "security_groups": {
        "web": {"rules": [
            {"direction": "ingress", "protocol": "tcp", "port": 80},
            {"direction": "ingress", "protocol": "tcp", "port": "8000-8099", "remote_group": "admin"},
            {"direction": "egress"},
        ]},
        "admin": {"rules": [
            {"direction": "egress", "protocol": "tcp", "port": "8000-8099"},
            {"direction": "egress", "protocol": "tcp", "port": 80, "remote_ip": f"{VIP}/32"},   # the VIP only
            {"direction": "egress", "protocol": "icmp"},
            {"direction": "ingress", "protocol": "icmp"},
            {"direction": "ingress", "protocol": "tcp", "port": 22, "remote_ip": "10.1.0.11/32"},
            {"direction": "ingress", "protocol": "udp", "port": 53},
        ]},
    },
    "services": {"www": {"vip": VIP, "port": 80, "backends": [{"vm": "web2", "port": 8080}],
                         "health_check": {"type": "tcp", "interval": 0.2, "timeout": 0.2}}},
}}
SERVERS = {"web1": (80,), "web2": (80, 81, 8080), "adm": (22,)}
_UDP_ECHO = ("import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('', 53))\n"
             "while True:\n    data, peer = s.recvfrom(2048); s.sendto(data, peer)")
_UDP_ASK = ("import socket, sys; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1)\n"
            "s.sendto(b'hello', (sys.argv[1], int(sys.argv[2])))\n"
            "try:\n    print(s.recv(100).decode())\nexcept OSError:\n    print('none')")


@pytest.fixture(scope="module")
def fab(tmp_path_factory):
    fab = Fabric(tmp_path_factory.mktemp("secgroups"), TENANTS, "leafspine", {"spines": 1, "leaves": 2})
    procs = []
    try:
        fab.ctl.start()
        fab.emu.start()
        wait_connected(fab.emu.net)
        # Pings the rules allow locate every VM (web2 answers none: it sends one).
        assert lab.wait_for(lambda: all(lab.ping(fab.host(a), ip(b), wait=0.5) for a, b in (
            ("web1", "adm"), ("adm", "web1"), ("web2", "web1"))), timeout=30), fab.ctl.log_tail()
        procs = [lab.serve_http(fab.host(vm), port, f"{vm}:{port}") for vm, ports in SERVERS.items() for port in ports]
        procs.append(fab.host("adm").popen([sys.executable, "-c", _UDP_ECHO]))
        assert lab.wait_for(lambda: get(fab, "web1", "web2", 80), timeout=10)
        yield fab
    finally:
        for proc in procs:
            proc.terminate()
        fab.stop()


def ip(vm):
    return VMS[vm]["ip"]


def get(fab, src, dst, port):
    return lab.http_get(fab.host(src), f"http://{ip(dst) if dst in VMS else dst}:{port}/", timeout=1)


def udp(fab, src, dst, port):
    proc = fab.host(src).popen([sys.executable, "-c", _UDP_ASK, ip(dst), str(port)], stdout=subprocess.PIPE,
                               text=True)
    return proc.communicate(timeout=10)[0].strip()


def test_the_rules_allow_and_deny_and_replies_pass(fab):
    assert get(fab, "web1", "web2", 80) == "web2:80"          # ingress tcp 80 from anywhere
    assert get(fab, "web1", "web2", 81) is None                # no rule
    assert get(fab, "adm", "web2", 8080) == "web2:8080"        # 8000-8099 from the admin group, admin's egress
    assert get(fab, "web1", "web2", 8080) is None              # ... web1 is not in it
    assert get(fab, "adm", "web1", 80) is None                 # admin's egress: tcp 80 to the VIP only
    assert get(fab, "web1", "adm", 22) == "adm:22"             # 22 from 10.1.0.11/32
    assert get(fab, "web2", "adm", 22) is None                 # ... not from web2
    assert udp(fab, "web1", "adm", 53) == "hello"              # udp 53, and its reply
    assert udp(fab, "web1", "adm", 54) == "none"
    assert not lab.ping(fab.host("web1"), ip("web2"), wait=0.5)    # web2 has no icmp rule
    assert lab.ping(fab.host("web2"), ip("web1"), wait=0.5)        # its egress, and the reply


def test_a_backend_behind_a_group_stays_healthy_and_is_checked_after_translation(fab):
    # adm's egress rules see the VIP, web2's ingress rules the translated packet (web2:8080).
    assert lab.wait_for(lambda: get(fab, "adm", VIP, 80) == "web2:8080", timeout=10)
    assert get(fab, "web1", VIP, 80) is None                   # web2's 8080 is for admins only
    assert fab.ctl.metric("sdnvirt_backend_up", tenant="blue", service="www", backend="web2:8080") == 1


def reconciled_after(fab, applied):
    assert applied
    assert fab.ctl.wait_programmed(applied["id"])


def reconfigure(fab, change):
    doc = yaml.safe_load(fab.ctl.config_path.read_text())
    change(doc["tenants"]["blue"])
    cursor = fab.ctl.cursor()
    fab.ctl.write_config(doc)
    fab.ctl.send(signal.SIGHUP)
    reconciled_after(fab, fab.ctl.wait_event("config_applied", after=cursor))


def test_removing_a_rule_stops_its_established_connection(fab):
    client = lab.keepalive_client(fab.host("web1"), ip("web2"), 80, count=40, interval=0.1)
    try:
        assert client.stdout.readline().strip() == "web2:80"
        reconfigure(fab, lambda blue: blue["security_groups"]["web"]["rules"].pop(0))
        out, _ = client.communicate(timeout=15)
        answers = out.split("\n")[:-1]
        # Stopped: its next request found no rule, not all 40 were answered.
        assert answers[-1].startswith("FAIL") and len(answers) < 40, answers
    finally:
        client.kill()
        reconfigure(fab, lambda blue: blue["security_groups"]["web"]["rules"].insert(
            0, copy.deepcopy(TENANTS["blue"]["security_groups"]["web"]["rules"][0])))
    assert get(fab, "web1", "web2", 80) == "web2:80"


def test_joining_a_group_through_the_api_changes_what_its_peers_allow(fab):
    api = fab.ctl.api()
    web1 = {k: v for k, v in api.get("/tenants/blue/vms/web1").items() if k in ("mac", "ip", "host", "memory")}
    assert get(fab, "web1", "web2", 8080) is None
    cursor = fab.ctl.cursor()
    api.put("/tenants/blue/vms/web1", {**web1, "security_groups": ["admin"]})
    try:
        reconciled_after(fab, fab.ctl.wait_event("config_applied", after=cursor))
        assert get(fab, "web1", "web2", 8080) == "web2:8080"     # web1 is an admin now
        assert get(fab, "web1", "web2", 80) is None               # ... whose egress has no tcp 80
    finally:
        api.put("/tenants/blue/vms/web1", web1)


def test_what_the_groups_dropped_is_counted_per_vm(fab):
    assert get(fab, "web1", "web2", 81) is None
    # The switches' counters are read every few seconds.
    assert lab.wait_for(lambda: fab.ctl.metric("sdnvirt_security_group_dropped_packets_total", tenant="blue",
                                               vm="web2", direction="ingress") > 0, timeout=15)
