"""A fake fabric of flow tables: where does a given packet end up?

Like Faucet's fake OFP tables, this applies planned flows to a packet (a dict
of match fields) and follows it across fabric links, so isolation and
forwarding can be proved from the planner's output without a switch.  It
implements exactly the OpenFlow subset that ``flows.py`` documents.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ..fabric import PortRef
from .flows import OFPP_CONTROLLER, OFPP_IN_PORT, OFPVID_NONE, Flow


class ForwardingLoop(RuntimeError):
    pass


@dataclass(frozen=True)
class Delivery:
    dpid: int
    port: int          # OFPP_CONTROLLER for a packet-in
    packet: tuple      # sorted (field, value) of the packet as it left

    @property
    def fields(self) -> dict:
        return dict(self.packet)


def _as_int(value) -> int:
    if isinstance(value, str):
        if ":" in value:
            return int(value.replace(":", ""), 16)
        return int(ipaddress.ip_address(value))
    return int(value)


def _matches(f: Flow, pkt: dict) -> bool:
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


class FakeFabric:
    def __init__(self, tables: dict[int, set[Flow]], links: dict[PortRef, PortRef]):
        self.tables = {dpid: sorted(flows, key=lambda f: -f.priority) for dpid, flows in tables.items()}
        self.peer = dict(links)
        self.peer.update({b: a for a, b in links.items()})

    def lookup(self, dpid: int, table: int, pkt: dict) -> Flow | None:
        return next((f for f in self.tables[dpid] if f.table == table and _matches(f, pkt)), None)

    def send(self, dpid: int, in_port: int, packet: dict, max_hops: int = 64) -> list[Delivery]:
        """Every place outside the fabric (access port or controller) the packet reaches."""
        out: list[Delivery] = []
        pending = [(dpid, in_port, {"vlan_vid": OFPVID_NONE, **packet}, 0)]
        while pending:
            dpid, in_port, pkt, hops = pending.pop()
            if hops > max_hops:
                raise ForwardingLoop(f"packet still moving after {max_hops} switches")
            for port, sent in self._pipeline(dpid, in_port, pkt):
                if port == OFPP_CONTROLLER:
                    out.append(Delivery(dpid, port, tuple(sorted(sent.items()))))
                elif (dpid, port) in self.peer:
                    peer_dpid, peer_port = self.peer[(dpid, port)]
                    pending.append((peer_dpid, peer_port, sent, hops + 1))
                else:
                    out.append(Delivery(dpid, port, tuple(sorted(sent.items()))))
        return sorted(out, key=lambda d: (d.dpid, d.port))

    def _pipeline(self, dpid: int, in_port: int, pkt: dict) -> list[tuple[int, dict]]:
        pkt = {**pkt, "in_port": in_port, "metadata": 0}
        sent = []
        table = 0
        while table is not None:
            f = self.lookup(dpid, table, pkt)
            table = None
            if f is None:
                break
            for inst in f.instructions:
                if inst[0] == "apply":
                    for action in inst[1]:
                        self._act(action, pkt, in_port, sent)
                elif inst[0] == "meta":
                    pkt["metadata"] = inst[1]
                elif inst[0] == "goto":
                    table = inst[1]
                # ("meter", id) limits rates, which a single packet never meets.
        return sent

    @staticmethod
    def _act(action: tuple, pkt: dict, in_port: int, sent: list) -> None:
        kind = action[0]
        if kind == "output":
            port = action[1]
            if port == OFPP_IN_PORT:
                port = in_port
            elif port == in_port:
                return       # OpenFlow never sends a packet back where it came from
            sent.append((port, {k: v for k, v in pkt.items() if k not in ("in_port", "metadata")}))
        elif kind == "controller":
            sent.append((OFPP_CONTROLLER, {k: v for k, v in pkt.items() if k != "metadata"}))
        elif kind == "push_vlan":
            pkt["vlan_vid"] = 0x1000
        elif kind == "pop_vlan":
            pkt["vlan_vid"] = OFPVID_NONE
        elif kind == "set":
            pkt[action[1]] = action[2]
        elif kind == "move":
            pkt[action[2]] = pkt[action[1]]
        else:
            raise ValueError(f"trace does not know action {action!r}")
