"""The switch fabric as the controller sees it: switches, ports, links, paths.

Paths are chosen deterministically (no hash randomisation, no dependence on
discovery order) so that a restarted controller plans exactly the flows that
are already installed and changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import networkx as nx

PortRef = tuple[int, int]   # (dpid, port number)


@dataclass
class Switch:
    dpid: int
    name: str = ""
    ports: dict[int, bool] = field(default_factory=dict)   # port number -> up
    port_names: dict[int, str] = field(default_factory=dict)

    def port_named(self, name: str) -> int | None:
        """The number of the port called ``name`` (a tunnel port is known by its name)."""
        return next((p for p, n in sorted(self.port_names.items()) if n == name), None)


class Fabric:
    def __init__(self) -> None:
        self.switches: dict[int, Switch] = {}
        # One entry per direction seen; changed through the methods below only,
        # which keep what is derived from it (asked for on every plan) in step.
        self.links: dict[PortRef, PortRef] = {}
        self._confirmed: tuple[tuple[PortRef, PortRef], ...] | None = None
        self._fabric_ports: dict[int, list[int]] = {}

    def _links_changed(self) -> None:
        self._confirmed = None
        self._fabric_ports = {}

    # -- changes -------------------------------------------------------------
    def add_switch(self, dpid: int) -> Switch:
        return self.switches.setdefault(dpid, Switch(dpid))

    def remove_switch(self, dpid: int) -> bool:
        """Forget a switch and every link that touches it; True if links went."""
        self.switches.pop(dpid, None)
        gone = [a for a, b in self.links.items() if a[0] == dpid or b[0] == dpid]
        for a in gone:
            self.forget_link(a)
        return bool(gone)

    def set_port(self, dpid: int, port: int, up: bool, name: str = "") -> bool:
        """Record a port's state; True if links went away because it is down."""
        sw = self.add_switch(dpid)
        sw.ports[port] = up
        if name:
            sw.port_names[port] = name
        return False if up else self.remove_links_at((dpid, port))

    def remove_port(self, dpid: int, port: int) -> bool:
        sw = self.switches.get(dpid)
        if sw:
            sw.ports.pop(port, None)
            sw.port_names.pop(port, None)
        return self.remove_links_at((dpid, port))

    def add_link(self, src: PortRef, dst: PortRef) -> bool:
        """A frame sent out of src arrived at dst; True if the fabric changed.

        A link is only used once it has been heard in both directions between
        two different switches: a host that echoes the controller's LLDP back
        into its own port cannot turn that port into a fabric port.
        """
        if src[0] == dst[0] or self.links.get(src) == dst:
            return False
        # A port has one peer: a stale link through either end is replaced,
        # but the same link seen the other way round stays.
        for a, b in list(self.links.items()):
            if (a, b) != (dst, src) and ({a, b} & {src, dst}):
                del self.links[a]
        self.links[src] = dst
        self._links_changed()
        return True

    def remove_links_at(self, ref: PortRef) -> bool:
        gone = [a for a, b in self.links.items() if a == ref or b == ref]
        for a in gone:
            self.forget_link(a)
        return bool(gone)

    def forget_link(self, src: PortRef) -> None:
        """The link heard from ``src`` is no more (in that direction)."""
        if self.links.pop(src, None) is not None:
            self._links_changed()

    # -- queries -------------------------------------------------------------
    def confirmed_links(self) -> tuple[tuple[PortRef, PortRef], ...]:
        """Links heard in both directions: the only ones paths and tags use."""
        if self._confirmed is None:
            self._confirmed = tuple(sorted((a, b) for a, b in self.links.items() if self.links.get(b) == a))
        return self._confirmed

    def is_fabric_port(self, dpid: int, port: int) -> bool:
        return port in self.fabric_ports(dpid)

    def fabric_ports(self, dpid: int) -> list[int]:
        if not self._fabric_ports:
            for (at, port), _ in self.confirmed_links():
                self._fabric_ports.setdefault(at, []).append(port)    # in order, once each
        return list(self._fabric_ports.get(dpid, ()))

    def edge_ports(self, dpid: int) -> list[int]:
        """Ports that are up and lead to no other switch: where VMs plug in."""
        sw = self.switches.get(dpid)
        if not sw:
            return []
        return sorted(p for p, up in sw.ports.items() if up and not self.is_fabric_port(dpid, p))

    def port_live(self, dpid: int, port: int) -> bool:
        sw = self.switches.get(dpid)
        return bool(sw and sw.ports.get(port))

    def graph(self) -> nx.Graph[int]:
        """Switches joined by links; between two switches the lowest-numbered link is used."""
        g: nx.Graph[int] = nx.Graph()
        g.add_nodes_from(sorted(self.switches))
        for (a, pa), (b, pb) in self.confirmed_links():
            # Each link is read once, from its lower-dpid end, so the choice
            # among parallel links is the same whichever end spoke first.
            if a > b or a not in self.switches or b not in self.switches:
                continue
            ports = g.edges[a, b]["ports"] if g.has_edge(a, b) else None
            if ports is None or (pa, pb) < (ports[a], ports[b]):
                g.add_edge(a, b, ports={a: pa, b: pb})
        return g


