"""The pipeline's defaults: what a packet meets in a table when no other flow matches.

Table 0's default belongs to discovery (a frame from a port that holds no VM
is how the controller finds VMs).
"""

from __future__ import annotations

from ..feature import Contribution, Feature, declare
from ..flows import Owner, flow, goto
from ..owners import FABRIC_COOKIE
from ..tables import MISS, Table

# A packet to a VIP that no listener took, and everything else IPv4, goes on
# to unnat; unnat hands what is not a backend's reply to forward.  The other
# tables drop what they do not know.
_MISSES = (
    flow(Table.ARP, MISS, {}, [], FABRIC_COOKIE),
    flow(Table.SG_EGRESS, MISS, {}, [], FABRIC_COOKIE),
    flow(Table.SERVICES, MISS, {}, [goto(Table.UNNAT)], FABRIC_COOKIE),
    flow(Table.LB, MISS, {}, [], FABRIC_COOKIE),
    flow(Table.UNNAT, MISS, {}, [goto(Table.FORWARD)], FABRIC_COOKIE),
    flow(Table.FORWARD, MISS, {}, [], FABRIC_COOKIE),
    flow(Table.FLOOD, MISS, {}, [], FABRIC_COOKIE),
    flow(Table.SG_INGRESS, MISS, {}, [], FABRIC_COOKIE),
    flow(Table.ROUTE, MISS, {}, [], FABRIC_COOKIE),
)


class Defaults(Feature):
    declaration = declare("defaults", {f.table: {MISS} for f in _MISSES}, {Owner.FABRIC})

    def switch_inputs(self, dpid: int) -> tuple[()]:
        return ()

    def switch(self, dpid: int, out: Contribution) -> None:
        out.add(dpid, *_MISSES)
