"""QEMU guests on a real fabric: booted from the project's image, on taps of their hypervisors' switches.

One leaf-spine fabric for the module, with namespace VMs beside the guests;
the tests run in file order.
"""

import os
import signal
import subprocess
import sys
import time

import pytest

from sdnvirt.emulation import echo, lab
from sdnvirt.emulation.agent import Agent

from .conftest import Fabric

pytestmark = pytest.mark.integration

VIP = "10.1.0.100"
TENANTS = {
    "blue": {"segment": 101, "subnet": "10.1.0.0/24", "vms": {
        "n1": {"mac": "02:00:00:00:01:01", "ip": "10.1.0.11", "host": "leaf1"},
        "q1": {"mac": "02:00:00:00:01:02", "ip": "10.1.0.12", "host": "leaf2", "kind": "qemu", "memory": 128},
    }, "services": {"web": {
        # The guest's keep-alive HTTP server (its port 80, busybox httpd, closes every connection).
        "vip": VIP, "port": 80, "drain_on_migration": True, "backends": [{"vm": "q1", "port": 8080}],
        # Slower than STOP->RESUME can be under TCG on two loaded cores: the backend stays up.
        "health_check": {"type": "tcp", "interval": 0.5, "timeout": 0.5, "rise": 1, "fall": 3}}}},
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
    fab = GuestFabric(tmp_path_factory.mktemp("qemu"), TENANTS, "leafspine", {"spines": 1, "leaves": 2},
                      {"migration": {"timeout": 20.0}})
    fab.agent = None
    try:
        fab.start()
        fab.api = fab.ctl.api()
        fab.agent = Agent(fab.emu, fab.api, fab.cfg).start()
        yield fab
    finally:
        if fab.agent is not None:
            fab.agent.stop()
        fab.stop()


def migrate(fab, vm, target, mode="live"):
    rec = fab.api.post("/migrations", {"vm": vm, "target": target, "mode": mode})
    return fab.agent.wait(rec["id"], timeout=30)


def test_guest_boots_on_its_hypervisor_and_reaches_its_tenant_only(fab):
    guest = fab.emu.guests["q1"]
    assert guest.alive() and guest.switch == "leaf2"
    assert guest.execute("query-status")["status"] == "running"
    located = fab.ctl.wait_event("vm_located", {"vm": "q1"}, timeout=5)
    assert located is not None and located["fields"]["port"] == guest.ofport
    assert int(located["fields"]["dpid"], 16) == int(fab.emu.net.get("leaf2").dpid, 16)
    n1, r1 = fab.host("n1"), fab.host("r1")
    assert lab.reachable(n1, "10.1.0.12")
    # r1 and r2 of red share blue's addresses: r1 never reaches the guest, even
    # pointed at its MAC directly, and reaches its own 10.1.0.12 (r2).
    r1.cmd("ip neigh replace 10.1.0.12 lladdr 02:00:00:00:01:02 dev r1-eth0 nud permanent")
    try:
        assert lab.ping(r1, "10.1.0.12", count=3, interval=0.2, wait=0.5) == 0
    finally:
        r1.cmd("ip neigh flush nud permanent dev r1-eth0")
    assert lab.reachable(r1, "10.1.0.12")


def test_http_and_tcp_to_the_guest(fab):
    n1 = fab.host("n1")
    assert lab.http_get(n1, "http://10.1.0.12/", timeout=5) == "q1"
    # The guest's TCP echo on port 7: many segments both ways (checksums computed by the guest).
    echo = n1.popen([sys.executable, "-c", ECHO, "10.1.0.12", "7", "200000"], stdout=subprocess.PIPE, text=True)
    assert echo.communicate(timeout=20)[0].strip() == "200000"



def test_live_migration_under_a_ping_stream_and_a_tcp_connection(fab):
    n1 = fab.host("n1")
    talk = echo.talk(n1, "10.1.0.12", seconds=6)
    stream = lab.ping_stream(n1, "10.1.0.12", seconds=5)
    time.sleep(1.0)
    rec = migrate(fab, "q1", "leaf1")
    times, sent, lost = lab.stream_result(stream)
    assert rec["outcome"] == "ok", rec
    assert fab.emu.guests["q1"].switch == "leaf1" and fab.emu.guests["q1"].alive()
    qemu = rec["qemu"]
    assert qemu["status"] == "completed" and qemu["ram_transferred"] > 0 and qemu["dirty_passes"] >= 1
    assert rec["frozen_at"] == qemu["stop"] and rec["thawed_at"] == qemu["resume"]
    # The guest was silent from QEMU's STOP to its RESUME, and the paths flipped at the
    # STOP: the stream's longest gap is that window, plus what the flip and the first
    # replies after it take on two loaded cores.
    gap, before, after = lab.longest_gap(times)
    assert gap <= qemu["stop_to_resume"] + 0.1, (gap, rec)
    # It lies across that window, or just after it when the window is a few ms and the
    # guest's first replies after its RESUME are the longer wait.
    assert before <= qemu["resume"] + 0.1 and after >= qemu["stop"], (before, after, rec)
    assert lost <= 20, (sent, lost, rec)
    # One TCP connection to the guest, talking every 10 ms throughout, never broke.
    lines, broke = echo.talked(talk)
    assert broke is None and lines > 100, (lines, broke)
    assert lab.http_get(n1, "http://10.1.0.12/", timeout=5) == "q1"


def test_a_guest_behind_a_vip_keeps_its_keepalive_connection_through_its_migration(fab):
    n1 = fab.host("n1")
    deadline = time.monotonic() + 15
    while lab.http_get(n1, f"http://{VIP}/") != "q1":
        assert time.monotonic() < deadline, "the VIP never answered"
        time.sleep(0.2)
    client = lab.keepalive_client(n1, VIP, 80, count=100, interval=0.03)
    time.sleep(0.5)
    rec = migrate(fab, "q1", "leaf2")
    assert client.poll() is None, "the connection ended before the migration did"
    answers = client.communicate(timeout=30)[0].split()
    assert rec["outcome"] == "ok" and rec["drained"] == ["blue/web"], rec
    assert fab.emu.guests["q1"].switch == "leaf2"
    assert answers == ["q1"] * 100, answers


def test_a_migration_whose_destination_dies_rolls_back(fab):
    cursor = fab.ctl.cursor()
    rec = fab.api.post("/migrations", {"vm": "q1", "target": "leaf1"})
    plugged = fab.ctl.wait_event("migration", {"id": rec["id"], "step": "plugged"}, after=cursor, timeout=15)
    assert plugged is not None, fab.ctl.log_tail()
    # The destination: the other QEMU of q1 waiting for a migration (the running one came by one too).
    running = fab.emu.guests["q1"].proc.pid
    dest = lab.wait_for(lambda: [int(pid) for pid in subprocess.run(
        ["pgrep", "-f", "guest=q1 .*-incoming"], capture_output=True, text=True).stdout.split()
        if int(pid) != running], timeout=5)
    assert dest and len(dest) == 1, dest
    os.kill(dest[0], signal.SIGKILL)
    rec = fab.agent.wait(rec["id"], timeout=30)
    assert rec["outcome"] == "rolled_back", rec
    guest = fab.emu.guests["q1"]
    assert guest.switch == "leaf2" and guest.execute("query-status")["status"] == "running"
    assert lab.reachable(fab.host("n1"), "10.1.0.12")


def test_cold_migration(fab):
    rec = migrate(fab, "q1", "leaf1", mode="cold")
    assert rec["outcome"] == "ok", rec
    assert rec["qemu"]["status"] == "completed"
    assert fab.emu.guests["q1"].switch == "leaf1"
    assert lab.reachable(fab.host("n1"), "10.1.0.12")
    assert lab.http_get(fab.host("n1"), "http://10.1.0.12/", timeout=5) == "q1"


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
