"""Strangers, junk and bad configs: the daemon keeps serving the tenants it has."""

import signal
import subprocess
import time

import pytest
import yaml

from sdnvirt.emulation import lab
from sdnvirt.plan.flows import Owner, cookie

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def rogue(leafspine):
    """A host nobody declared, on leaf4's free port."""
    return leafspine.emu.plug("rogue", "leaf4", "02:66:66:66:66:66", "10.1.0.66/24")


def test_an_undeclared_host_reaches_nothing(leafspine, rogue):
    for tenant in leafspine.cfg.tenants.values():
        for vm in tenant.vms.values():
            assert lab.ping(rogue, str(vm.ip), count=2, interval=0.2, wait=0.5) == 0


def test_a_host_claiming_a_live_vms_identity_gets_nothing_and_steals_nothing(leafspine, rogue):
    web1 = leafspine.vm("web1")
    intf = rogue.defaultIntf()
    rogue.cmd(f"ip link set {intf} address {web1.mac}; ip addr flush dev {intf}; ip addr add {web1.ip}/24 dev {intf}")
    cursor = leafspine.ctl.cursor()
    try:
        rogue.cmd(f"arping -c 2 -U -I {intf} {web1.ip}")
        assert lab.ping(rogue, str(leafspine.vm("web2").ip), count=3, interval=0.2, wait=0.5) == 0
        assert lab.reachable(leafspine.host("web2"), str(web1.ip))
        assert leafspine.ctl.wait_event("vm_claim_ignored", {"vm": "web1", "refused": "still_up"}, after=cursor)
    finally:
        rogue.cmd(f"ip link set {intf} address 02:66:66:66:66:66; ip addr flush dev {intf}; "
                  f"ip addr add 10.1.0.66/24 dev {intf}")


def test_malformed_frames_in_packet_ins_do_not_hurt_the_daemon(leafspine, rogue):
    errors = leafspine.ctl.metric("sdnvirt_handler_errors_total")
    out = lab.send_scapy(rogue, [
        'Ether(src="02:66:66:66:66:66", dst="ff:ff:ff:ff:ff:ff", type=0x0806)/b"\\x00\\x01"',  # truncated ARP
        'Ether(src="02:66:66:66:66:66", dst="ff:ff:ff:ff:ff:ff", type=0x0800)/b"\\x45\\x00"',  # truncated IPv4
        'Ether(src="02:66:66:66:66:66", dst="01:80:c2:00:00:0e", type=0x88cc)/b"\\x02\\x07garbage"',  # bad LLDP
        'Ether(src="02:66:66:66:66:66", dst="ff:ff:ff:ff:ff:ff", type=0x88cc)/Raw(RandString(200))',
        'Ether(src="02:66:66:66:66:66", dst="ff:ff:ff:ff:ff:ff")/Dot1Q(vlan=101)/Dot1Q(vlan=102)/b"qinq"',
        'Ether(src="ff:ff:ff:ff:ff:ff", dst="ff:ff:ff:ff:ff:ff")/Raw(RandString(60))',
        'Ether(src="02:66:66:66:66:66", dst="ff:ff:ff:ff:ff:ff", type=0x1234)/Raw(RandString(1400))',
    ], count=20)
    assert "Error" not in out, out
    time.sleep(1)
    assert leafspine.alive()
    assert leafspine.ctl.metric("sdnvirt_handler_errors_total") == errors, leafspine.ctl.log_tail()
    assert lab.reachable(leafspine.host("web2"), str(leafspine.vm("web1").ip))


def _meter_drops(switch):
    out = subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "meter-stats", switch],
                         capture_output=True, text=True, timeout=10).stdout
    # "meter:1 flow_count:1 packet_in_count:N byte_in_count:B duration:Ds bands:\n0: packet_count:DROPPED ..."
    stats = {}
    for block in out.split("meter:")[1:]:
        meter_id = int(block.split()[0])
        stats[meter_id] = int(block.split("bands:")[1].split("packet_count:")[1].split()[0])
    return stats


