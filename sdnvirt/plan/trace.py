"""A fake fabric of flow tables: where does a given packet end up, and why?

Like Faucet's fake OFP tables, this applies flows to a packet (a dict of
match fields) and follows it across fabric links, so isolation, forwarding
and load balancing can be proved without a switch, and ``sdnvirt trace``
can explain the flows the switches hold.  It implements exactly the
OpenFlow subset that ``flows.py`` documents: select groups (every bucket,
or one chosen as a switch would hash it) and conntrack (``conntrack.py``).

A frame sent into a switch's tunnel port (``encap.VxlanEncap``) comes out
of the tunnel port of the switch whose VTEP is its ``tun_ipv4_dst``, with
its ``tunnel_id`` and the sender's VTEP as ``tun_ipv4_src``: the underlay
delivers it whatever lies between.

Pure: the switches' tables are ``reconcile.Tables``, however they were
filled (a plan, or ``controller.fakeswitch`` fed the real messages).
"""

from __future__ import annotations

import ipaddress
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..fabric import PortRef
from .conntrack import COMMIT, CT_FIELDS, Conntrack, five_tuple, state_name
from .encap import Vtep
from .flows import OFPP_CONTROLLER, OFPP_IN_PORT, OFPVID_NONE, Action, Flow, Group
from .reconcile import Tables

Packet = dict[str, Any]               # match field -> value
Fields = tuple[tuple[str, Any], ...]   # a packet frozen: sorted (field, value)
# A chooser picks the bucket of a select group a packet takes.
Chooser = Callable[[Group, Packet], int]

# What a packet's trace can end in.
DELIVERED, CONTROLLER, DROPPED, ERROR, LOOP = "delivered", "controller", "dropped", "error", "loop"
ENDS = frozenset({DELIVERED, CONTROLLER, DROPPED, ERROR, LOOP})
# The steps on the way.
ENTER, FLOW, GROUP, CT, LINK, TUNNEL = "enter", "flow", "group", "ct", "link", "tunnel"

# The packet's pipeline state, which never leaves a switch (a tunnel's
# fields only as the tunnel's header, see _Run.tunnel).
_PIPELINE_FIELDS = ("in_port", "metadata", *CT_FIELDS, "tunnel_id", "tun_ipv4_src", "tun_ipv4_dst")
# Instructions run in this order whatever their order in the flow (OpenFlow 1.3, 5.9).
_INSTRUCTION_ORDER = {"meter": 0, "apply": 1, "meta": 2, "goto": 3}


class ForwardingLoop(RuntimeError):
    pass


def by_hash(group: Group, pkt: Packet) -> int:
    """The bucket a switch's 5-tuple hash would give (a stand-in: the same packet, the same bucket)."""
    return zlib.crc32(repr(five_tuple(pkt)).encode()) % len(group.buckets)


@dataclass(frozen=True)
class Delivery:
    dpid: int
    port: int          # OFPP_CONTROLLER for a packet-in
    packet: Fields     # the packet as it left

    @property
    def fields(self) -> Packet:
        return dict(self.packet)


@dataclass(frozen=True)
class Step:
    """One thing that happened to the packet (or to one of its copies)."""

    depth: int                  # how many forks (flood, buckets, several outputs) it is in
    what: str                   # ENTER, FLOW, GROUP, CT, LINK, or one of ENDS
    dpid: int
    table: int | None = None
    flow: Flow | None = None
    port: int | None = None
    detail: str = ""
    packet: Fields = ()         # the packet, where it says something

    @property
    def fields(self) -> Packet:
        return dict(self.packet)


@dataclass
class Trace:
    steps: list[Step] = field(default_factory=list)

    @property
    def ends(self) -> list[Step]:
        return [s for s in self.steps if s.what in ENDS]

    def deliveries(self) -> list[Delivery]:
        """Every place outside the fabric (an access port or the controller) a copy reached."""
        out = [Delivery(s.dpid, s.port, s.packet) for s in self.ends
               if s.what in (DELIVERED, CONTROLLER) and s.port is not None]
        return sorted(out, key=lambda d: (d.dpid, d.port))


def _as_int(value: Any) -> int:
    if isinstance(value, str):
        if ":" in value:
            return int(value.replace(":", ""), 16)
        return int(ipaddress.ip_address(value))
    return int(value)


def _matches(f: Flow, pkt: Packet) -> bool:
    for name, want in f.match:
        if name not in pkt:
            return False
        have = _as_int(pkt[name])
        if isinstance(want, tuple):
            value, mask = (_as_int(w) for w in want)
            if have & mask != value & mask:
                return False
        elif have != _as_int(want):
            return False
    return True


def _frozen(pkt: Packet) -> Fields:
    return tuple(sorted(pkt.items()))


def _emits(action: Action) -> bool:
    """The action sends a copy of the packet somewhere."""
    return action[0] in ("output", "controller", "group") or (action[0] == "ct" and action[3] is not None)


