"""Fabric discovery: signed LLDP out of every live port (but a tunnel port), links from what comes back."""

from __future__ import annotations

import os
from collections.abc import Callable

from ..config import FabricSettings
from ..fabric import Fabric, PortRef
from ..plan.encap import tunnel_port
from . import packets

Frame = tuple[int, int, bytes]      # (dpid, port, frame) to send out of that port


class Discovery:
    def __init__(self, settings: Callable[[], FabricSettings] = FabricSettings) -> None:
        """``settings``: the fabric settings of the moment (the tunnel port is never probed)."""
        self.settings = settings
        self.secret = os.urandom(16)
        self.link_seen: dict[PortRef, float] = {}   # a link's source end -> when its LLDP last came
        # Fenced (etcd unanswered): this instance sends no LLDP, nor, if the
        # quorum is lost, does any other; links do not age meanwhile.
        self.held = False

    def frames(self, fabric: Fabric, dpid: int, ports: list[int] | None = None) -> list[Frame]:
        sw = fabric.switches.get(dpid)
        if sw is None:
            return []
        tunnel = tunnel_port(sw, self.settings())
        return [(dpid, p, packets.lldp_frame(dpid, p, self.secret))
                for p in (ports or sw.ports) if sw.ports.get(p) and p != tunnel]

    def heard(self, fabric: Fabric, dpid: int, in_port: int, data: bytes, max_age: float,
              now: float) -> PortRef | None:
        """The source end of the link an LLDP frame came over, if the link is new.

        Raises packets.BadFrame for a frame that is not ours, forged or replayed:
        an LLDP frame crosses one link in well under a second, so anything older
        than one LLDP round is a replay."""
        src = packets.parse_lldp(data, self.secret, max_age=max_age)
        if src[0] not in fabric.switches:
            return None
        self.link_seen[src] = now
        return src if fabric.add_link(src, (dpid, in_port)) else None

    def expire(self, fabric: Fabric, now: float, timeout: float) -> list[PortRef]:
        """The links whose LLDP stopped coming, removed from the fabric."""
        if self.held:
            return []
        stale = [src for src, seen in self.link_seen.items() if now - seen > timeout]
        gone = []
        for src in stale:
            del self.link_seen[src]
            if src in fabric.links:
                fabric.forget_link(src)
                gone.append(src)
        return gone

    def resume(self, now: float) -> None:
        """No longer held: every link ages from now, as after a takeover."""
        self.held = False
        for src, seen in self.link_seen.items():
            self.link_seen[src] = max(seen, now)

    def new_master(self, dpid: int, now: float) -> None:
        """A switch has a new master (another instance took it over): the links out of
        it age from now, not from the LLDP its old master last sent, since none
        could be sent out of it between the two."""
        for src, seen in self.link_seen.items():
            if src[0] == dpid:
                self.link_seen[src] = max(seen, now)

    def switch_gone(self, dpid: int) -> None:
        self.link_seen = {k: v for k, v in self.link_seen.items() if k[0] != dpid}
