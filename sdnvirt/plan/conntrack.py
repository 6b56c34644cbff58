"""Connection tracking as Open vSwitch does it for the ``ct`` actions the load balancer writes.

One table per switch (a hypervisor's datapath), keyed by zone and 5-tuple.
What ``ct(flags, zone, table, nat)`` does to a packet (ovs-actions(7), "ct"):

- a packet of a connection the table holds, in its original direction, is
  ``+trk+new`` until the connection has seen a reply (Linux's IP_CT_NEW)
  and ``+trk+est`` after; in the reply direction it is ``+trk+est+rpl``;
- a packet of no known connection is ``+trk+new``; ``commit`` (flag 1)
  stores its connection, with the translation its ``nat`` sets up;
- ``nat`` applies the translation a connection was committed with, whatever
  the action itself says (that is how a connection keeps its backend when
  the group's buckets change): the destination in the original direction,
  the source back to the original destination in the reply direction;
- the ``ct_nw_*``/``ct_tp_*`` fields name the connection's original
  direction, for packets of a committed connection only;
- ``ct_zone`` is the zone of the last ``ct`` a packet went through;
- what is not IPv4 is ``+trk+inv``.

Not modelled, because no flow of ours needs it: source NAT, address or
port ranges, ALGs, related (ICMP error) connections, TCP windows
(``+inv`` for out-of-window packets), timeouts.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from .flows import ETH_TYPE_IPV4

NEW, EST, REL, RPL, INV, TRK = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
_FLAG_NAMES = ((TRK, "trk"), (NEW, "new"), (EST, "est"), (REL, "rel"), (RPL, "rpl"), (INV, "inv"))
COMMIT = 1
_PORTS = {6: "tcp", 17: "udp"}

# A packet's conntrack fields, which ``ct_clear`` takes away.
CT_FIELDS = ("ct_state", "ct_zone", "ct_nw_proto", "ct_nw_src", "ct_nw_dst", "ct_tp_src", "ct_tp_dst")

FiveTuple = tuple[int, str, int, str, int]     # (ip_proto, src, sport, dst, dport)


def state_name(state: int) -> str:
    """ct_state as ovs-ofctl writes it: +trk+new..., or -trk."""
    return "".join(f"+{name}" for bit, name in _FLAG_NAMES if state & bit) or "-trk"


def five_tuple(pkt: dict[str, Any]) -> FiveTuple | None:
    if pkt.get("eth_type") != ETH_TYPE_IPV4 or "ipv4_src" not in pkt or "ipv4_dst" not in pkt:
        return None
    proto = int(pkt.get("ip_proto", 0))
    l4 = _PORTS.get(proto)
    sport, dport = (int(pkt.get(f"{l4}_src", 0)), int(pkt.get(f"{l4}_dst", 0))) if l4 else (0, 0)
    return (proto, str(pkt["ipv4_src"]), sport, str(pkt["ipv4_dst"]), dport)


@dataclass
class Connection:
    original: FiveTuple
    dnat: tuple[str, int | None] | None     # where the original direction's destination is translated to
    replied: bool = False

    @property
    def reply(self) -> FiveTuple:
        proto, src, sport, dst, dport = self.original
        if self.dnat is not None:
            dst = self.dnat[0]
            dport = dport if self.dnat[1] is None else self.dnat[1]
        return (proto, dst, dport, src, sport)


class Conntrack:
    """One datapath's connection table."""

    def __init__(self) -> None:
        self._by_tuple: dict[tuple[int, FiveTuple], tuple[Connection, bool]] = {}   # -> (connection, is reply)

    def copy(self) -> Conntrack:
        return copy.deepcopy(self)

    def connections(self) -> list[tuple[int, Connection]]:
        """(zone, connection) of every connection held."""
        return [(zone, conn) for (zone, t), (conn, reply) in self._by_tuple.items() if not reply]

    def execute(self, pkt: dict[str, Any], flags: int, zone: int, nat: tuple[Any, ...] | None) -> None:
        """Track ``pkt`` in ``zone`` (and translate it): sets its ct_state and ct fields in place."""
        t = five_tuple(pkt)
        pkt["ct_zone"] = zone
        if t is None:
            pkt["ct_state"] = TRK | INV
            return
        hit = self._by_tuple.get((zone, t))
        if hit is not None:
            conn, reply = hit
            if reply:
                conn.replied = True
            pkt["ct_state"] = TRK | (EST if conn.replied else NEW) | (RPL if reply else 0)
            if nat is not None and conn.dnat is not None:
                _translate(pkt, conn, reply)
        else:
            dnat = (str(nat[1]), nat[2]) if nat is not None and nat[0] == "dnat" else None
            conn = Connection(t, dnat)
            pkt["ct_state"] = TRK | NEW
            if flags & COMMIT:
                self._by_tuple[(zone, t)] = (conn, False)
                self._by_tuple[(zone, conn.reply)] = (conn, True)
            if dnat is not None:
                _translate(pkt, conn, False)
            if not flags & COMMIT:
                return
        proto, src, sport, dst, dport = conn.original
        pkt.update(ct_nw_proto=proto, ct_nw_src=src, ct_nw_dst=dst, ct_tp_src=sport, ct_tp_dst=dport)


def _translate(pkt: dict[str, Any], conn: Connection, reply: bool) -> None:
    assert conn.dnat is not None
    l4 = _PORTS.get(conn.original[0])
    if reply:
        _, _, _, dst, dport = conn.original
        pkt["ipv4_src"] = dst
        if l4:
            pkt[f"{l4}_src"] = dport
    else:
        ip, port = conn.dnat
        pkt["ipv4_dst"] = ip
        if l4 and port is not None:
            pkt[f"{l4}_dst"] = port