class FakeFabric:
    """Switches (their tables, read whenever a packet is sent) joined by links and
    tunnels (``vteps``: ``encap.vteps``), and their conntrack."""

    def __init__(self, switches: Mapping[int, Tables], links: Mapping[PortRef, PortRef],
                 vteps: Mapping[int, Vtep] | None = None):
        self.switches = switches
        self.peer = dict(links)
        self.peer.update({b: a for a, b in links.items()})
        self.vteps = {dpid: v for dpid, v in (vteps or {}).items() if v.port is not None}
        self.vtep_at = {v.address: dpid for dpid, v in self.vteps.items()}
        self.conntrack: dict[int, Conntrack] = {}

    @classmethod
    def of(cls, flows: Mapping[int, Iterable[Flow]], links: Mapping[PortRef, PortRef],
           groups: Mapping[int, Mapping[int, Group]] | None = None,
           vteps: Mapping[int, Vtep] | None = None) -> FakeFabric:
        """Switches holding these flows and groups (a plan's, say)."""
        groups = groups or {}
        return cls({dpid: Tables.of(f, groups.get(dpid, {})) for dpid, f in flows.items()}, links, vteps)

    def send(self, dpid: int, in_port: int, packet: Packet, bucket: Chooser | None = None) -> list[Delivery]:
        """Where the packet ends up outside the fabric (see ``trace``)."""
        trace = self.trace(dpid, in_port, packet, bucket)
        if any(s.what == LOOP for s in trace.ends):
            raise ForwardingLoop(f"packet from {dpid:#x}:{in_port} still moving after {_Run.MAX_HOPS} switches")
        return trace.deliveries()

    def trace(self, dpid: int, in_port: int, packet: Packet, bucket: Chooser | None = None) -> Trace:
        """Everything that happens to ``packet`` arriving at ``dpid``'s port ``in_port``.

        ``bucket``: the select-group bucket each packet takes, and the
        conntrack entries it commits are kept; without it, the trace follows
        every distinct bucket, each with its own copy of conntrack, and
        leaves the fabric's conntrack as it was."""
        conntrack = self.conntrack if bucket else {d: c.copy() for d, c in self.conntrack.items()}
        run = _Run(self, bucket, conntrack, Trace())
        run.enter(dpid, in_port, {"vlan_vid": OFPVID_NONE, **packet}, 0, 0)
        return run.trace


