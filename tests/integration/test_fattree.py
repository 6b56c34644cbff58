"""Tenant networks across the pods of a k=4 fat tree."""

import pytest

from sdnvirt.emulation import lab

from .conftest import Fabric

pytestmark = pytest.mark.integration


def _tenant(segment, third_octet_vms):
    return {"segment": segment, "subnet": "10.2.0.0/24", "vms": {
        name: {"mac": f"02:00:00:00:{segment - 200:02x}:{i + 1:02x}", "ip": f"10.2.0.{10 + i}", "host": edge}
        for i, (name, edge) in enumerate(third_octet_vms)}}


# Both tenants use 10.2.0.10-13, spread over all four pods.
TENANTS = {
    "green": _tenant(201, [("g1", "edge1"), ("g2", "edge3"), ("g3", "edge5"), ("g4", "edge8")]),
    "amber": _tenant(202, [("a1", "edge1"), ("a2", "edge4"), ("a3", "edge6"), ("a4", "edge7")]),
}


@pytest.fixture(scope="module")
def fattree(tmp_path_factory):
    fab = Fabric(tmp_path_factory.mktemp("fattree"), TENANTS, "fattree", {"k": 4})
    try:
        yield fab.start()
    finally:
        fab.stop()


def test_reachability_matrix_across_pods(fattree):
    for tenant, a, b in fattree.pairs():
        assert lab.reachable(fattree.host(a), str(fattree.vm(b).ip)), (tenant, a, b)


@pytest.mark.parametrize("src,dst", [("green", "amber"), ("amber", "green")])
def test_isolation_across_pods(fattree, src, dst):
    leaks = lab.cross_tenant_leaks(fattree.emu, fattree.cfg, src, dst)
    assert leaks and all(seen == [] for seen in leaks.values()), leaks


def test_broadcast_reaches_each_tenant_peer_exactly_once(fattree):
    peers = [n for n in TENANTS["green"]["vms"] if n != "g1"] + list(TENANTS["amber"]["vms"])
    caps = {n: lab.capture(fattree.host(n), "ether src 02:00:00:00:01:01 and udp", 4) for n in peers}
    lab.wait_tcpdump_ready()
    lab.send_scapy(fattree.host("g1"), [
        'Ether(src="02:00:00:00:01:01", dst="ff:ff:ff:ff:ff:ff")/IP(src="10.2.0.10", dst="10.2.0.255")/UDP(dport=9)'])
    for name in peers:
        want = 1 if name.startswith("g") else 0
        assert len(lab.captured(caps[name])) == want, name
