"""VM migration on a real fabric: the hypervisor agent moves Mininet hosts, the daemon coordinates.

One leaf-spine fabric for the module; the tests run in file order and each
leaves every VM reachable where its migration put it.
"""

import contextlib
import copy
import json
import os
import subprocess
import sys
import time

import pytest

from sdnvirt import config
from sdnvirt.api.client import ApiError
from sdnvirt.emulation import lab
from sdnvirt.emulation.agent import Agent
from sdnvirt.emulation.vmports import VMPorts

from .conftest import Fabric

pytestmark = pytest.mark.integration

VIP = "10.1.0.100"
PAUSE = 0.1
TENANTS = {
    "blue": {"segment": 101, "subnet": "10.1.0.0/24", "vms": {
        "c1": {"mac": "02:00:00:00:01:01", "ip": "10.1.0.11", "host": "leaf1"},
        "m1": {"mac": "02:00:00:00:01:02", "ip": "10.1.0.12", "host": "leaf2"},
        "m2": {"mac": "02:00:00:00:01:03", "ip": "10.1.0.13", "host": "leaf2"},
        "m3": {"mac": "02:00:00:00:01:04", "ip": "10.1.0.14", "host": "leaf1", "memory": 300},
        # 4 s of pre-copy: time to break things while it runs.
        "m4": {"mac": "02:00:00:00:01:05", "ip": "10.1.0.15", "host": "leaf3", "memory": 4000},
    }, "services": {"web": {
        "vip": VIP, "port": 80, "drain_on_migration": True,
        "health_check": {"type": "tcp", "interval": 0.2, "timeout": 0.2, "rise": 2, "fall": 2},
        "backends": [{"vm": "m2", "port": 8080}]}}},
    # The same addresses in another tenant, on the leaves blue's VMs move to.
    "red": {"segment": 102, "subnet": "10.1.0.0/24", "vms": {
        "r1": {"mac": "02:00:00:00:02:01", "ip": "10.1.0.11", "host": "leaf1"},
        "r2": {"mac": "02:00:00:00:02:02", "ip": "10.1.0.12", "host": "leaf3"},
    }},
}
EXTRA = {"migration": {"stop_and_copy": PAUSE, "copy_rate": 1000.0, "agent_timeout": 1.0, "timeout": 20.0},
         "hypervisors": {"leaf4": {"max_vms": 0}}}


@pytest.fixture(scope="module")
def mig(tmp_path_factory):
    fab = Fabric(tmp_path_factory.mktemp("migration"), TENANTS, "leafspine", {"spines": 2, "leaves": 4}, EXTRA)
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


def ip(fab, vm):
    return str(fab.vm(vm).ip)


def migrate(fab, vm, target, mode="live"):
    rec = fab.api.post("/migrations", {"vm": vm, "target": target, "mode": mode})
    return fab.agent.wait(rec["id"], timeout=25)


def wait_phase(fab, mid, phase, timeout=10):
    deadline = time.monotonic() + timeout
    while fab.api.get(f"/migrations/{mid}")["phase"] != phase:
        assert time.monotonic() < deadline, fab.api.get(f"/migrations/{mid}")
        time.sleep(0.05)


def where(fab, vm):
    return next(v["switch"] for v in fab.api.get("/topology")["vms"] if v["name"] == vm)


def wait_where(fab, vm, switch, timeout=10):
    assert lab.wait_for(lambda: where(fab, vm) == switch, timeout, interval=0.1), fab.ctl.log_tail()


def ovs_ports(switch):
    return subprocess.run(["ovs-vsctl", "list-ports", switch], capture_output=True, text=True, check=True,
                          timeout=10).stdout.split()


@contextlib.contextmanager
def migration_settings(fab, **changes):
    """Other ``migration`` settings for the block: the daemon re-reads its config
    file with them, and the agent takes them as if it had been started with them."""
    doc = copy.deepcopy(fab.doc)
    doc["migration"].update(changes)
    fab.ctl.write_config(doc)
    fab.api.post("/reload")
    fab.agent.settings = config.parse(doc).migration
    try:
        yield
    finally:
        fab.ctl.write_config(fab.doc)
        fab.api.post("/reload")
        fab.agent.settings = fab.cfg.migration