class _Run:
    """One packet's way through the fabric; forked for each bucket when it follows them all."""

    MAX_HOPS = 64

    def __init__(self, fabric: FakeFabric, bucket: Chooser | None, conntrack: dict[int, Conntrack], trace: Trace):
        self.fabric = fabric
        self.bucket = bucket
        self.conntrack = conntrack
        self.trace = trace
        self._sorted: dict[tuple[int, int], list[Flow]] = {}

    def step(self, *args: Any, **kwargs: Any) -> None:
        self.trace.steps.append(Step(*args, **kwargs))

    def lookup(self, dpid: int, table: int, pkt: Packet) -> Flow | None:
        flows = self._sorted.get((dpid, table))
        if flows is None:
            held = self.fabric.switches.get(dpid)
            flows = sorted((f for f in (held.flows.values() if held else ()) if f.table == table),
                           key=lambda f: -f.priority)
            self._sorted[(dpid, table)] = flows
        return next((f for f in flows if _matches(f, pkt)), None)

    def enter(self, dpid: int, in_port: int, pkt: Packet, depth: int, hops: int) -> None:
        if hops > self.MAX_HOPS:
            self.step(depth, LOOP, dpid, port=in_port, detail=f"still moving after {self.MAX_HOPS} switches")
            return
        self.step(depth, ENTER, dpid, port=in_port, packet=_frozen(pkt))
        self.pipeline(dpid, 0, {**pkt, "in_port": in_port, "metadata": 0, "ct_state": 0}, depth, hops)

    def pipeline(self, dpid: int, table: int | None, pkt: Packet, depth: int, hops: int) -> None:
        while table is not None:
            f = self.lookup(dpid, table, pkt)
            if f is None:
                self.step(depth, DROPPED, dpid, table, detail="no flow matches")
                return
            self.step(depth, FLOW, dpid, table, f)
            instructions = sorted(f.instructions, key=lambda i: _INSTRUCTION_ORDER.get(i[0], 9))
            actions = [a for i in instructions if i[0] == "apply" for a in i[1]]
            table = next((i[1] for i in instructions if i[0] == "goto"), None)
            if table is None and not any(map(_emits, actions)):
                self.step(depth, DROPPED, dpid, f.table, f, detail="by this flow")
                return
            inner = depth + 1 if sum(map(_emits, actions)) + (table is not None) > 1 else depth
            for inst in instructions:
                if inst[0] == "apply":
                    for action in inst[1]:
                        self.act(dpid, action, pkt, inner, hops)
                elif inst[0] == "meta":
                    pkt["metadata"] = (pkt["metadata"] & ~inst[2]) | (inst[1] & inst[2])
                # ("meter", id) limits rates, which a single packet never meets.

    def act(self, dpid: int, action: Action, pkt: Packet, depth: int, hops: int) -> None:
        kind = action[0]
        if kind == "output":
            port = pkt["in_port"] if action[1] == OFPP_IN_PORT else action[1]
            if action[1] != OFPP_IN_PORT and port == pkt["in_port"]:
                return       # OpenFlow never sends a packet back where it came from
            self.output(dpid, port, pkt, depth, hops)
        elif kind == "controller":
            # A packet-in says which port the packet came in by.
            self.step(depth, CONTROLLER, dpid, port=OFPP_CONTROLLER,
                      packet=_frozen({k: v for k, v in pkt.items() if k == "in_port" or k not in _PIPELINE_FIELDS}))
        elif kind == "push_vlan":
            pkt["vlan_vid"] = 0x1000
        elif kind == "pop_vlan":
            pkt["vlan_vid"] = OFPVID_NONE
        elif kind == "set":
            pkt[action[1]] = action[2]
        elif kind == "move":
            pkt[action[2]] = pkt[action[1]]
        elif kind == "group":
            self.group(dpid, action[1], pkt, depth, hops)
        elif kind == "ct":
            self.ct(dpid, action, dict(pkt), depth, hops)
        elif kind == "ct_clear":
            for name in CT_FIELDS:
                pkt.pop(name, None)
            pkt["ct_state"] = 0
        else:
            self.step(depth, ERROR, dpid, detail=f"the trace does not model the action {action!r}")

    def output(self, dpid: int, port: int, pkt: Packet, depth: int, hops: int) -> None:
        sent = {k: v for k, v in pkt.items() if k not in _PIPELINE_FIELDS}
        vtep = self.fabric.vteps.get(dpid)
        if vtep is not None and port == vtep.port:
            self.tunnel(dpid, vtep, pkt, sent, depth, hops)
            return
        peer = self.fabric.peer.get((dpid, port))
        if peer is None:
            self.step(depth, DELIVERED, dpid, port=port, packet=_frozen(sent))
            return
        self.step(depth, LINK, dpid, port=port, detail=f"to {peer[0]:#x} port {peer[1]}")
        self.enter(peer[0], peer[1], sent, depth, hops + 1)

    def tunnel(self, dpid: int, vtep: Vtep, pkt: Packet, sent: Packet, depth: int, hops: int) -> None:
        """Out of a flow-based VXLAN port: to the switch whose VTEP the packet was sent to."""
        dst, vni = pkt.get("tun_ipv4_dst"), pkt.get("tunnel_id", 0)
        peer = self.fabric.vtep_at.get(str(dst))
        if peer is None:
            self.step(depth, DROPPED, dpid, port=vtep.port, detail=f"no tunnel endpoint {dst} on the underlay")
            return
        self.step(depth, TUNNEL, dpid, port=vtep.port, detail=f"VNI {vni} to {dst} ({peer:#x})")
        tunnelled = {**sent, "tunnel_id": vni, "tun_ipv4_src": vtep.address}
        self.enter(peer, self.fabric.vteps[peer].port or 0, tunnelled, depth, hops + 1)

    def group(self, dpid: int, gid: int, pkt: Packet, depth: int, hops: int) -> None:
        held = self.fabric.switches.get(dpid)
        group = held.groups.get(gid) if held else None
        if group is None or not group.buckets:
            self.step(depth, DROPPED, dpid, detail=f"group {gid} is not in the switch or has no bucket")
            return
        if self.bucket is not None:
            chosen = [self.bucket(group, pkt)]
        else:
            # Buckets with the same actions do the same: each is followed once.
            first: dict[tuple[Action, ...], int] = {}
            for i, b in enumerate(group.buckets):
                first.setdefault(b, i)
            chosen = list(first.values())
        inner = depth + 1 if len(chosen) > 1 else depth
        for i in chosen:
            run = self if self.bucket is not None else self.fork()
            run.step(inner, GROUP, dpid, detail=f"group {gid}: bucket {i} of {len(group.buckets)}")
            copy = dict(pkt)
            for action in group.buckets[i]:
                run.act(dpid, action, copy, inner, hops)

    def fork(self) -> _Run:
        run = _Run(self.fabric, self.bucket, {d: c.copy() for d, c in self.conntrack.items()}, self.trace)
        run._sorted = self._sorted
        return run

    def ct(self, dpid: int, action: Action, pkt: Packet, depth: int, hops: int) -> None:
        _, flags, zone, table, nat = action
        conntrack = self.conntrack.setdefault(dpid, Conntrack())
        conntrack.execute(pkt, flags, zone, nat)
        self.step(depth, CT, dpid, table, detail=f"zone {zone}: {state_name(pkt['ct_state'])}"
                  f"{', commit' if flags & COMMIT else ''}", packet=_frozen(pkt))
        # The original packet goes on untracked; the tracked one recirculates.
        self.pipeline(dpid, table, pkt, depth, hops)
