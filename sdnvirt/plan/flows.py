"""Flow specs: OpenFlow 1.3 flows, groups and meters as plain, hashable values.

A spec says what a flow is, not how to send it; ``sdnvirt.controller.ofmsg``
turns specs into messages and installed flows back into specs, so the desired
and the installed state compare as values.

Match: a sorted tuple of (OXM field name, value) with os-ken's field names;
a masked field's value is (value, mask).  MACs are lower-case strings, IPv4
addresses dotted strings.

Instructions: a tuple of
  ("apply", (action, ...))   apply-actions
  ("meter", meter_id)        meter (rate-limits what goes on)
  ("meta", value, mask)      write-metadata
  ("goto", table)            goto-table
and actions are
  ("output", port)           port may be IN_PORT / CONTROLLER below
  ("controller", max_len)    output to the controller
  ("push_vlan",) ("pop_vlan",)
  ("set", field, value)      set-field
  ("move", src, dst, bits)   Nicira register move (copy one field into another)
  ("group", group_id)        hand the packet to a group
  ("ct", flags, zone, table, nat)
                             Nicira conntrack: flags 1 commits; recirculates to
                             table; nat is None, ("nat",) to apply an existing
                             translation, or ("dnat", ip, port) to set one up;
                             table None: no recirculation, the packet goes on
  ("ct_clear",)              the packet goes on untracked, as it came in
An empty instruction tuple drops the packet.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

OFPP_IN_PORT = 0xFFFFFFF8
OFPP_CONTROLLER = 0xFFFFFFFD
OFPP_LOCAL = 0xFFFFFFFE
OFPVID_PRESENT = 0x1000
OFPVID_NONE = 0x0000

ETH_TYPE_IPV4 = 0x0800
ETH_TYPE_ARP = 0x0806
ETH_TYPE_IPV6 = 0x86DD
ETH_TYPE_VLAN = 0x8100
ETH_TYPE_LLDP = 0x88CC
MULTICAST = ("01:00:00:00:00:00", "01:00:00:00:00:00")
# max_len of an output to the controller: the whole frame, so that a learnt
# frame can be sent back into the pipeline once its VM's flows are in place.
NO_BUFFER = 0xFFFF

Action = tuple[Any, ...]
Instruction = tuple[Any, ...]
Match = dict[str, Any]


class Owner(IntEnum):
    """The top byte of a cookie: what kind of object a flow belongs to."""

    FABRIC = 0x01   # every table's default, fabric ports, discovery
    TENANT = 0x02   # a tenant's segment on fabric links and its broadcast
    VM = 0x03       # one VM: port security, ARP answer, forwarding to it
    SERVICE = 0x04  # one load-balanced service: its VIP, its group, its replies


def object_id(name: str) -> int:
    return zlib.crc32(name.encode())


def cookie(owner: Owner, segment: int = 0, name: str = "") -> int:
    """owner (8 bits) | segment (24 bits: a VNI) | crc32 of the owner's name (32 bits)."""
    return (int(owner) << 56) | (segment << 32) | (object_id(name) if name else 0)


def cookie_owner(value: int) -> tuple[int, int, int]:
    """(owner kind, segment, object id) of a cookie; owner 0 for flows sdnvirt did not write."""
    return value >> 56, (value >> 32) & 0xFFFFFF, value & 0xFFFFFFFF


def is_ours(value: int) -> bool:
    return (value >> 56) in {int(o) for o in Owner}


@dataclass(frozen=True, order=True, slots=True)
class Flow:
    table: int
    priority: int
    match: tuple[tuple[str, Any], ...]
    instructions: tuple[Instruction, ...]
    cookie: int
    # Flows are hashed over and over (sets, counts, diffs of a million flows): once is enough.
    _hash: int = field(init=False, repr=False, compare=False)
    # One key object however many tables (desired, installed) hold the flow.
    key: tuple[int, int, tuple[tuple[str, Any], ...]] = field(init=False, repr=False, compare=False)
    """What identifies a flow in a switch's table (OpenFlow's strict match)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash((self.table, self.priority, self.match, self.instructions, self.cookie)))
        object.__setattr__(self, "key", (self.table, self.priority, self.match))

    def __hash__(self) -> int:
        return self._hash

    @property
    def match_dict(self) -> Match:
        return dict(self.match)


@dataclass(frozen=True, order=True)
class Meter:
    """A packets-per-second meter whose one band drops the excess."""

    meter_id: int
    rate: int
    burst: int


@dataclass(frozen=True, order=True)
class Group:
    """An OpenFlow select group; every bucket has weight 1 and is a tuple of actions."""

    group_id: int
    buckets: tuple[tuple[Action, ...], ...]


def flow(table: int, priority: int, match: Match, instructions: list[Instruction] | tuple[Instruction, ...],
         owner_cookie: int) -> Flow:
    return Flow(table, priority, shared(tuple(sorted(match.items()))), shared(tuple(instructions)), owner_cookie)


# A fabric's flows repeat their parts: a VM's match on every switch of its
# paths, a tenant's "tag and out of port p" for every VM behind p.  Equal
# parts are held once; the table is only a cache, emptied when it is full.
_SHARED: dict[Any, Any] = {}
_SHARED_MAX = 1 << 20


def shared(value: Any) -> Any:
    """The one object held for values equal to ``value`` (``value`` itself the first time)."""
    held = _SHARED.get(value)
    if held is None:
        if len(_SHARED) >= _SHARED_MAX:
            _SHARED.clear()
        held = _SHARED[value] = value
    return held


def meter(meter_id: int) -> Instruction:
    return ("meter", meter_id)


def goto(table: int) -> Instruction:
    return ("goto", table)


def apply(*actions: Action) -> Instruction:
    return ("apply", tuple(actions))


def write_metadata(value: int) -> Instruction:
    return ("meta", value, 0xFFFFFFFFFFFFFFFF)


def to_controller() -> Action:
    return ("controller", NO_BUFFER)
