"""The Mininet topologies and the launcher's placement, in memory (no root)."""


import pytest

from sdnvirt import cli, config
from sdnvirt.emulation.launcher import Emulation, build_topo, place_vms
from sdnvirt.emulation.topologies import fattree, leafspine, single


def switch_links(topo):
    return [(a, b) for a, b in topo.links() if topo.isSwitch(a) and topo.isSwitch(b)]


def check_switches(topo):
    names = topo.switches()
    assert all(len(name) <= 10 for name in names)
    dpids = [topo.nodeInfo(name)["dpid"] for name in names]
    assert all(len(d) == 16 and int(d, 16) > 0 for d in dpids)
    assert len(set(dpids)) == len(dpids)
    assert set(topo.hypervisors()) <= set(names)


def test_single():
    topo = single.SingleTopo()
    check_switches(topo)
    assert topo.switches() == ["s1"]
    assert topo.nodeInfo("s1")["dpid"] == "0000000000000001"
    assert topo.hosts() == ["h1", "h2"]
    assert len(topo.links()) == 2
    assert topo.hypervisors() == ["s1"]
    assert single.topos == {"single": single.SingleTopo}


def test_leafspine_2x4():
    topo = leafspine.LeafSpineTopo(2, 4)
    check_switches(topo)
    assert len(topo.switches()) == 6
    assert len(switch_links(topo)) == 8
    assert topo.hosts() == ["h1", "h2", "h3", "h4"]
    assert len(topo.links()) == 12
    assert topo.hypervisors() == ["leaf1", "leaf2", "leaf3", "leaf4"]
    for leaf in topo.hypervisors():
        assert sorted(topo.g[leaf]) == [f"h{leaf[-1]}", "spine1", "spine2"]
    assert topo.nodeInfo("leaf1")["dpid"] == "0000000000000101"
    assert topo.nodeInfo("spine1")["dpid"] == "0000000000000201"
    assert leafspine.topos == {"leafspine": leafspine.LeafSpineTopo}


def test_leafspine_hosts_per_leaf():
    assert leafspine.LeafSpineTopo(1, 2, hosts_per_leaf=0).hosts() == []
    assert len(leafspine.LeafSpineTopo(1, 2, hosts_per_leaf=3).hosts()) == 6


def test_fattree_k4():
    topo = fattree.FatTreeTopo(4)
    check_switches(topo)
    names = topo.switches()
    assert len(names) == 20
    assert sum(n.startswith("core") for n in names) == 4
    assert sum(n.startswith("agg") for n in names) == 8
    assert sum(n.startswith("edge") for n in names) == 8
    assert len(switch_links(topo)) == 32
    assert len(topo.hosts()) == 16
    assert topo.hypervisors() == [f"edge{i}" for i in range(1, 9)]
    # Every switch has k ports: hosts + uplinks on edges, down + up elsewhere.
    assert all(len(topo.ports[n]) == 4 for n in names)
    # Every host hangs off an edge switch.
    for host in topo.hosts():
        (peer,) = topo.g[host]
        assert peer.startswith("edge")
    assert fattree.topos == {"fattree": fattree.FatTreeTopo}


def test_fattree_small_and_host_count():
    topo = fattree.FatTreeTopo(2, hosts_per_edge=0)
    assert len(topo.switches()) == 5
    assert topo.hosts() == []
    assert len(fattree.FatTreeTopo(6).hosts()) == 54


@pytest.mark.parametrize("k", [3, 5, 0, 1, -2])
def test_fattree_rejects_bad_k(k):
    with pytest.raises(ValueError):
        fattree.FatTreeTopo(k)


def test_dpids_unique_across_roles():
    topo = fattree.FatTreeTopo(6)
    dpids = [topo.nodeInfo(n)["dpid"] for n in topo.switches()]
    assert len(set(dpids)) == len(dpids) == 45


# -- launcher -----------------------------------------------------------------

def test_build_topo_from_cli_arguments():
    parser = cli.parser()
    args = parser.parse_args(["topo", "leafspine", "--config", "x.yaml", "--spines", "3", "--leaves", "2"])
    topo = build_topo("leafspine", args)
    assert topo.switches() == ["leaf1", "leaf2", "spine1", "spine2", "spine3"]
    assert topo.hosts() == []          # the launcher adds the VMs itself
    assert len(build_topo("fattree", parser.parse_args(["topo", "fattree", "--config", "x"])).switches()) == 20
    assert build_topo("single", {}).switches() == ["s1"]
    assert build_topo("single", {}).hosts() == []
    with pytest.raises(ValueError, match="unknown topology"):
        build_topo("ring", args)
    with pytest.raises(ValueError):
        build_topo("fattree", {"k": 3})


def make_config(**hosts):
    vms = {name: {"mac": f"02:00:00:00:00:{i + 1:02x}", "ip": f"10.0.0.{i + 1}",
                  **({"host": host} if host else {})}
           for i, (name, host) in enumerate(hosts.items())}
    return config.parse({"tenants": {"blue": {"segment": 101, "subnet": "10.0.0.0/24", "vms": vms}}})


def test_placement_explicit_and_round_robin():
    cfg = make_config(a="leaf2", b=None, c=None, d=None, e="leaf1")
    topo = build_topo("leafspine", {"spines": 1, "leaves": 2})
    assert place_vms(cfg, topo) == {"a": "leaf2", "b": "leaf1", "c": "leaf2", "d": "leaf1", "e": "leaf1"}


def test_emulation_build_topo_adds_vm_hosts():
    cfg = make_config(web1="leaf1", web2="leaf2")
    emu = Emulation(cfg, "leafspine", {"spines": 2, "leaves": 2})
    topo = emu.build_topo()
    assert topo.hosts() == ["web1", "web2"]
    assert topo.nodeInfo("web1") == {"mac": "02:00:00:00:00:01", "ip": "10.0.0.1/24"}
    assert list(topo.g["web2"]) == ["leaf2"]
    assert emu.hypervisor("web1") == "leaf1"


def test_emulation_rejects_vm_not_on_a_hypervisor():
    # Validation happens before anything is created, so no root is needed.
    cfg = make_config(web1="leaf1", web2="spine1")
    emu = Emulation(cfg, "leafspine", {"spines": 2, "leaves": 4})
    with pytest.raises(ValueError, match=r"VM web2 .*spine1 is not a hypervisor"):
        emu.start()
    assert emu.net is None


def test_emulation_rejects_long_or_clashing_vm_names():
    with pytest.raises(ValueError, match="VM averylongname"):
        Emulation(make_config(averylongname=None), "single", {}).start()
    with pytest.raises(ValueError, match="VM s1 .*already used"):
        Emulation(make_config(s1=None), "single", {}).start()