def test_live_migration_the_streams_longest_gap_is_the_records_downtime(mig):
    stream = lab.ping_stream(mig.host("c1"), ip(mig, "m1"), seconds=4)
    time.sleep(0.5)
    rec = migrate(mig, "m1", "leaf3")
    times = lab.reply_times(stream)
    assert rec["outcome"] == "ok", rec
    assert list(rec["phases"]) == ["preparation", "state_capture", "data_transfer", "restoration", "finished"]
    assert rec["state"]["mac"] == "02:00:00:00:01:02" and rec["state"]["flows"]
    gap, before, after = lab.longest_gap(times)
    # The VM really was cut off for the stop-and-copy pause, the gap is this
    # migration's, and the record's downtime accounts for all of it (plus the
    # ping interval and the round trip). A frozen VM's kernel still answers
    # echo requests until its interface is taken away a moment after the
    # freeze, so the gap may fall short of the pause by that moment (16 ms
    # once, on a loaded machine).
    assert rec["downtime"] >= PAUSE and gap >= PAUSE * 0.5, (gap, rec)
    assert before <= rec["frozen_at"] + 0.05 and after >= rec["thawed_at"] - 0.05, (before, after, rec)
    assert gap <= rec["downtime"] + 0.05, (gap, rec["downtime"])
    assert where(mig, "m1") == "leaf3"
    assert lab.reachable(mig.host("c1"), ip(mig, "m1"))


def test_a_tcp_connection_through_a_vip_to_a_migrating_backend_survives(mig):
    server = lab.serve_http(mig.host("m2"), 8080, "m2")
    try:
        deadline = time.monotonic() + 10
        while lab.http_get(mig.host("c1"), f"http://{VIP}/") != "m2":
            assert time.monotonic() < deadline, "the VIP never answered"
            time.sleep(0.2)
        client = lab.keepalive_client(mig.host("c1"), VIP, 80, count=50, interval=0.05)
        time.sleep(0.5)
        rec = migrate(mig, "m2", "leaf3")
        answers = client.communicate(timeout=30)[0].split()
        assert rec["outcome"] == "ok" and rec["drained"] == ["blue/web"], rec
        assert answers == ["m2"] * 50, answers
        # Undrained: new connections reach it at its new place.
        deadline = time.monotonic() + 10
        while lab.http_get(mig.host("c1"), f"http://{VIP}/") != "m2":
            assert time.monotonic() < deadline, "no new connection after the migration"
            time.sleep(0.2)
    finally:
        server.terminate()


def test_isolation_holds_after_the_moves(mig):
    # m1 (blue) now shares leaf3 with r2 (red), at the same address.
    assert where(mig, "m1") == where(mig, "r2") == "leaf3"
    for src, dst in (("blue", "red"), ("red", "blue")):
        leaks = lab.cross_tenant_leaks(mig.emu, mig.cfg, src, dst, seconds=3)
        assert not any(leaks.values()), leaks
    assert lab.reachable(mig.host("r1"), ip(mig, "r2"))


def test_a_full_hypervisor_is_refused_and_nothing_changes(mig):
    before = len(mig.api.get("/migrations"))
    with pytest.raises(ApiError) as err:
        mig.api.post("/migrations", {"vm": "m3", "target": "leaf4"})
    assert err.value.status == 409 and "leaf4 is full" in str(err.value)
    assert len(mig.api.get("/migrations")) == before
    assert where(mig, "m3") == "leaf1"


def test_migrations_of_different_vms_run_at_once_but_not_two_of_one(mig):
    a = mig.api.post("/migrations", {"vm": "m3", "target": "leaf2"})
    b = mig.api.post("/migrations", {"vm": "r1", "target": "leaf2"})
    with pytest.raises(ApiError, match="already migrating"):
        mig.api.post("/migrations", {"vm": "m3", "target": "leaf3"})
    a, b = mig.agent.wait(a["id"], 25), mig.agent.wait(b["id"], 25)
    assert (a["outcome"], b["outcome"]) == ("ok", "ok"), (a, b)
    # They overlapped: each started before the other finished.
    assert a["requested_at"] < b["phases"]["finished"]["start"] and b["requested_at"] < a["phases"]["finished"]["start"]
    assert where(mig, "m3") == where(mig, "r1") == "leaf2"
    assert lab.reachable(mig.host("c1"), ip(mig, "m3"))
    assert lab.reachable(mig.host("r2"), ip(mig, "r1"))


def sdnvirt_cli(fab, *args):
    return subprocess.run([sys.executable, "-m", "sdnvirt", *args, "--api", fab.api.url,
                           "--token-file", str(fab.ctl.workdir / "api-token")],
                          capture_output=True, text=True, timeout=60)


