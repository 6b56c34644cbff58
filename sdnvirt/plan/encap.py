"""How a tenant's frames travel between switches: the only code that puts a segment on the wire.

The features ask an ``Encap`` three things: how a frame goes on toward the
switch of its destination (forwarding), how a broadcast reaches the other
switches of its tenant (flooding), and how a frame that came from another
switch is recognised and unwrapped (fabric ingress).  Which switches a frame
crosses is the encapsulation's business too: VLAN mode walks the fabric hop
by hop, an overlay goes straight to the destination's hypervisor.

Each is named in ``controller.fabric.encapsulation``: ``VlanEncap`` tags
frames on the fabric links the controller owns, ``VxlanEncap`` tunnels them
between the hypervisors over an IP underlay it does not.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import networkx as nx

from ..config import LABEL_MAC_PREFIX, Config, FabricSettings
from ..fabric import Fabric, PortRef, Switch, hops_after, hops_toward, spanning_tree
from ..model import Location
from .flows import MULTICAST, OFPVID_PRESENT, Action, Flow, Instruction, Match, apply, goto
from .tables import Table

Actions = tuple[Action, ...]
Hop = tuple[Instruction, ...]     # how a frame goes on from a switch toward another

# In vlan mode a frame crosses the fabric addressed to the switch and port of its
# destination VM, PortLand's pseudo MAC: eth_dst = 0e:LL:LL:LL:PP:PP, LL the switch's
# label (the low 24 bits of its dpid), PP the VM's port.  Switches on the way forward
# by the label alone (table ROUTE: a flow per switch of the fabric, not per VM), and
# the destination switch puts the VM's MAC back.  VMs may not use such MACs (config).
LABEL_MASK = "ff:ff:ff:ff:00:00"
ROUTE_PRIORITY = 100      # table ROUTE's flows: one per labelled switch
_LABEL_BITS, _PORT_BITS = 24, 16


@functools.cache
def label_mac(dpid: int, port: int = 0) -> str:
    """The pseudo MAC of ``port`` on switch ``dpid`` (port 0: the switch's label alone)."""
    value = (int(LABEL_MAC_PREFIX[:2], 16) << 40) | ((dpid & ((1 << _LABEL_BITS) - 1)) << _PORT_BITS) | port
    return ":".join(f"{b:02x}" for b in value.to_bytes(6, "big"))


def route_match(mac: str) -> Match:
    """Table ROUTE's match for frames addressed to the switch of pseudo MAC ``mac``."""
    return {"eth_dst": (mac[:12] + "00:00", LABEL_MASK)}


@dataclass(frozen=True)
class Transit:
    """What a switch forwards for other switches whatever the tenant (tables INGRESS and ROUTE)."""

    gates: tuple[int, ...] = ()                      # fabric ports whose frames go to ROUTE
    tree: tuple[int, ...] = ()                       # the ports of the fabric's spanning tree


@dataclass(frozen=True)
class Vtep:
    address: str             # on the underlay
    port: int | None         # the switch's tunnel port, None while it has none that is up


@dataclass(frozen=True)
class Wires:
    """Where a frame sent out of a switch's port arrives: across a fabric
    link, or through the switch's tunnel port to the switch whose VTEP it
    was sent to (the underlay between them is no switch of the fabric)."""

    links: Mapping[PortRef, PortRef]
    vteps: Mapping[int, Vtep] = field(default_factory=dict)
    labels: bool = False        # frames handed to table ROUTE go on by their label

    def routed(self, instructions: Iterable[Instruction]) -> tuple[int, int, tuple[tuple[str, object], ...]] | None:
        """The key of the table-ROUTE flow a flow with ``instructions`` hands its frame to, if any."""
        if not self.labels:
            return None
        mac, routes = None, False
        for inst in instructions:
            if inst[0] == "apply":
                mac = next((a[2] for a in inst[1] if a[:2] == ("set", "eth_dst")), mac)
            routes |= inst == ("goto", Table.ROUTE)
        if not routes or mac is None:
            return None
        return Table.ROUTE, ROUTE_PRIORITY, tuple(sorted(route_match(mac).items()))

    def staged(self, dpid: int, old: Flow | None, new: Flow) -> tuple[Flow | None, bool]:
        """For a flood (out of two or more fabric ports) that ``new`` adds or changes at
        ``dpid``: what to change ``old`` to first (itself without the fabric ports ``new``
        leaves, if any), and whether ``new`` must wait until every switch took its first
        step (it takes fabric ports ``old`` did not use).  A tree that moves so stays
        loop-free throughout: every switch's ports are a part of the old tree, then a part
        of the new one."""
        was = self._fabric_outputs(dpid, old) if old is not None else set()
        now = self._fabric_outputs(dpid, new)
        if max(len(was), len(now)) < 2:
            return None, False
        first = None
        if old is not None and not was <= now:
            instructions = tuple(("apply", tuple(a for a in inst[1] if a[0] != "output" or a[1] not in was - now))
                                 if inst[0] == "apply" else inst for inst in old.instructions)
            first = Flow(old.table, old.priority, old.match, instructions, old.cookie)
        return first, not now <= was

    def _fabric_outputs(self, dpid: int, flow: Flow) -> set[int]:
        """The fabric ports ``flow`` outputs to at ``dpid``."""
        return {a[1] for inst in flow.instructions if inst[0] == "apply" for a in inst[1]
                if a[0] == "output" and (dpid, a[1]) in self.links}

    def beyond(self, dpid: int, actions: Iterable[Action]) -> list[int]:
        """The switch each output of ``actions`` at ``dpid`` reaches (none for a VM's port)."""
        tunnel = self.vteps[dpid].port if dpid in self.vteps else None
        out, dst = [], None
        for action in actions:
            if action[:2] == ("set", "tun_ipv4_dst"):
                dst = action[2]
            elif action[0] == "output" and (dpid, action[1]) in self.links:
                out.append(self.links[dpid, action[1]][0])
            elif action[0] == "output" and action[1] == tunnel:
                out += [peer for peer, v in self.vteps.items() if v.address == dst and v.port is not None]
        return out


class Encap(ABC):
    """One plan's encapsulation: built on the fabric as it is when planning."""

    name: ClassVar[str]
    # The match fields of its fabric-ingress flows, allowed in table INGRESS.
    ingress_fields: ClassVar[frozenset[str]]
    # Frames cross addressed to their destination (``arrival``): a VM without an address
    # (a port beyond the pseudo MAC's 16 bits) cannot be reached from another switch.
    addressed: ClassVar[bool] = False

    def __init__(self, fabric: Fabric, config: Config) -> None:
        self.fabric = fabric

    def ends(self) -> set[int]:
        """The switches that may hold a tenant's VMs and its flows."""
        return set(self.fabric.switches)

    def wires(self) -> Wires:
        """Where the switches' outputs lead."""
        return Wires(self.fabric.links)

    def ways_in(self, dpid: int) -> Hashable:
        """What ``ingress`` reads of the fabric's links at ``dpid``."""
        return tuple(self.fabric.fabric_ports(dpid))

    def closed_ports(self, dpid: int) -> list[int]:
        """Ports of ``dpid`` that take in nothing but what ``ingress`` recognises
        (and that discovery does not close already as fabric ports)."""
        return []

    def moved(self, old: Encap) -> tuple[set[int] | None, bool]:
        """What differs from ``old``, an encapsulation of the same switches and settings
        on other links: the switches the paths toward which may differ (None: any), and
        whether ``flood`` may."""
        return None, True

    def arrival(self, loc: Location) -> str | None:
        """The destination MAC a frame to the VM at ``loc`` crosses the fabric with, if not
        the VM's own; the sources set it, ``loc``'s switch puts the VM's back."""
        return None

    def transit(self, dpid: int) -> Transit:
        """What ``dpid`` forwards for other switches whatever the tenants."""
        return Transit()

    def routes(self) -> Mapping[int, Mapping[int, int]]:
        """Per labelled switch, the port of every other switch toward it (table ROUTE).
        A destination whose routes did not move since the last encapsulation on other
        links has the same mapping object, so that comparing them costs nothing."""
        return {}

    @abstractmethod
    def toward(self, segment: int, dst: int, sources: Iterable[int]) -> dict[int, Hop]:
        """Every switch but ``dst`` that sends a frame of ``segment`` from
        ``sources`` on toward switch ``dst``, with the instructions that do."""

    @abstractmethod
    def flood(self, segment: int, members: set[int]) -> dict[int, Hop]:
        """Every switch a broadcast of ``segment`` crosses to reach all of
        ``members``, with the instructions that pass it on to the others (which
        may be none); delivering it to the switch's own ports is the caller's job."""

    @abstractmethod
    def ingress(self, segment: int, dpid: int, members: set[int]) -> list[tuple[Match, Actions]]:
        """How a frame of ``segment`` from another switch is recognised at
        ``dpid`` (one match per way in), and the actions that unwrap it;
        ``members``: the switches holding the segment's VMs."""


class VlanEncap(Encap):
    """The segment as an 802.1Q tag on the fabric links the controller owns.

    Unicast goes addressed to its destination's switch (``label_mac``) along
    ``next_hops`` toward that switch, broadcast along the fabric's one spanning
    tree (every tenant's, whole: the switches that hold none of the tenant's
    VMs drop it where it ends).
    """

    name = "vlan"
    ingress_fields = frozenset({"in_port", "vlan_vid", "eth_dst"})
    addressed = True

    def __init__(self, fabric: Fabric, config: Config) -> None:
        super().__init__(fabric, config)
        self.graph = fabric.graph()
        self._links = fabric.confirmed_links()
        # Asked for again and again in one plan: once per destination switch (the hop
        # counts to it and the next hops) is enough.
        self._hops: dict[int, tuple[dict[int, int], dict[int, int]]] = {}
        ports: defaultdict[int, set[int]] = defaultdict(set)
        for (dpid, port), _ in fabric.confirmed_links():
            ports[dpid].add(port)
        self._fabric_ports = {dpid: tuple(sorted(p)) for dpid, p in ports.items()}
        self._spanning: nx.Graph[int] | None = None
        # A label names one switch: where two share one, the lowest dpid has it.
        labelled: dict[str, int] = {}
        for dpid in sorted(fabric.switches, reverse=True):
            labelled[label_mac(dpid)] = dpid
        self._labelled = set(labelled.values())
        self._sources: dict[tuple[int, frozenset[int]], frozenset[int]] = {}
        self._hop: dict[int, Hop] = {}      # per segment: tag, on by the label (or the tree)
        self._transit: dict[int, Transit] = {}
        self._routes: dict[int, dict[int, int]] | None = None
        self._tree_ports: dict[int, tuple[int, ...]] | None = None

    def wires(self) -> Wires:
        return Wires(self.fabric.links, labels=True)

    def ways_in(self, dpid: int) -> tuple[int, ...]:
        return self._fabric_ports.get(dpid, ())

    def _towards(self, dst: int) -> tuple[dict[int, int], dict[int, int]]:
        """The hop counts to ``dst`` and the next hops toward it (ports)."""
        known = self._hops.get(dst)
        if known is None:
            known = self._hops[dst] = hops_toward(self.graph, dst)
        return known

    def spanning(self) -> nx.Graph[int]:
        if self._spanning is None:
            self._spanning = spanning_tree(self.graph)
        return self._spanning

    def tree_ports(self) -> dict[int, tuple[int, ...]]:
        """Per switch, its ports on the spanning tree."""
        if self._tree_ports is None:
            tree = self.spanning()
            self._tree_ports = {at: tuple(sorted(tree.edges[at, n]["ports"][at] for n in tree.neighbors(at)))
                                for at in tree.nodes}
        return self._tree_ports

    def moved(self, old: Encap) -> tuple[set[int] | None, bool]:
        if not isinstance(old, VlanEncap):
            return None, True
        # The pairs of switches whose links differ (a superset of the graph's edges that do).
        changed = {(a[0], b[0]) for a, b in set(old._links).symmetric_difference(self._links)}
        for dst, (dist, hops) in old._hops.items():
            self._hops[dst] = hops_after(self.graph, dst, dist, hops, changed)[:2]
        # A tenant's unicast and broadcast read which of its switches reach each other, not how.
        paths = {dst for dst, (dist, _) in old._hops.items()
                 if self._hops[dst][0] is not dist and self._hops[dst][0].keys() != dist.keys()}
        return paths, False

    @staticmethod
    def _tag(segment: int) -> Actions:
        return (("push_vlan",), ("set", "vlan_vid", OFPVID_PRESENT | segment))

    def arrival(self, loc: Location) -> str | None:
        return label_mac(loc.dpid, loc.port) if loc.dpid in self._labelled and loc.port < 1 << _PORT_BITS else None

    def transit(self, dpid: int) -> Transit:
        known = self._transit.get(dpid)
        if known is None:
            known = self._transit[dpid] = Transit(self._fabric_ports.get(dpid, ()), self.tree_ports().get(dpid, ()))
        return known

    def routes(self) -> dict[int, dict[int, int]]:
        if self._routes is None:
            self._routes = {dst: self._towards(dst)[1] for dst in sorted(self._labelled)}
        return self._routes

    def toward(self, segment: int, dst: int, sources: Iterable[int]) -> dict[int, Hop]:
        if dst not in self._labelled:
            return {}
        key = (dst, frozenset(sources))
        reach = self._sources.get(key)
        if reach is None:
            dist = self._towards(dst)[0]
            reach = self._sources[key] = frozenset(at for at in key[1] if at != dst and at in dist)
        return dict.fromkeys(reach, self._onward(segment))

    def _onward(self, segment: int) -> Hop:
        """Tagged, on to table ROUTE: one tuple per segment, however many switches."""
        hop = self._hop.get(segment)
        if hop is None:
            hop = self._hop[segment] = (apply(*self._tag(segment)), goto(Table.ROUTE))
        return hop

    def flood(self, segment: int, members: set[int]) -> dict[int, Hop]:
        # Into the whole tree (table ROUTE), unless no other switch holds the tenant.
        hop = self._onward(segment) if len(members) > 1 else ()
        return dict.fromkeys(members, hop)

    def ingress(self, segment: int, dpid: int, members: set[int]) -> list[tuple[Match, Actions]]:
        # Unicast addressed to this switch where the tenant has VMs, and broadcast.
        wanted = [MULTICAST, *([(label_mac(dpid), LABEL_MASK)] if dpid in members and dpid in self._labelled else [])]
        return [({"in_port": port, "vlan_vid": OFPVID_PRESENT | segment, "eth_dst": dst}, (("pop_vlan",),))
                for port in self._fabric_ports.get(dpid, ()) for dst in wanted]


class VxlanEncap(Encap):
    """The segment as the VNI of VXLAN tunnels straight from one hypervisor to another.

    Each hypervisor has one flow-based tunnel port (``remote_ip=flow,
    key=flow``): a frame goes out with ``tunnel_id`` = the segment and
    ``tun_ipv4_dst`` = the destination's VTEP, a broadcast once per other
    hypervisor of the tenant (head-end replication, as OVN does without
    multicast underlays).  A tunnelled frame is taken in only with the VNI of
    a tenant the hypervisor serves and from a VTEP that hosts the tenant too;
    anything else from the tunnel port is dropped (``closed_ports``).  The
    underlay's switches, OpenFlow or not, get no tenant flow.
    """

    name = "vxlan"
    ingress_fields = frozenset({"in_port", "tunnel_id", "tun_ipv4_src"})

    def __init__(self, fabric: Fabric, config: Config) -> None:
        super().__init__(fabric, config)
        self.vteps = vteps(fabric, config)

    def ends(self) -> set[int]:
        return set(self.vteps)

    def wires(self) -> Wires:
        return Wires(self.fabric.links, self.vteps)

    def ways_in(self, dpid: int) -> tuple[()]:
        return ()       # the tunnel port, which the VTEPs (an input of every plan) name

    def closed_ports(self, dpid: int) -> list[int]:
        vtep = self.vteps.get(dpid)
        return [] if vtep is None or vtep.port is None else [vtep.port]

    def _to(self, at: int, segment: int, dsts: Iterable[int]) -> Actions:
        """From ``at`` into the tunnels to each of ``dsts``; nothing if ``at`` has no tunnel port."""
        port = self.vteps[at].port if at in self.vteps else None
        hops = [a for dst in sorted(dsts) if dst != at and dst in self.vteps
                for a in (("set", "tun_ipv4_dst", self.vteps[dst].address), ("output", port))]
        return (("set", "tunnel_id", segment), *hops) if port is not None and hops else ()

    def moved(self, old: Encap) -> tuple[set[int] | None, bool]:
        return set(), False      # tunnels: the underlay's links are not ours to follow

    def toward(self, segment: int, dst: int, sources: Iterable[int]) -> dict[int, Hop]:
        routes = {src: self._to(src, segment, (dst,)) for src in sources if src != dst}
        return {src: (apply(*actions),) for src, actions in routes.items() if actions}

    def flood(self, segment: int, members: set[int]) -> dict[int, Hop]:
        return {at: (apply(*actions),) if actions else () for at in members
                for actions in (self._to(at, segment, members),)}

    def ingress(self, segment: int, dpid: int, members: set[int]) -> list[tuple[Match, Actions]]:
        port = self.vteps[dpid].port if dpid in self.vteps else None
        if port is None:
            return []
        return [({"in_port": port, "tunnel_id": segment, "tun_ipv4_src": self.vteps[peer].address}, ())
                for peer in sorted(members) if peer != dpid and peer in self.vteps]


def vteps(fabric: Fabric, config: Config) -> dict[int, Vtep]:
    """The tunnel endpoints of the switches the fabric knows, by dpid: the
    hypervisors (by bridge name) that the config gives a VTEP address."""
    name = config.controller.fabric.tunnel_port
    out = {}
    for dpid, sw in fabric.switches.items():
        spec = config.hypervisors.get(sw.name)
        if spec is not None and spec.vtep is not None:
            port = sw.port_named(name)
            out[dpid] = Vtep(str(spec.vtep), port if port is not None and sw.ports.get(port) else None)
    return out


def tunnel_port(sw: Switch, settings: FabricSettings) -> int | None:
    """In vxlan mode, the number of the switch's tunnel port: a port that sends
    nothing without a tunnel destination, so no LLDP and no ARP probe goes out of it."""
    return sw.port_named(settings.tunnel_port) if settings.encapsulation == VxlanEncap.name else None


def overlay_end(fabric: Fabric, config: Config, dpid: int) -> bool:
    """Whether switch ``dpid`` may hold tenants' VMs: any switch in vlan mode, a VTEP in vxlan mode."""
    if config.controller.fabric.encapsulation != VxlanEncap.name:
        return True
    sw = fabric.switches.get(dpid)
    spec = config.hypervisors.get(sw.name) if sw is not None else None
    return spec is not None and spec.vtep is not None


ENCAPS: Mapping[str, type[Encap]] = {cls.name: cls for cls in (VlanEncap, VxlanEncap)}
