"""VXLAN mode's emulated underlay: its address plans and its loop check."""

import ipaddress

import pytest

from sdnvirt.emulation.underlay import has_loops, mgmt_addresses, vtep_network


def test_management_links_are_distinct_31s_of_the_benchmarking_range():
    seen = set()
    for i in range(300):
        root, here = mgmt_addresses(i)
        assert root.network == here.network and root.network.prefixlen == 31
        assert root.ip != here.ip
        assert root.network.subnet_of(ipaddress.IPv4Network("198.18.0.0/15"))
        seen.add(root.network)
    assert len(seen) == 300
    with pytest.raises(ValueError, match="at most"):
        mgmt_addresses(65536)


def test_vtep_network_holds_every_vtep_and_is_at_least_a_24():
    a = ipaddress.IPv4Address
    assert vtep_network([a("192.168.254.1"), a("192.168.254.2")]) == ipaddress.IPv4Network("192.168.254.0/24")
    assert vtep_network([a("10.0.1.1"), a("10.0.2.1")]) == ipaddress.IPv4Network("10.0.0.0/22")
    with pytest.raises(ValueError):
        vtep_network([])


def test_loops_are_found_in_a_leaf_spine_with_two_spines_only():
    leaves = ["leaf1", "leaf2", "leaf3"]
    one_spine = [(leaf, "spine1") for leaf in leaves]
    assert not has_loops([*leaves, "spine1"], one_spine)
    two_spines = one_spine + [(leaf, "spine2") for leaf in leaves]
    assert has_loops([*leaves, "spine1", "spine2"], two_spines)
    assert has_loops(["a", "b"], [("a", "b"), ("a", "b")])
