"""The fabric model: links, ports, and the paths and flood trees computed from them."""

import itertools
import random

import networkx as nx
import pytest
from fabrics import leafspine

from sdnvirt.fabric import (
    FAT_TREE_DPIDS,
    Fabric,
    fat_tree,
    hops_after,
    hops_toward,
    next_hops,
    path_nodes,
    spanning_tree,
)

CORE, AGG, EDGE = FAT_TREE_DPIDS


def two_switches(*ports) -> Fabric:
    fab = Fabric()
    for dpid in (1, 2, 3):
        for p in ports or range(1, 9):
            fab.set_port(dpid, p, True)
    return fab


FABRICS = {
    "leafspine": leafspine,
    "leafspine-4x8": lambda: leafspine(spines=4, leaves=8),
    "fattree-4": fat_tree,
}


# -- links -----------------------------------------------------------------------

def test_add_link_reports_only_new_links():
    fab = two_switches()
    assert fab.add_link((1, 1), (2, 1)) is True
    assert fab.add_link((1, 1), (2, 1)) is False
    assert fab.links == {(1, 1): (2, 1)}


def test_add_link_replaces_a_stale_link_from_the_same_port():
    fab = two_switches()
    fab.add_link((1, 1), (2, 1))
    # Port 1 of switch 1 has been recabled to switch 3.
    assert fab.add_link((1, 1), (3, 1)) is True
    assert fab.links == {(1, 1): (3, 1)}
    assert not fab.is_fabric_port(2, 1)
    assert fab.edge_ports(2) == list(range(1, 9))


def test_add_link_replaces_a_stale_link_to_the_same_port():
    fab = two_switches()
    fab.add_link((1, 1), (2, 1))
    fab.add_link((1, 2), (3, 2))
    # Port 1 of switch 2 now hears switch 3 instead of switch 1.
    assert fab.add_link((3, 5), (2, 1)) is True
    assert fab.links == {(1, 2): (3, 2), (3, 5): (2, 1)}
    assert not fab.is_fabric_port(1, 1)


def test_add_link_keeps_both_directions_of_one_link():
    fab = two_switches()
    assert fab.add_link((1, 1), (2, 1)) is True
    assert fab.add_link((2, 1), (1, 1)) is True
    assert fab.links == {(1, 1): (2, 1), (2, 1): (1, 1)}
    # Hearing either direction again (every LLDP round) is nothing new.
    assert fab.add_link((1, 1), (2, 1)) is False
    assert fab.add_link((2, 1), (1, 1)) is False


def test_add_link_replaces_both_directions_of_a_stale_link():
    fab = two_switches()
    fab.add_link((1, 1), (2, 1))
    fab.add_link((2, 1), (1, 1))
    assert fab.add_link((3, 4), (1, 1)) is True
    assert fab.links == {(3, 4): (1, 1)}
    assert fab.fabric_ports(2) == []


def test_port_down_removes_the_links_at_that_port():
    fab = two_switches()
    fab.add_link((1, 1), (2, 1))
    fab.add_link((1, 2), (3, 2))
    assert fab.set_port(2, 1, False) is True
    assert fab.links == {(1, 2): (3, 2)}
    assert not fab.is_fabric_port(1, 1)
    assert fab.switches[2].ports[1] is False


def test_port_state_changes_without_links_report_nothing():
    fab = two_switches()
    fab.add_link((1, 1), (2, 1))
    assert fab.set_port(1, 5, False) is False
    assert fab.set_port(1, 1, True) is False
    assert fab.links == {(1, 1): (2, 1)}


def test_remove_port_removes_its_links():
    fab = two_switches()
    fab.add_link((1, 1), (2, 1))
    assert fab.remove_port(1, 1) is True
    assert fab.links == {}
    assert 1 not in fab.switches[1].ports


def test_remove_switch_removes_its_links_at_both_ends():
    fab = two_switches()
    fab.add_link((1, 1), (2, 1))
    fab.add_link((3, 1), (2, 2))
    fab.add_link((1, 3), (3, 3))
    assert fab.remove_switch(2) is True
    assert 2 not in fab.switches
    assert fab.links == {(1, 3): (3, 3)}
    assert 2 not in fab.graph()
    assert fab.remove_switch(2) is False


# -- ports -----------------------------------------------------------------------

