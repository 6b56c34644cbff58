"""VXLAN mode end to end: the controller daemon and hypervisors with their own
Open vSwitch over a Linux-bridge underlay (sdnvirt/emulation/underlay.py).

The VLAN mode's scenarios on this fabric: tenants with overlapping addresses,
a load balancer whose client and backends sit on different hypervisors, a
live migration between hypervisors by the hypervisor agent."""

import re
import signal
import subprocess
import time

import pytest

from sdnvirt.emulation import lab, privateovs
from sdnvirt.emulation.agent import Agent

from .conftest import Fabric
from .test_monitoring import Prometheus, fires, until

pytestmark = pytest.mark.integration

# Two tenants on one subnet (web1/db1 and web2/db2 share their addresses),
# VNIs past VLAN's 4094, spread over three hypervisors on one spine.
TENANTS = {
    "blue": {"segment": 70001, "subnet": "10.1.0.0/24", "vms": {
        "web1": {"mac": "02:00:00:00:01:01", "ip": "10.1.0.11", "host": "leaf1"},
        "web2": {"mac": "02:00:00:00:01:02", "ip": "10.1.0.12", "host": "leaf2"},
        "web3": {"mac": "02:00:00:00:01:03", "ip": "10.1.0.13", "host": "leaf3"}}},
    "red": {"segment": 70002, "subnet": "10.1.0.0/24", "vms": {
        "db1": {"mac": "02:00:00:00:02:01", "ip": "10.1.0.11", "host": "leaf1"},
        "db2": {"mac": "02:00:00:00:02:02", "ip": "10.1.0.12", "host": "leaf2"}}},
}
VIP = "10.1.0.100"
# The client web1 on leaf1, the backends on leaf2 and leaf3.
TENANTS["blue"]["services"] = {"web": {
    "vip": VIP, "port": 80,
    "health_check": {"type": "tcp", "interval": 0.2, "timeout": 0.2, "rise": 2, "fall": 2},
    "backends": [{"vm": "web2", "port": 8080}, {"vm": "web3", "port": 8080}]}}
EXTRA = {"migration": {"stop_and_copy": 0.1, "copy_rate": 1000.0, "timeout": 20.0}}
# A QEMU guest, its tap on leaf3's own Open vSwitch, and a namespace VM of its tenant on leaf1.
TENANTS["green"] = {"segment": 70003, "subnet": "10.2.0.0/24", "vms": {
    "g1": {"mac": "02:00:00:00:03:01", "ip": "10.2.0.11", "host": "leaf1"},
    "q1": {"mac": "02:00:00:00:03:02", "ip": "10.2.0.12", "host": "leaf3", "kind": "qemu", "memory": 128}}}
VNI = {"blue": 70001, "red": 70002, "green": 70003}


class VxlanFabric(Fabric):
    def pairs(self):
        # The guest boots meanwhile: its test waits for it.
        return ((t, a, b) for t, a, b in super().pairs() if "qemu" not in (self.vm(a).kind, self.vm(b).kind))


@pytest.fixture(scope="module")
def fab(tmp_path_factory):
    fab = VxlanFabric(tmp_path_factory.mktemp("vxlan"), TENANTS, "leafspine", {"spines": 1, "leaves": 3}, EXTRA,
                 encap="vxlan")
    fab.agent = None
    servers = []
    try:
        fab.start()
        fab.api = fab.ctl.api()
        fab.agent = Agent(fab.emu, fab.api, fab.cfg).start()
        servers = [lab.serve_http(fab.host(n), 8080, n) for n in ("web2", "web3")]
        yield fab
    finally:
        for server in servers:
            server.terminate()
        if fab.agent is not None:
            fab.agent.stop()
        fab.stop()
    assert privateovs.sweep() == [], "a hypervisor's Open vSwitch outlived the emulation"