def test_cold_migration_is_down_for_the_whole_copy(mig):
    copy = TENANTS["blue"]["vms"]["m3"]["memory"] / EXTRA["migration"]["copy_rate"]
    stream = lab.ping_stream(mig.host("c1"), ip(mig, "m3"), seconds=3)
    time.sleep(0.5)
    # Through the command line this time: `sdnvirt migrate` waits for the end.
    res = sdnvirt_cli(mig, "migrate", "m3", "--to", "leaf1", "--mode", "cold", "--json")
    assert res.returncode == 0, res.stderr
    rec = json.loads(res.stdout)
    gap, _, _ = lab.longest_gap(lab.reply_times(stream))
    assert rec["outcome"] == "ok" and rec["mode"] == "cold", rec
    assert rec["downtime"] >= copy and gap >= copy * 0.9, (gap, rec)
    assert gap <= rec["downtime"] + 0.05, (gap, rec["downtime"])
    assert where(mig, "m3") == "leaf1"
    listed = sdnvirt_cli(mig, "migrations").stdout.splitlines()
    assert any(line.split()[:3] == [str(rec["id"]), "m3", "cold"] and " ok " in line for line in listed), listed


def test_a_killed_agent_rolls_the_migration_back(mig):
    rec = mig.api.post("/migrations", {"vm": "m4", "target": "leaf2"})
    wait_phase(mig, rec["id"], "data_transfer")
    mig.agent.kill()
    try:
        deadline = time.monotonic() + 5
        while (rec := mig.api.get(f"/migrations/{rec['id']}"))["outcome"] is None:
            assert time.monotonic() < deadline, rec
            time.sleep(0.05)
    finally:
        mig.agent = Agent(mig.emu, mig.api, mig.cfg).start()
    assert rec["outcome"] == "rolled_back" and "agent" in rec["reason"], rec
    assert where(mig, "m4") == "leaf3"
    assert lab.reachable(mig.host("c1"), ip(mig, "m4"))


def test_the_target_switch_going_down_rolls_the_migration_back(mig):
    rec = mig.api.post("/migrations", {"vm": "m4", "target": "leaf2"})
    wait_phase(mig, rec["id"], "data_transfer")
    subprocess.run(["ovs-vsctl", "set-controller", "leaf2", "tcp:127.0.0.1:9"], check=True)
    try:
        rec = mig.agent.wait(rec["id"], 10)
    finally:
        subprocess.run(["ovs-vsctl", "set-controller", "leaf2", f"tcp:127.0.0.1:{mig.ctl.port}"], check=True)
    assert (rec["outcome"], rec["reason"]) == ("rolled_back", "target switch leaf2 disconnected"), rec
    assert where(mig, "m4") == "leaf3"
    assert lab.reachable(mig.host("c1"), ip(mig, "m4"))
    mig.wait_reachable()      # leaf2 is back for the tests after this one


def test_a_migration_not_finished_within_the_timeout_rolls_back(mig):
    # m4's pre-copy (4 s) outlasts a 2 s timeout.
    ports = ovs_ports("leaf2")
    with migration_settings(mig, timeout=2.0):
        rec = mig.api.post("/migrations", {"vm": "m4", "target": "leaf2"})
        rec = mig.agent.wait(rec["id"], 10)
    assert rec["outcome"] == "rolled_back" and "migration.timeout (2 s)" in rec["reason"], rec
    assert rec["phase"] == "data_transfer" and rec["frozen_at"] is None, rec
    ended = rec["phases"]["data_transfer"]["end"]
    assert 2.0 <= ended - rec["requested_at"] < 4.0, rec
    # The agent took its target port out of leaf2 again.
    deadline = time.monotonic() + 5
    while ovs_ports("leaf2") != ports:
        assert time.monotonic() < deadline, (ports, ovs_ports("leaf2"))
        time.sleep(0.1)
    assert where(mig, "m4") == "leaf3"
    assert lab.reachable(mig.host("c1"), ip(mig, "m4"))