def wire(fab, a, b):
    """A cable between a and b, heard by LLDP in both directions."""
    fab.add_link(a, b)
    fab.add_link(b, a)


def test_edge_ports_exclude_fabric_ports_and_down_ports():
    fab = two_switches(1, 2, 3, 4, 5)
    wire(fab, (1, 1), (2, 1))
    wire(fab, (3, 2), (1, 2))
    fab.set_port(1, 4, False)
    assert fab.fabric_ports(1) == [1, 2]
    assert fab.edge_ports(1) == [3, 5]
    assert fab.edge_ports(99) == []
    assert fab.port_live(1, 3) and not fab.port_live(1, 4) and not fab.port_live(99, 1)


def test_a_port_that_comes_back_up_is_an_edge_port_again():
    fab = two_switches(1, 2)
    fab.add_link((1, 1), (2, 1))
    fab.set_port(1, 1, False)
    fab.set_port(1, 1, True)
    assert fab.edge_ports(1) == [1, 2]


# -- the graph -------------------------------------------------------------------

def test_graph_has_every_switch_and_link_once():
    fab = fat_tree()
    g = fab.graph()
    assert sorted(g.nodes) == sorted(fab.switches)
    assert g.number_of_nodes() == 20 and g.number_of_edges() == 32
    for a, b, data in g.edges(data=True):
        assert set(data["ports"]) == {a, b}
        assert fab.is_fabric_port(a, data["ports"][a]) and fab.is_fabric_port(b, data["ports"][b])


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_graph_uses_the_lowest_numbered_of_parallel_links(order):
    fab = two_switches()
    wires = [((1, 1), (2, 1)), ((1, 4), (2, 4)), ((1, 6), (2, 6))]
    for i in order:
        wire(fab, *wires[i])
    assert fab.graph().edges[1, 2]["ports"] == {1: 1, 2: 1}


def test_graph_choice_of_parallel_links_does_not_depend_on_discovery_order():
    # Numbered differently at the two ends: 1:1-2:5 and 1:2-2:3.
    wires = [((1, 1), (2, 5)), ((1, 2), (2, 3))]
    directions = [(a, b) for a, b in wires] + [(b, a) for a, b in wires]
    chosen = set()
    for order in itertools.permutations(directions):
        fab = two_switches()
        for a, b in order:
            fab.add_link(a, b)
        ports = fab.graph().edges[1, 2]["ports"]
        assert ((1, ports[1]), (2, ports[2])) in wires
        chosen.add(tuple(sorted(ports.items())))
    assert len(chosen) == 1


def test_graph_ignores_links_to_unknown_switches_and_loops():
    fab = two_switches()
    fab.add_link((1, 1), (9, 1))
    fab.add_link((1, 2), (1, 3))
    g = fab.graph()
    assert sorted(g.nodes) == [1, 2, 3]
    assert g.number_of_edges() == 0


# -- unicast paths ---------------------------------------------------------------

def neighbour(g, node, port):
    [peer] = [n for n in g.neighbors(node) if g.edges[node, n]["ports"][node] == port]
    return peer


@pytest.mark.parametrize("name", FABRICS)
def test_next_hops_strictly_approach_the_destination_and_reach_every_switch(name):
    fab = FABRICS[name]()
    g = fab.graph()
    for dst in g:
        dist = nx.single_source_shortest_path_length(g, dst)
        hops = next_hops(g, dst)
        assert set(hops) == set(g) - {dst}
        for node, port in hops.items():
            assert port in fab.fabric_ports(node)
            assert dist[neighbour(g, node, port)] == dist[node] - 1
        # Following the hops from anywhere ends at dst without revisiting a switch.
        for src in hops:
            seen, at = {src}, src
            while at != dst:
                at = neighbour(g, at, hops[at])
                assert at not in seen
                seen.add(at)


@pytest.mark.parametrize("name", FABRICS)
def test_path_nodes_follow_next_hops(name):
    g = FABRICS[name]().graph()
    for dst in g:
        hops = next_hops(g, dst)
        dist = nx.single_source_shortest_path_length(g, dst)
        for src in g:
            path = path_nodes(g, src, dst, hops)
            assert path[0] == src and path[-1] == dst
            assert len(path) == dist[src] + 1
            for here, there in itertools.pairwise(path):
                assert g.edges[here, there]["ports"][here] == hops[here]