def underlay_capture(fab, seconds=6):
    spine = fab.emu.net.get("spine1")
    proc = spine.popen(["timeout", str(seconds), "tcpdump", "-l", "-n", "-e", "-i", "br0"],
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    lab.wait_tcpdump_ready()
    return proc


def frames(proc):
    """(outer line, inner line or "") per captured frame: tcpdump writes a
    tunnelled frame's inner packet on a line of its own, without a timestamp."""
    # (A MAC address starts with digits too: the whole timestamp tells them apart.)
    out = []
    for line in lab.captured(proc):
        if re.match(r"\d\d:\d\d:\d\d\.\d+ ", line):
            out.append([line, ""])
        elif out:
            out[-1][1] += line
    return out


def test_tenants_talk_across_vteps_and_a_full_size_tcp_transfer_works(fab):
    # wait_reachable() (in start) already saw every pair of each tenant ping.
    web1, web2 = fab.host("web1"), fab.host("web2")
    # 1472 bytes of ICMP payload: a 1500-byte IP packet, not fragmented, in a 1550-byte tunnel frame.
    assert "0% packet loss" in web1.cmd("ping -n -c 2 -W 1 -M do -s 1472 10.1.0.12")
    assert lab.iperf3(web2, web1, "10.1.0.12", seconds=2) > 0


def test_the_load_balancer_reaches_backends_on_other_hypervisors(fab):
    # Connection tracking and address translation at web1's hypervisor (leaf1),
    # then through the tunnel to each backend's.
    answers: set[str | None] = set()
    deadline = time.monotonic() + 10
    while not {"web2", "web3"} <= answers and time.monotonic() < deadline:
        answers.add(lab.http_get(fab.host("web1"), f"http://{VIP}/"))
    assert answers - {None} == {"web2", "web3"}, answers


def test_tenants_with_the_same_addresses_stay_isolated(fab):
    for src, dst in (("blue", "red"), ("red", "blue")):
        leaks = lab.cross_tenant_leaks(fab.emu, fab.cfg, src, dst)
        assert not any(leaks.values()), leaks


def test_the_underlay_carries_only_vxlan_with_each_tenants_vni(fab):
    macs = {vm.mac: tname for tname, t in fab.cfg.tenants.items() for vm in t.vms.values()}
    dump = underlay_capture(fab)
    for a, b in (("web1", "web2"), ("db1", "db2"), ("web3", "web1")):
        assert lab.ping(fab.host(a), str(fab.vm(b).ip), count=2, wait=1) >= 1
    seen = frames(dump)
    vnis = {}
    for outer, inner in seen:
        if " ARP" in outer:
            # The VTEPs' own neighbour resolution: underlay addresses only.
            assert re.search(r"192\.168\.254\.\d+", outer) and "10.1.0." not in outer, outer
            continue
        assert ".4789: VXLAN" in outer, f"a frame outside a tunnel on the underlay: {outer}"
        vni = int(re.search(r"vni (\d+)", outer).group(1))
        src = inner.split()[0] if inner else ""
        if src in macs:
            vnis.setdefault(macs[src], set()).add(vni)
    assert {"blue", "red"} <= set(vnis) and all(v == {VNI[t]} for t, v in vnis.items()), seen


def test_only_the_hypervisors_speak_openflow(fab):
    switches = {s["name"] for s in fab.ctl.api().get("/topology")["switches"]}
    assert switches == {"leaf1", "leaf2", "leaf3"}
    bridges = subprocess.run(["ovs-vsctl", "--timeout=5", "list-br"], capture_output=True, text=True).stdout.split()
    assert "spine1" not in bridges
    spine = fab.emu.net.get("spine1")
    assert spine.cmd("ip -o link show type bridge").count(": br0:") == 1
    assert f":{fab.ctl.port} " not in spine.cmd("ss -tn")


def _inject(fab, src_vtep, vni, dst_mac="02:00:00:00:01:02", dst_ip="10.1.0.12"):
    """A VXLAN frame onto the underlay toward leaf2's VTEP, as from ``src_vtep``,
    carrying an echo request from web1 to web2; the echo requests web2 then sees."""
    leaf2 = fab.emu.net.get("leaf2")
    phy_mac = leaf2.cmd("cat /sys/class/net/br-phy/address").strip()
    web2 = fab.host("web2")
    cap = lab.capture(web2, "icmp and ether src 02:00:00:00:01:01", 3)
    lab.wait_tcpdump_ready()
    frame = (f"Ether(dst='{phy_mac}')/IP(src='{src_vtep}', dst='192.168.254.2')/UDP(sport=40000, dport=4789)/"
             f"VXLAN(vni={vni})/Ether(src='02:00:00:00:01:01', dst='{dst_mac}')/"
             f"IP(src='10.1.0.11', dst='{dst_ip}')/ICMP(id=4242)")
    out = lab.send_scapy(fab.emu.net.get("spine1"), [frame], count=3, inter=0.05, iface="br0")
    assert "Error" not in out, out
    return [line for line in lab.captured(cap) if "id 4242" in line]


def test_tunnel_frames_need_a_known_vtep_and_the_tenants_vni(fab):
    # The control: from leaf1's VTEP with blue's VNI the frame is delivered,
    # so the two drops below are the checks at work, not a broken injection.
    assert _inject(fab, "192.168.254.1", VNI["blue"])
    assert not _inject(fab, "192.168.254.1", 70009), "a frame with a VNI of no tenant was delivered"
    assert not _inject(fab, "192.168.254.99", VNI["blue"]), "a frame from an unknown VTEP was delivered"


def tunnels_toward(fab, at, mac):
    """The VTEPs hypervisor ``at``'s flows send frames for ``mac`` to."""
    flows = fab.emu.net.get(at).ovs.ofctl("dump-flows", at).splitlines()
    return {vtep for line in flows if f"dl_dst={mac}" in line
            for vtep in re.findall(r"set_field:([\d.]+)->tun_dst", line)}


def test_a_live_migration_points_the_other_hypervisors_tunnels_at_the_new_vtep(fab):
    web1, web2 = fab.host("web1"), fab.vm("web2")
    assert tunnels_toward(fab, "leaf1", web2.mac) == {"192.168.254.2"}
    stream = lab.ping_stream(web1, str(web2.ip), seconds=3)
    client = lab.keepalive_client(web1, str(web2.ip), 8080, count=40, interval=0.05)
    time.sleep(0.5)
    rec = fab.api.post("/migrations", {"vm": "web2", "target": "leaf3", "mode": "live"})
    rec = fab.agent.wait(rec["id"], timeout=25)
    assert rec["outcome"] == "ok", rec
    # One TCP connection, established before the move, carried on after it.
    assert client.communicate(timeout=30)[0].split() == ["web2"] * 40
    gap, _, _ = lab.longest_gap(lab.reply_times(stream))
    assert gap <= rec["downtime"] + 0.05, (gap, rec)
    # The make-before-break flip rewrote tun_dst at web1's hypervisor; web2's
    # new neighbour on leaf3 reaches it without a tunnel.
    assert tunnels_toward(fab, "leaf1", web2.mac) == {"192.168.254.3"}
    assert tunnels_toward(fab, "leaf3", web2.mac) == set()
    assert lab.reachable(fab.host("web3"), str(web2.ip))
    assert lab.wait_for(lambda: lab.http_get(web1, f"http://{VIP}/") == "web2", 10), "the VIP lost web2"


def test_a_hypervisor_without_its_tunnel_port_fires_the_vtep_alert(fab, tmp_path):
    prom = Prometheus(tmp_path, fab.ctl.metrics_port)
    leaf2, port = fab.emu.net.get("leaf2"), fab.cfg.controller.fabric.tunnel_port
    try:
        until(lambda: len(prom.query("sdnvirt_vtep_up == 1")) == 3, 20, "three VTEPs up", prom.log)
        assert prom.firing("SdnvirtVtepDown") == []
        leaf2.ovs.vsctl("del-port", "leaf2", port)
        try:
            fires(prom, fab.ctl, "SdnvirtVtepDown", switch="leaf2", vtep="192.168.254.2")
            assert [a["switch"] for a in prom.firing("SdnvirtVtepDown")] == ["leaf2"]
        finally:
            leaf2.ovs.vsctl(*leaf2.tunnel_port_args())
        until(lambda: prom.query('sdnvirt_vtep_up{switch="leaf2"} == 1'), 20, "leaf2's VTEP back")
    finally:
        prom.stop()
    fab.wait_reachable()


def test_a_qemu_guest_on_a_hypervisors_own_switch_migrates_across_vteps(fab):
    g1, q1 = fab.host("g1"), fab.vm("q1")
    assert lab.wait_for(lambda: lab.ping(g1, str(q1.ip)), 60, interval=0.5), "the guest never answered"
    assert tunnels_toward(fab, "leaf1", q1.mac) == {"192.168.254.3"}
    rec = fab.api.post("/migrations", {"vm": "q1", "target": "leaf2", "mode": "live"})
    rec = fab.agent.wait(rec["id"], timeout=30)
    assert rec["outcome"] == "ok" and rec["qemu"]["status"] == "completed", rec
    guest = fab.emu.guests["q1"]
    assert guest.switch == "leaf2" and guest.alive()
    assert tunnels_toward(fab, "leaf1", q1.mac) == {"192.168.254.2"}
    assert lab.reachable(g1, str(q1.ip))


def test_kill_9_and_restart_loses_no_packet_and_rewrites_no_flow(fab):
    # Last: the QEMU guest has booted and moved, nothing is left to find.
    streams = [fab.host(src).popen(["ping", "-n", "-q", "-i", "0.01", "-c", "500", "-w", "15", str(fab.vm(dst).ip)],
                                   stdout=subprocess.PIPE, text=True)
               for src, dst in (("web1", "web2"), ("db1", "db2"))]
    time.sleep(1)
    fab.restart_controller(signal.SIGKILL)
    # The restarted daemon has read the hypervisors' flows, settled, and found nothing to change.
    assert fab.ctl.wait_event("switch_flows_read", {"warm": True}, timeout=10)
    for proc in streams:
        out, _ = proc.communicate(timeout=20)
        sent, received = lab.ping_stats(out)
        assert sent == 500 and received == sent, out
    time.sleep(1.5)
    assert not fab.ctl.events("reconciled"), [e["fields"] for e in fab.ctl.events(("reconciled", "vm_located"))]