def test_a_flooding_stranger_is_rate_limited_in_the_switch(leafspine, rogue):
    before = _meter_drops("leaf4")
    lab.send_scapy(rogue, ['Ether(src="02:66:66:66:66:66", dst="ff:ff:ff:ff:ff:ff")/IP(dst="10.1.0.11")/UDP()'],
                   count=1000, inter=0)
    after = _meter_drops("leaf4")
    assert after[1] - before.get(1, 0) > 500     # packet_in_rate is 100/s in these tests
    assert leafspine.alive()
    assert lab.reachable(leafspine.host("web2"), str(leafspine.vm("db3").ip)) is False   # other tenant
    assert lab.reachable(leafspine.host("db1"), str(leafspine.vm("db3").ip))             # db3 is on leaf4


def test_sighup_with_a_bad_file_keeps_the_running_config(leafspine):
    good = leafspine.ctl.config_path.read_text()
    cursor = leafspine.ctl.cursor()
    try:
        leafspine.ctl.config_path.write_text(good.replace("segment: 102", "segment: 9999"))
        leafspine.ctl.send(signal.SIGHUP)
        failed = leafspine.ctl.wait_event("config_reload_failed", after=cursor)
        assert failed and "tenants.red.segment" in failed["fields"]["error"]
        assert leafspine.alive()
        for tenant, a, b in leafspine.pairs():
            assert lab.reachable(leafspine.host(a), str(leafspine.vm(b).ip)), (tenant, a, b)
    finally:
        leafspine.ctl.config_path.write_text(good)


def test_sighup_changes_only_the_flows_of_what_changed(leafspine):
    doc = yaml.safe_load(leafspine.ctl.config_path.read_text())
    web3 = doc["tenants"]["blue"]["vms"].pop("web3")
    cursor = leafspine.ctl.cursor()
    before = {sw: {lab.flow_key(line): lab.flow_field(line, "duration") for line in lab.dump_flows(sw)}
              for sw in ("leaf1", "leaf3")}
    try:
        leafspine.ctl.write_config(doc)
        leafspine.ctl.send(signal.SIGHUP)
        assert leafspine.ctl.wait_event("config_applied", {"source": "file", "vms": 5}, after=cursor)
        deadline = time.monotonic() + 5
        while lab.ping(leafspine.host("web1"), web3["ip"], wait=0.3) and time.monotonic() < deadline:
            pass
        assert lab.ping(leafspine.host("web1"), web3["ip"], count=3, interval=0.2, wait=0.5) == 0
        assert lab.reachable(leafspine.host("web1"), str(leafspine.vm("web2").ip))
        after = {sw: {lab.flow_key(line): lab.flow_field(line, "duration") for line in lab.dump_flows(sw)}
                 for sw in ("leaf1", "leaf3")}
        # leaf3 holds only red's db2: untouched. On leaf1 only web3's own
        # flows and blue's flood entry (one port fewer) changed.
        assert after["leaf3"].keys() == before["leaf3"].keys()
        assert all(after["leaf3"][k] >= before["leaf3"][k] for k in after["leaf3"])
        owners = {f"cookie={cookie(Owner.VM, 101, 'web3'):#x},", f"cookie={cookie(Owner.TENANT, 101, 'blue'):#x},"}
        changed = before["leaf1"].keys() ^ after["leaf1"].keys()
        assert changed and all(k.split()[0] in owners for k in changed), changed
    finally:
        doc["tenants"]["blue"]["vms"]["web3"] = web3
        cursor = leafspine.ctl.cursor()
        leafspine.ctl.write_config(doc)
        leafspine.ctl.send(signal.SIGHUP)
        assert leafspine.ctl.wait_event("config_applied", {"source": "file", "vms": 6}, after=cursor)
    # web3 is found again (ARP probe on its hypervisor or its own traffic).
    leafspine.wait_reachable()