def test_next_hops_spread_destinations_over_the_spines():
    g = leafspine(spines=2, leaves=4).graph()
    spine_of = {dst: neighbour(g, 0x101, next_hops(g, dst)[0x101]) for dst in (0x102, 0x103, 0x104)}
    assert set(spine_of.values()) == {0x201, 0x202}


@pytest.mark.parametrize("name", FABRICS)
def test_next_hops_after_a_link_change_are_worked_out_from_the_last_ones(name):
    g = FABRICS[name]().graph()
    for a, b in random.Random(16).sample(sorted(g.edges), 6):
        cut = g.copy()
        cut.remove_edge(a, b)
        for before, after in ((g, cut), (cut, g)):       # the link lost, then found again
            for dst in g:
                dist, hops = hops_toward(before, dst)
                new_dist, new_hops, moved = hops_after(after, dst, dist, hops, [(a, b)])
                assert (new_dist, new_hops) == hops_toward(after, dst), (name, (a, b), dst)
                assert moved == {at for at, _ in hops.items() ^ new_hops.items()}


def test_paths_do_not_depend_on_discovery_order():
    a, b = fat_tree().graph(), fat_tree(reverse=True).graph()
    for dst in a:
        assert next_hops(a, dst) == next_hops(b, dst)


def test_next_hops_of_an_unknown_switch_are_empty():
    g = fat_tree().graph()
    assert next_hops(g, 0x999) == {}
    assert path_nodes(g, EDGE + 1, EDGE + 1, {}) == [EDGE + 1]


# -- flood trees -----------------------------------------------------------------

@pytest.mark.parametrize("name", FABRICS)
def test_broadcast_follows_one_spanning_tree_of_the_whole_fabric(name):
    # Loop-free for every tenant on a redundant fabric, and the same whatever the order links came in.
    g = FABRICS[name]().graph()
    tree = spanning_tree(g)
    assert nx.is_tree(tree) and set(tree.nodes) == set(g.nodes)
    for a, b, data in tree.edges(data=True):
        assert g.has_edge(a, b) and data["ports"] == g.edges[a, b]["ports"]
    assert set(spanning_tree(nx.Graph(sorted(g.edges(data=True), reverse=True))).edges) == set(tree.edges)


# -- a fabric in two pieces ------------------------------------------------------

def split_leafspine() -> Fabric:
    """Leaves 1-2 only reach spine 1, leaves 3-4 only spine 2: two components."""
    fab = leafspine(spines=2, leaves=4)
    for leaf, spine_port in ((0x101, 2), (0x102, 2), (0x103, 1), (0x104, 1)):
        fab.set_port(leaf, spine_port, False)
    return fab


def test_disconnected_fabric_next_hops_cover_only_the_destinations_component():
    g = split_leafspine().graph()
    assert not nx.is_connected(g)
    left = {0x101, 0x102, 0x201}
    for dst in g:
        component = nx.node_connected_component(g, dst)
        assert component in (left, set(g) - left)
        hops = next_hops(g, dst)
        assert set(hops) == component - {dst}
        for src in set(g) - component:
            assert path_nodes(g, src, dst, hops) == []


def test_disconnected_fabric_has_a_spanning_tree_per_component():
    g = split_leafspine().graph()
    tree = spanning_tree(g)
    assert set(tree.nodes) == set(g.nodes)
    assert sorted(map(set, nx.connected_components(tree)), key=min) == \
        sorted(map(set, nx.connected_components(g)), key=min)
    assert nx.is_forest(tree)


def test_a_link_heard_one_way_only_is_not_used():
    fab = two_switches(1, 2)
    fab.add_link((1, 1), (2, 1))
    assert fab.fabric_ports(1) == [] and fab.graph().number_of_edges() == 0
    fab.add_link((2, 1), (1, 1))
    assert fab.fabric_ports(1) == [1] and fab.graph().number_of_edges() == 1


def test_lldp_echoed_back_into_its_own_switch_makes_no_link():
    # A host on a free port that reflects the controller's LLDP must not
    # turn its port into a fabric port (it would then accept tagged frames).
    fab = two_switches(1, 2)
    assert not fab.add_link((1, 1), (1, 1))
    assert not fab.add_link((1, 1), (1, 2))
    assert fab.fabric_ports(1) == []
