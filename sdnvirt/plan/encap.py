"""How a tenant's frames travel between switches: the only code that puts a segment on the wire.

The features ask an ``Encap`` three things: how a frame goes on toward the
switch of its destination (forwarding), how a broadcast reaches the other
switches of its tenant (flooding), and how a frame that came from another
switch is recognised and unwrapped (fabric ingress).  Which switches a frame
crosses is the encapsulation's business too: VLAN mode walks the fabric hop
by hop, an overlay goes straight to the destination's hypervisor.

A VXLAN overlay (DESIGN.md) is one more subclass and its name in
``controller.fabric.encapsulation``: ``toward`` gives every source switch
``set_field tunnel_id=segment, set_field tun_ipv4_dst=<the destination's
tunnel endpoint>, output <tunnel port>``; ``flood`` gives every member the
same for each other member (head-end replication); ``ingress`` matches
``in_port=<tunnel port>, tunnel_id=segment`` and needs no action (the
tunnel port strips the header), with ``ingress_fields`` naming those fields.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import ClassVar

from ..fabric import Fabric, flood_tree, next_hops, path_nodes
from .flows import OFPVID_PRESENT, Action, Match

Actions = tuple[Action, ...]


class Encap(ABC):
    """One plan's encapsulation: built on the fabric as it is when planning."""

    name: ClassVar[str]
    # The match fields of its fabric-ingress flows, allowed in table INGRESS.
    ingress_fields: ClassVar[frozenset[str]]

    def __init__(self, fabric: Fabric) -> None:
        self.fabric = fabric

    @abstractmethod
    def toward(self, segment: int, dst: int, sources: Iterable[int]) -> dict[int, Actions]:
        """Every switch but ``dst`` that a frame of ``segment`` crosses from
        ``sources`` to switch ``dst``, with the actions that send it on from there."""

    @abstractmethod
    def flood(self, segment: int, members: set[int]) -> dict[int, Actions]:
        """Every switch a broadcast of ``segment`` crosses to reach all of
        ``members``, with the actions that pass it on to the others (which may
        be none); delivering it to the switch's own ports is the caller's job."""

    @abstractmethod
    def ingress(self, segment: int, dpid: int) -> list[tuple[Match, Actions]]:
        """How a frame of ``segment`` from another switch is recognised at
        ``dpid`` (one match per way in), and the actions that unwrap it."""


class VlanEncap(Encap):
    """The segment as an 802.1Q tag on the fabric links the controller owns.

    Unicast follows ``next_hops`` toward the destination switch, broadcast
    the tenant's part of the fabric's one spanning tree (``flood_tree``).
    """

    name = "vlan"
    ingress_fields = frozenset({"in_port", "vlan_vid"})

    def __init__(self, fabric: Fabric) -> None:
        super().__init__(fabric)
        self.graph = fabric.graph()
        # Both are asked for again and again in one plan: once per
        # destination switch and once per switch is enough.
        self._hops: dict[int, dict[int, int]] = {}
        ports: defaultdict[int, set[int]] = defaultdict(set)
        for (dpid, port), _ in fabric.confirmed_links():
            ports[dpid].add(port)
        self._fabric_ports = {dpid: sorted(p) for dpid, p in ports.items()}

    @staticmethod
    def _tag(segment: int) -> Actions:
        return (("push_vlan",), ("set", "vlan_vid", OFPVID_PRESENT | segment))

    def toward(self, segment: int, dst: int, sources: Iterable[int]) -> dict[int, Actions]:
        hops = self._hops.get(dst)
        if hops is None:
            hops = self._hops[dst] = next_hops(self.graph, dst)
        on_path = {n for src in sources for n in path_nodes(self.graph, src, dst, hops)}
        on_path.discard(dst)
        tag = self._tag(segment)
        return {at: (*tag, ("output", hops[at])) for at in on_path}

    def flood(self, segment: int, members: set[int]) -> dict[int, Actions]:
        tree = flood_tree(self.graph, members)
        tag = self._tag(segment)
        out: dict[int, Actions] = {}
        for at in tree.nodes:
            uplinks = [tree.edges[at, n]["ports"][at] for n in sorted(tree.neighbors(at))]
            out[at] = (*tag, *(("output", p) for p in uplinks)) if uplinks else ()
        return out

    def ingress(self, segment: int, dpid: int) -> list[tuple[Match, Actions]]:
        return [({"in_port": port, "vlan_vid": OFPVID_PRESENT | segment}, (("pop_vlan",),))
                for port in self._fabric_ports.get(dpid, ())]


ENCAPS: Mapping[str, type[Encap]] = {cls.name: cls for cls in (VlanEncap,)}
