"""Discovery: LLDP to the controller (links), frames from free ports to it (VMs), fabric and tunnel ports closed.

Both kinds of packet-in are metered, so that a host on a free port can cost
the controller no more than ``controller.fabric.packet_in_rate`` each; LLDP
on links already known is not, so that they keep being refreshed while a
flood from some free port exhausts the discovery meter.
"""

from __future__ import annotations

from enum import IntEnum

from ..feature import Contribution, Feature, declare
from ..flows import ETH_TYPE_LLDP, Owner, apply, flow, meter, to_controller
from ..owners import FABRIC_COOKIE
from ..tables import MISS, MeterId, Table, packet_in_meter


class Prio(IntEnum):          # all in table INGRESS
    FABRIC_LLDP = 160         # LLDP on a known fabric port, unmetered
    CLOSED_PORT_DROP = 155    # anything else on a tunnel port (above DISCOVERY: no LLDP from it either)
    DISCOVERY = 150           # LLDP on ports that hold no VM
    FABRIC_PORT_DROP = 100    # anything else on a fabric port
    LEARN = MISS              # a frame on a port that holds no VM yet: learnt from


_EVERYWHERE = (
    flow(Table.INGRESS, Prio.DISCOVERY, {"eth_type": ETH_TYPE_LLDP},
         [meter(MeterId.DISCOVERY), apply(to_controller())], FABRIC_COOKIE),
    flow(Table.INGRESS, Prio.LEARN, {}, [meter(MeterId.LEARN), apply(to_controller())], FABRIC_COOKIE),
)


class Discovery(Feature):
    declaration = declare("discovery", {Table.INGRESS: set(Prio)}, {Owner.FABRIC},
                          {MeterId.LEARN, MeterId.DISCOVERY})

    def switch_inputs(self, dpid: int) -> tuple[int, ...]:
        # Its tunnel ports and the config's meters: the engine's basis.
        return tuple(self.ctx.fabric.fabric_ports(dpid))

    def switch(self, dpid: int, out: Contribution) -> None:
        out.add(dpid, *_EVERYWHERE)
        for port in self.ctx.fabric.fabric_ports(dpid):
            out.add(dpid,
                    flow(Table.INGRESS, Prio.FABRIC_PORT_DROP, {"in_port": port}, [], FABRIC_COOKIE),
                    flow(Table.INGRESS, Prio.FABRIC_LLDP, {"in_port": port, "eth_type": ETH_TYPE_LLDP},
                         [apply(to_controller())], FABRIC_COOKIE))
        for port in self.ctx.encap.closed_ports(dpid):
            out.add(dpid, flow(Table.INGRESS, Prio.CLOSED_PORT_DROP, {"in_port": port}, [], FABRIC_COOKIE))
        settings = self.ctx.model.config.controller.fabric
        for meter_id in (MeterId.LEARN, MeterId.DISCOVERY):
            out.meter(dpid, packet_in_meter(meter_id, settings))
