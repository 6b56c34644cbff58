"""The fabric model: links, ports, and the paths and flood trees computed from them."""

import itertools
import random

import networkx as nx
import pytest
from fabrics import leafspine

from sdnvirt.fabric import FAT_TREE_DPIDS, Fabric, fat_tree, flood_tree, hops_after, hops_toward, next_hops, path_nodes

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
def test_next_hops_after_a_link_change_are_worked_out_at_its_ends_or_afresh(name):
    g = FABRICS[name]().graph()
    for a, b in random.Random(16).sample(sorted(g.edges), 6):
        cut = g.copy()
        cut.remove_edge(a, b)
        for before, after in ((g, cut), (cut, g)):       # the link lost, then found again
            afresh = set()
            for dst in g:
                dist, hops = hops_toward(before, dst)
                kept = hops_after(after, dst, dist, hops, [(a, b)])
                assert kept is None or kept == next_hops(after, dst), (name, (a, b), dst)
                if kept is None:
                    afresh.add(dst)
            # The hop counts move toward few of the switches VMs are on (leaves, edge
            # switches): the one at the link's end, the edge switches below a lost aggregation.
            hypervisors = {dst for dst in g if dst >> 8 in (1, EDGE >> 8)}
            assert len(afresh & hypervisors) <= 2, (name, (a, b), afresh)


def test_paths_do_not_depend_on_discovery_order():
    a, b = fat_tree().graph(), fat_tree(reverse=True).graph()
    for dst in a:
        assert next_hops(a, dst) == next_hops(b, dst)


def test_next_hops_of_an_unknown_switch_are_empty():
    g = fat_tree().graph()
    assert next_hops(g, 0x999) == {}
    assert path_nodes(g, EDGE + 1, EDGE + 1, {}) == [EDGE + 1]


# -- flood trees -----------------------------------------------------------------

def check_flood_tree(g: nx.Graph, members: set, tree: nx.Graph) -> None:
    assert nx.is_tree(tree)
    assert members <= set(tree.nodes) <= set(g.nodes)
    for a, b, data in tree.edges(data=True):
        assert g.has_edge(a, b) and data["ports"] == g.edges[a, b]["ports"]
    # Pruned: no leaf that is not a member ...
    assert all(n in members for n in tree if tree.degree(n) <= 1)
    # ... and every other switch is needed: without it the members fall apart.
    for n in set(tree.nodes) - members:
        rest = tree.copy()
        rest.remove_node(n)
        parts = [c for c in nx.connected_components(rest) if c & members]
        assert len(parts) >= 2, n


def member_sets(g: nx.Graph):
    nodes = sorted(g.nodes)
    rng = random.Random(7)
    yield {nodes[0]}
    yield {nodes[-1]}
    yield {nodes[0], nodes[-1]}
    yield set(nodes)
    for size in (2, 3, 5):
        for _ in range(10):
            yield set(rng.sample(nodes, size))


@pytest.mark.parametrize("name", FABRICS)
def test_flood_tree_joins_exactly_the_members(name):
    g = FABRICS[name]().graph()
    for members in member_sets(g):
        check_flood_tree(g, members, flood_tree(g, members))


@pytest.mark.parametrize("name", FABRICS)
def test_flood_trees_of_all_tenants_are_parts_of_one_spanning_tree(name):
    # So that broadcast is loop-free for every tenant on a redundant fabric.
    g = FABRICS[name]().graph()
    spanning = flood_tree(g, set(g.nodes))
    assert nx.is_tree(spanning) and set(spanning.nodes) == set(g.nodes)
    for members in member_sets(g):
        tree = flood_tree(g, members)
        assert all(spanning.has_edge(a, b) for a, b in tree.edges)


def test_flood_tree_of_edge_switches_in_a_fat_tree():
    g = fat_tree().graph()
    # Two edge switches of one pod meet at an aggregation switch, not at a core.
    tree = flood_tree(g, {EDGE + 1, EDGE + 2})
    assert len(tree) == 3 and not any(CORE < n < AGG for n in tree)
    # Edge switches of two pods need a core switch.
    tree = flood_tree(g, {EDGE + 1, EDGE + 3})
    assert any(CORE < n < AGG for n in tree)


def test_flood_tree_of_one_member_is_that_switch():
    g = fat_tree().graph()
    tree = flood_tree(g, {EDGE + 5})
    assert list(tree.nodes) == [EDGE + 5] and tree.number_of_edges() == 0


def test_flood_tree_of_no_members_is_empty():
    g = fat_tree().graph()
    assert flood_tree(g, set()).number_of_nodes() == 0
    assert flood_tree(g, {0x999}).number_of_nodes() == 0


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


def test_disconnected_fabric_flood_tree_is_pruned_per_component():
    g = split_leafspine().graph()
    tree = flood_tree(g, {0x101, 0x102, 0x103})
    assert sorted(tree.nodes) == [0x101, 0x102, 0x103, 0x201]
    assert sorted(map(sorted, tree.edges)) == [[0x101, 0x201], [0x102, 0x201]]


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