def leaf_spine(spines: int = 2, leaves: int = 4, vm_ports: int = 3,
               tunnel_port: tuple[int, str] | None = None) -> Fabric:
    """A leaf-spine as discovery finds it, to plan without switches (the tests, bench/planner.py).

    Leaf i has dpid 0x100+i, spine j 0x200+j; leaf port j links to spine j,
    ports spines+1.. are access ports; spine port i links to leaf i.
    ``tunnel_port``: (number, name) of a VXLAN port every leaf has too."""
    if not (0 < spines < 0x100 and 0 < leaves < 0x100):
        raise ValueError(f"a leaf-spine of {spines} spines and {leaves} leaves: 1 to 255 of each")
    fab = Fabric()
    for i in range(1, leaves + 1):
        leaf = fab.add_switch(0x100 + i)
        leaf.name = f"leaf{i}"
        for p in range(1, spines + vm_ports + 1):
            fab.set_port(leaf.dpid, p, True)
        if tunnel_port is not None:
            fab.set_port(leaf.dpid, tunnel_port[0], True, tunnel_port[1])
    for j in range(1, spines + 1):
        spine = fab.add_switch(0x200 + j)
        spine.name = f"spine{j}"
        for i in range(1, leaves + 1):
            fab.set_port(spine.dpid, i, True)
            fab.add_link((0x100 + i, j), (0x200 + j, i))
            fab.add_link((0x200 + j, i), (0x100 + i, j))
    return fab


FAT_TREE_DPIDS = (0x300, 0x400, 0x500)   # core, aggregation, edge: as sdnvirt/emulation/topologies/fattree.py


