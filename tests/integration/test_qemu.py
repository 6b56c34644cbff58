"""QEMU guests on a real fabric: booted from the project's image, on taps of their hypervisors' switches.

One leaf-spine fabric for the module, with namespace VMs beside the guests;
the tests run in file order.
"""

import subprocess
import sys

import pytest

from sdnvirt.emulation import lab

from .conftest import Fabric

pytestmark = pytest.mark.integration

TENANTS = {
    "blue": {"segment": 101, "subnet": "10.1.0.0/24", "vms": {
        "n1": {"mac": "02:00:00:00:01:01", "ip": "10.1.0.11", "host": "leaf1"},
        "q1": {"mac": "02:00:00:00:01:02", "ip": "10.1.0.12", "host": "leaf2", "kind": "qemu", "memory": 128},
    }},
    # The guest's address in another tenant, and a VM that must not reach the guest.
    "red": {"segment": 102, "subnet": "10.1.0.0/24", "vms": {
        "r1": {"mac": "02:00:00:00:02:01", "ip": "10.1.0.11", "host": "leaf1"},
        "r2": {"mac": "02:00:00:00:02:02", "ip": "10.1.0.12", "host": "leaf2"},
    }},
}


class GuestFabric(Fabric):
    def pairs(self):
        # A guest has no shell to ping from: only namespace VMs are sources.
        return ((t, a, b) for t, a, b in super().pairs() if self.vm(a).kind == "netns")


@pytest.fixture(scope="module")
def fab(tmp_path_factory):
    fab = GuestFabric(tmp_path_factory.mktemp("qemu"), TENANTS, "leafspine", {"spines": 1, "leaves": 2})
    try:
        yield fab.start()
    finally:
        fab.stop()


def test_guest_boots_on_its_hypervisor_and_reaches_its_tenant_only(fab):
    guest = fab.emu.guests["q1"]
    assert guest.alive() and guest.switch == "leaf2"
    assert guest.execute("query-status")["status"] == "running"
    located = fab.ctl.wait_event("vm_located", {"vm": "q1"}, timeout=5)
    assert located is not None and located["fields"]["port"] == guest.ofport
    assert int(located["fields"]["dpid"], 16) == int(fab.emu.net.get("leaf2").dpid, 16)
    n1, r1 = fab.host("n1"), fab.host("r1")
    assert lab.reachable(n1, "10.1.0.12")
    # r1 and r2 of red share blue's addresses: r1 reaches its own 10.1.0.12, and
    # never the guest, whose MAC it is pointed at directly.
    r1.cmd("ip neigh replace 10.1.0.12 lladdr 02:00:00:00:01:02 dev r1-eth0 nud permanent")
    try:
        assert lab.ping(r1, "10.1.0.12", count=3, interval=0.2, wait=0.5) == 0
    finally:
        r1.cmd("ip neigh flush nud permanent dev r1-eth0")


def test_http_and_tcp_to_the_guest(fab):
    n1 = fab.host("n1")
    assert lab.http_get(n1, "http://10.1.0.12/", timeout=5) == "q1"
    # The guest's TCP echo on port 7: many segments both ways (checksums computed by the guest).
    echo = n1.popen([sys.executable, "-c", ECHO, "10.1.0.12", "7", "200000"], stdout=subprocess.PIPE, text=True)
    assert echo.communicate(timeout=20)[0].strip() == "200000"


# Sends N bytes to HOST:PORT, prints how many came back.
ECHO = r"""
import socket, sys
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with socket.create_connection((host, port), timeout=10) as s:
    s.sendall(b"x" * n)
    got = 0
    while got < n:
        data = s.recv(65536)
        if not data:
            break
        got += len(data)
print(got)
"""
