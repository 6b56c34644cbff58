"""`sdnvirt trace` on a running fabric: the flows the switches hold, read through the API."""

import copy
import json
import subprocess
import sys
import time

import pytest

from .conftest import TENANTS, Fabric

pytestmark = pytest.mark.integration

VIP = "10.1.0.100"
SERVICE = {"vip": VIP, "port": 80, "health_check": {"type": "icmp", "interval": 0.2, "timeout": 0.2},
           "backends": [{"vm": "web2", "port": 8080}, {"vm": "web3", "port": 8080}]}


@pytest.fixture(scope="module")
def fabric(tmp_path_factory):
    tenants = copy.deepcopy(TENANTS)
    tenants["blue"]["services"] = {"web": SERVICE}
    fab = Fabric(tmp_path_factory.mktemp("trace"), tenants, "leafspine", {"spines": 2, "leaves": 4})
    try:
        yield fab.start()
    finally:
        fab.stop()


def trace(fab, to, *extra):
    res = subprocess.run([sys.executable, "-m", "sdnvirt", "trace", "--config", str(fab.ctl.config_path),
                          "--tenant", "blue", "--from", "web1", "--to", to, "--json", *extra],
                         capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL, check=False)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def delivered(result):
    return sorted(e["vm"] for e in result["ends"] if e["what"] == "delivered")


def test_an_allowed_packet_is_delivered_to_its_vm(fabric):
    result = trace(fabric, "10.1.0.12:22")
    assert result["arp"]["answer"] == fabric.vm("web2").mac
    assert delivered(result) == ["blue/web2"] and len(result["ends"]) == 1


def test_another_tenants_address_is_never_delivered(fabric):
    db3 = fabric.vm("db3")      # red's only: blue's ARP for it is not answered
    result = trace(fabric, str(db3.ip))
    assert result["arp"]["answer"] is None and result["packet"] is None
    result = trace(fabric, str(db3.ip), "--mac", db3.mac)
    assert delivered(result) == [] and [e["what"] for e in result["ends"]] == ["dropped"]


def test_a_packet_to_the_vip_reaches_a_backend_through_the_group_and_conntrack(fabric):
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:      # the backends' first health checks
        result = trace(fabric, f"{VIP}:80")
        if delivered(result) == ["blue/web2", "blue/web3"]:
            break
        time.sleep(0.2)
    assert delivered(result) == ["blue/web2", "blue/web3"], result["ends"]
    assert {"group", "ct"} <= {s["what"] for s in result["steps"]}
    assert {e["packet"]["tcp_dst"] for e in result["ends"]} == {8080}