def test_a_rollback_once_the_vm_is_at_its_target_moves_it_back(mig):
    # The timeout comes while the VM is frozen at the target: pre-copy 0.5 s,
    # then 6 s of stop-and-copy, rolled back 3 s after the request.
    with migration_settings(mig, timeout=3.0, stop_and_copy=6.0):
        rec = mig.api.post("/migrations", {"vm": "m1", "target": "leaf2"})
        rec = mig.agent.wait(rec["id"], 10)
    assert rec["outcome"] == "rolled_back" and "migration.timeout (3 s)" in rec["reason"], rec
    # It failed in restoration: the agent had frozen it and moved its interface.
    assert rec["phase"] == "restoration" and rec["frozen_at"] is not None and rec["thawed_at"] is None, rec
    wait_where(mig, "m1", "leaf3")
    assert mig.emu.placement["m1"] == "leaf3"
    assert lab.reachable(mig.host("c1"), ip(mig, "m1"))


def test_a_stranger_claiming_a_migrating_vm_is_ignored(mig):
    rec = mig.api.post("/migrations", {"vm": "m4", "target": "leaf2"})
    wait_phase(mig, rec["id"], "data_transfer")
    m4 = mig.vm("m4")
    cursor = mig.ctl.cursor()
    rogue = mig.emu.plug("rogue", "leaf4", m4.mac, f"{m4.ip}/24")
    rogue.cmd(f"arping -c 2 -U -I {rogue.defaultIntf()} {m4.ip}")
    assert mig.ctl.wait_event("vm_claim_ignored", {"vm": "m4", "refused": "migrating"}, after=cursor)
    rec = mig.agent.wait(rec["id"], 25)
    assert rec["outcome"] == "ok" and where(mig, "m4") == "leaf2", rec


def move_unannounced(fab, vm, switch, inside, silent):
    """Move the VM's interface to a new port on ``switch`` without a migration;
    ``silent``: with no gratuitous ARP and no IPv6 chatter from it."""
    ports = VMPorts(fab.emu, vm, 24, fab.agent.plugged)
    try:
        new = ports.plug(switch, inside)
        ports.swap(new)
        if silent:
            ports.mute()
        ports.up()
        ports.tidy()
        if not silent:
            ports.announce()
    finally:
        ports.close()


def test_a_vm_whose_cable_moved_is_learnt_at_its_new_port(mig):
    move_unannounced(mig, "m3", "leaf3", "cable0", silent=False)
    wait_where(mig, "m3", "leaf3")
    assert lab.reachable(mig.host("c1"), ip(mig, "m3"))


def test_a_silent_vm_moved_away_from_its_hypervisor_is_found_by_probing(mig):
    # m3's own hypervisor is leaf1; it sits at leaf3 and moves to leaf4 without
    # a word: only the controller's ARP probes on other switches can find it.
    cursor = mig.ctl.cursor()
    move_unannounced(mig, "m3", "leaf4", "cable1", silent=True)
    wait_where(mig, "m3", "leaf4")
    assert mig.ctl.events("vm_located", {"vm": "m3", "how": "probe"}, after=cursor)
    assert lab.reachable(mig.host("c1"), ip(mig, "m3"))


def test_the_mininet_cli_of_sdnvirt_topo_migrates(mig, tmp_path):
    from sdnvirt.emulation.console import Console
    script = tmp_path / "commands"
    script.write_text("migrate m3 leaf2 live\n")
    with open(os.devnull) as stdin:
        Console(mig.emu.net, mig.agent, timeout=30, script=str(script), stdin=stdin)
    rec = mig.api.get("/migrations")[-1]
    assert (rec["vm"], rec["target"], rec["outcome"]) == ("m3", "leaf2", "ok"), rec
    assert where(mig, "m3") == "leaf2"


def test_migration_records_survive_a_controller_kill_9(mig):
    before = {r["id"]: r for r in mig.api.get("/migrations") if r["outcome"] is not None}
    assert any(r["outcome"] == "ok" for r in before.values()) and any(r["outcome"] != "ok" for r in before.values())
    mig.restart_controller()                       # SIGKILL, then the same config, store and token
    deadline = time.monotonic() + 20
    while True:
        try:
            after = {r["id"]: r for r in mig.api.get("/migrations")}
            break
        except (ApiError, OSError):
            assert time.monotonic() < deadline, mig.ctl.log_tail(2000)
            time.sleep(0.2)
    assert {mid: after.get(mid) for mid in before} == before
    # The next migration gets a new id (once the restarted controller has found m3 and leaf3 again).
    while True:
        try:
            rec = mig.api.post("/migrations", {"vm": "m3", "target": "leaf3"})
            break
        except ApiError as err:
            assert err.status == 409 and time.monotonic() < deadline + 20, err
            time.sleep(0.2)
    assert rec["id"] > max(before)
    wait_phase(mig, rec["id"], "finished", timeout=30)
