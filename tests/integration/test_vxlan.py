"""VXLAN mode's emulation: hypervisors with their own Open vSwitch over a
Linux-bridge underlay (sdnvirt/emulation/underlay.py)."""

import ipaddress
import subprocess

import pytest
from mininet.net import Mininet
from mininet.topo import Topo

from sdnvirt.emulation import lab, privateovs
from sdnvirt.emulation.lock import fabric_lock
from sdnvirt.emulation.underlay import Hypervisor, UnderlayBridge

pytestmark = pytest.mark.integration

VNI = 70001


class TwoHypervisors(Topo):
    def build(self):
        spine = self.addSwitch("spine1", cls=UnderlayBridge)
        for i in (1, 2):
            leaf = self.addSwitch(f"leaf{i}", cls=Hypervisor, dpid=f"{0x100 + i:016x}", mgmt_index=i - 1,
                                  vtep=ipaddress.IPv4Interface(f"192.168.254.{i}/24"))
            self.addLink(leaf, spine)
            self.addLink(self.addHost(f"vm{i}", ip=f"10.0.0.{i}/24", mac=f"02:00:00:00:00:0{i}"), leaf)


@pytest.fixture(scope="module")
def net():
    with fabric_lock():
        privateovs.sweep()
        net = Mininet(TwoHypervisors(), controller=None, autoSetMacs=False, build=False)
        try:
            net.build()
            net.start()
            for vm in net.hosts:
                vm.cmd(f"ethtool -K {vm.defaultIntf()} tx off")
            yield net
        finally:
            net.stop()
        assert privateovs.sweep() == [], "a hypervisor's Open vSwitch outlived the emulation"


def test_vteps_reach_each_other_over_the_underlay(net):
    leaf1 = net.get("leaf1")
    assert lab.ping(leaf1, "192.168.254.2", count=2) >= 1
    options = leaf1.ovs.vsctl("get", "interface", "vxlan0", "type", "options").split("\n")
    assert options[0] == "vxlan"
    assert 'local_ip="192.168.254.1"' in options[1] and "remote_ip=flow" in options[1]


def test_a_full_size_frame_crosses_a_tunnel_with_its_vni(net):
    # The controller's flows, by hand: into the tunnel to the peer's VTEP
    # with the VNI, out of it to the VM.
    for i, peer in ((1, 2), (2, 1)):
        leaf = net.get(f"leaf{i}")
        leaf.ovs.ofctl("add-flow", leaf.name, f"in_port=leaf{i}-eth2,actions=set_field:192.168.254.{peer}->tun_dst,"
                       f"set_field:{VNI}->tun_id,output:vxlan0")
        leaf.ovs.ofctl("add-flow", leaf.name, f"in_port=vxlan0,tun_id={VNI},actions=output:leaf{i}-eth2")
    spine = net.get("spine1")
    dump = spine.popen(["timeout", "5", "tcpdump", "-l", "-n", "-i", "br0", "udp"],
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    lab.wait_tcpdump_ready()
    vm1 = net.get("vm1")
    # 1472 bytes of ICMP payload: a 1500-byte IP packet, not fragmented.
    assert lab.ping(vm1, "10.0.0.2", count=3, wait=1) >= 1
    assert "0% packet loss" in vm1.cmd("ping -n -c 2 -W 1 -M do -s 1472 10.0.0.2")
    # tcpdump writes a tunnelled frame's inner packet on a line of its own,
    # without the timestamp the outer one starts with.
    outer = [f for f in lab.captured(dump) if f[:1].isdigit()]
    assert outer and all(".4789: VXLAN" in f for f in outer), outer
    assert any(f"vni {VNI}" in f for f in outer), outer


def test_the_underlay_speaks_no_openflow(net):
    # The hypervisors' private switches are the only ones: the machine's own
    # Open vSwitch has no bridge of this emulation.
    bridges = subprocess.run(["ovs-vsctl", "--timeout=5", "list-br"], capture_output=True, text=True).stdout.split()
    assert not {"spine1", "leaf1", "leaf2", "br-phy"} & set(bridges)
    assert net.get("spine1").cmd("ip -o link show type bridge").count(": br0:") == 1