def fat_tree(k: int = 4, vm_ports: int | None = None, reverse: bool = False) -> Fabric:
    """A k-ary fat tree as discovery finds it, wired like sdnvirt/emulation/topologies/fattree.py.

    Every switch numbers its ports from 1 in the order its links are made;
    edge switches (the hypervisors) then get ``vm_ports`` access ports (k/2
    unless said).  Both directions of every link are reported, as LLDP would;
    ``reverse`` reports them in the opposite order."""
    if k < 2 or k % 2 or (k // 2) ** 2 > 0xFF or k * k // 2 > 0xFF:
        raise ValueError(f"a fat tree of radix {k}: an even k from 2 to 22")
    core_base, agg_base, edge_base = FAT_TREE_DPIDS
    half = k // 2
    fab = Fabric()
    next_port: dict[int, int] = {}
    wires = []

    def port(dpid: int) -> int:
        p = next_port[dpid] = next_port.get(dpid, 0) + 1
        fab.set_port(dpid, p, True)
        return p

    cores = [core_base + i for i in range(1, half * half + 1)]
    for dpid in cores:
        fab.add_switch(dpid)
    edges = []
    for pod in range(k):
        aggs = [agg_base + pod * half + j + 1 for j in range(half)]
        for j, agg in enumerate(aggs):
            wires += [((agg, port(agg)), (core, port(core))) for core in cores[j * half:(j + 1) * half]]
        for j in range(half):
            edge = edge_base + pod * half + j + 1
            edges.append(edge)
            wires += [((edge, port(edge)), (agg, port(agg))) for agg in aggs]
    for edge in edges:
        for _ in range(half if vm_ports is None else vm_ports):
            port(edge)
    for a, b in (reversed(wires) if reverse else wires):
        fab.add_link(a, b)
        fab.add_link(b, a)
    for dpid, sw in fab.switches.items():
        kind = ("core", "agg", "edge")[dpid // 0x100 - 3]
        sw.name = f"{kind}{dpid & 0xFF}"
    return fab


def next_hops(g: nx.Graph[int], dst: int) -> dict[int, int]:
    """For every switch that can reach ``dst``: the port it sends out of toward ``dst``.

    Each hop strictly lowers the distance to ``dst``, so the result is loop-free;
    among equal-cost neighbours the destination's dpid picks one (modulo their
    number), which spreads consecutive destinations over the spines of a
    leaf-spine or fat tree and stays the same across restarts.
    """
    return hops_toward(g, dst)[1]


def hops_toward(g: nx.Graph[int], dst: int) -> tuple[dict[int, int], dict[int, int]]:
    """The hop counts to ``dst`` of the switches that reach it, and their ``next_hops``."""
    if dst not in g:
        return {}, {}
    dist = nx.single_source_shortest_path_length(g, dst)
    return dist, {node: _pick(g, dst, dist, node) for node in dist if node != dst}


def hops_after(g: nx.Graph[int], dst: int, dist: dict[int, int], hops: dict[int, int],
               changed: Iterable[tuple[int, int]]) -> tuple[dict[int, int], dict[int, int], set[int]]:
    """``hops_toward(g, dst)`` from ``hops_toward`` of a graph that differed from ``g`` only
    in the links between the pairs of switches ``changed`` (lost, found or on other ports),
    and the switches whose next hop toward ``dst`` is not the same (or that no longer have one).

    While every switch keeps a neighbour one hop closer and no new link is a shortcut,
    the hop counts hold, and only the switches at the ends of the changed links may pick
    another neighbour.  Otherwise the hop counts are counted again, and only the switches
    whose count, or a neighbour's, moved pick again: a link change costs what it moves,
    not the whole fabric."""
    if _counts_hold(g, dist, changed):
        # Only the farther end of a link between two hop counts has it among its closer neighbours.
        new_dist = dist
        again = {far for a, b in changed if a in dist and b in dist and dist[a] != dist[b]
                 for far in ((a if dist[a] > dist[b] else b),)}
    else:
        new_dist = nx.single_source_shortest_path_length(g, dst) if dst in g else {}
        moved = {n for n, d in new_dist.items() if dist.get(n) != d}
        again = {a for pair in changed for a in pair} | moved | {m for n in moved for m in g.neighbors(n)}
    picked = {n: p for n in again if n in new_dist and n != dst
              for p in (_pick(g, dst, new_dist, n),) if hops.get(n) != p}
    gone = {n for n in hops if n not in new_dist} if new_dist is not dist else set()
    if not picked and not gone:
        return new_dist, hops, set()      # the same object: what reads it sees nothing moved
    new_hops = {n: p for n, p in hops.items() if n not in gone}
    new_hops.update(picked)
    return new_dist, new_hops, gone | picked.keys()


def _counts_hold(g: nx.Graph[int], dist: dict[int, int], changed: Iterable[tuple[int, int]]) -> bool:
    """Whether the hop counts ``dist`` still hold in ``g``, which differs from the graph they
    were counted on in the links between the pairs ``changed`` only."""
    for a, b in changed:
        if g.has_edge(a, b):
            if (a in dist) != (b in dist) or abs(dist.get(a, 0) - dist.get(b, 0)) > 1:
                return False
        elif a in dist and b in dist and dist[a] != dist[b]:
            far = a if dist[a] > dist[b] else b
            if not any(dist.get(n) == dist[far] - 1 for n in g.neighbors(far)):
                return False
    return True


def _pick(g: nx.Graph[int], dst: int, dist: dict[int, int], node: int) -> int:
    """The port of ``node`` toward ``dst``: to the closer neighbour the destination's dpid picks."""
    closer = sorted(n for n in g.neighbors(node) if dist.get(n) == dist[node] - 1)
    return int(g.edges[node, closer[dst % len(closer)]]["ports"][node])


def path_nodes(g: nx.Graph[int], src: int, dst: int, hops: dict[int, int]) -> list[int]:
    """Switches a frame from ``src`` visits on its way to ``dst`` following ``hops``."""
    if src == dst:
        return [src]
    if src not in hops:
        return []
    nodes = [src]
    while nodes[-1] != dst:
        node = nodes[-1]
        port = hops[node]
        nodes.append(next(n for n in g.neighbors(node) if g.edges[node, n]["ports"][node] == port))
    return nodes


def spanning_tree(g: nx.Graph[int]) -> nx.Graph[int]:
    """The fabric-wide spanning tree every tenant's broadcast follows: BFS from the
    lowest dpid of each component, neighbours in order (the same whatever the
    order links were found in, so a restarted controller plans the same tree)."""
    tree: nx.Graph[int] = nx.Graph()
    for component in nx.connected_components(g):
        root = min(component)
        tree.add_node(root)
        for parent, child in nx.bfs_edges(g, root, sort_neighbors=sorted):
            tree.add_edge(parent, child, **g.edges[parent, child])
    return tree
