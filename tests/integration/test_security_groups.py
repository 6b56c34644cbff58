"""Security groups on a real fabric: what the rules allow and deny, replies, a removed rule, a backend behind a group."""

import copy
import signal

import pytest
import yaml

from sdnvirt.emulation import lab
from sdnvirt.emulation.launcher import wait_connected

from .conftest import Fabric

pytestmark = pytest.mark.integration

VIP = "10.1.0.100"
TENANTS = {"blue": {
    "segment": 101, "subnet": "10.1.0.0/24",
    "vms": {
        "web1": {"mac": "02:00:00:00:01:01", "ip": "10.1.0.11", "host": "leaf1"},    # open
        "web2": {"mac": "02:00:00:00:01:02", "ip": "10.1.0.12", "host": "leaf2", "security_groups": ["web"]},
        "adm": {"mac": "02:00:00:00:01:03", "ip": "10.1.0.13", "host": "leaf1", "security_groups": ["admin"]},
    },
    "security_groups": {
        "web": {"rules": [
            {"direction": "ingress", "protocol": "tcp", "port": 80},
            {"direction": "ingress", "protocol": "tcp", "port": "8000-8099", "remote_group": "admin"},
            {"direction": "egress"},
        ]},
        "admin": {"rules": [
            {"direction": "egress"},
            {"direction": "ingress", "protocol": "icmp"},
        ]},
    },
    "services": {"www": {"vip": VIP, "port": 80, "backends": [{"vm": "web2", "port": 8080}],
                         "health_check": {"type": "tcp", "interval": 0.2, "timeout": 0.2}}},
}}


@pytest.fixture(scope="module")
def fab(tmp_path_factory):
    fab = Fabric(tmp_path_factory.mktemp("secgroups"), TENANTS, "leafspine", {"spines": 1, "leaves": 2})
    servers = []
    try:
        fab.ctl.start()
        fab.emu.start()
        wait_connected(fab.emu.net)
        # Pings the rules allow locate every VM (web2 answers none: it sends one).
        ip = {name: str(fab.vm(name).ip) for name in TENANTS["blue"]["vms"]}
        assert lab.wait_for(lambda: all(lab.ping(fab.host(a), ip[b], wait=0.5) for a, b in (
            ("web1", "adm"), ("adm", "web1"), ("web2", "web1"))), timeout=30), fab.ctl.log_tail()
        servers = [lab.serve_http(fab.host("web2"), port, f"web2:{port}") for port in (80, 81, 8080)]
        assert lab.wait_for(lambda: lab.http_get(fab.host("web1"), f"http://{ip['web2']}/"), timeout=10)
        yield fab
    finally:
        for proc in servers:
            proc.terminate()
        fab.stop()


def get(fab, src, dst, port):
    return lab.http_get(fab.host(src), f"http://{dst}:{port}/", timeout=1)


def test_the_rules_allow_and_deny_and_replies_pass(fab):
    web2 = str(fab.vm("web2").ip)
    assert get(fab, "web1", web2, 80) == "web2:80"          # ingress tcp 80 from anywhere
    assert get(fab, "web1", web2, 81) is None                # no rule
    assert get(fab, "adm", web2, 8080) == "web2:8080"        # 8000-8099 from the admin group
    assert get(fab, "web1", web2, 8080) is None              # ... web1 is not in it
    assert not lab.ping(fab.host("web1"), web2, wait=0.5)    # no icmp rule
    assert lab.ping(fab.host("web2"), str(fab.vm("web1").ip), wait=0.5)   # egress, and its reply


def test_a_backend_behind_a_group_stays_healthy_and_is_checked_after_translation(fab):
    assert lab.wait_for(lambda: get(fab, "adm", VIP, 80) == "web2:8080", timeout=10)
    assert get(fab, "web1", VIP, 80) is None                 # web2's 8080 is for admins only
    assert fab.ctl.metric("sdnvirt_backend_up", tenant="blue", service="www", backend="web2:8080") == 1


def _reconfigure(fab, change):
    doc = yaml.safe_load(fab.ctl.config_path.read_text())
    change(doc["tenants"]["blue"])
    cursor = fab.ctl.cursor()
    fab.ctl.write_config(doc)
    fab.ctl.send(signal.SIGHUP)
    applied = fab.ctl.wait_event("config_applied", after=cursor)
    assert applied
    assert fab.ctl.wait_event("reconciled", lambda e: e["planned_after"] >= applied["id"], after=applied["id"])
    return applied


def test_removing_a_rule_stops_its_established_connection(fab):
    web2 = str(fab.vm("web2").ip)
    client = lab.keepalive_client(fab.host("web1"), web2, 80, count=40, interval=0.1)
    try:
        assert client.stdout.readline().strip() == "web2:80"
        _reconfigure(fab, lambda blue: blue["security_groups"]["web"]["rules"].pop(0))
        out, _ = client.communicate(timeout=15)
        answers = out.split("\n")[:-1]
        # Stopped: its next request found no rule, not all 40 were answered.
        assert answers[-1].startswith("FAIL") and len(answers) < 40, answers
    finally:
        client.kill()
        _reconfigure(fab, lambda blue: blue["security_groups"]["web"]["rules"].insert(
            0, copy.deepcopy(TENANTS["blue"]["security_groups"]["web"]["rules"][0])))
    assert get(fab, "web1", web2, 80) == "web2:80"
