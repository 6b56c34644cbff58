"""The pipeline's tables and meters, as data that the planner checks every feature against.

Like Faucet's ``ValveTableConfig``: a table names the match fields a flow in
it may use and the tables a flow in it may send a packet to, by goto or by
conntrack recirculation.  docs/pipeline.md has one section per table.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum

from ..config import FabricSettings
from .flows import Meter

# Every table's lowest priority: what a packet meets when nothing else matches.
MISS = 0


class Table(IntEnum):
    INGRESS = 0    # port security and tenant classification
    ARP = 1        # ARP answered in the switch from the model
    SG_EGRESS = 2  # what a VM in security groups sends: its groups' egress rules, replies
    SERVICES = 3   # a VM's packets to a VIP go through conntrack
    LB = 4         # new connections to a VIP -> Maglev group; ongoing ones -> their backend
    UNNAT = 5      # a backend's replies translated back to the VIP
    FORWARD = 6    # tenant + destination MAC -> port, or toward the switch that has it
    FLOOD = 7      # tenant broadcast/multicast -> the tenant's VMs here, and on
    SG_INGRESS = 8  # what reaches a VM in security groups: its groups' ingress rules, replies
    ROUTE = 9      # a labelled frame -> toward the switch its label names (vlan mode)


class MeterId(IntEnum):
    LEARN = 1        # frames from ports that hold no VM
    DISCOVERY = 2    # LLDP from ports not known as fabric ports
    SERVICE = 3      # health-probe replies and connections to reject


@dataclass(frozen=True)
class TableSpec:
    table: Table
    fields: frozenset[str]              # match fields its flows may use
    goto: frozenset[Table] = frozenset()             # goto-table targets (OpenFlow: later tables only)
    recirculate: frozenset[Table] = frozenset()      # tables a ct action in it (or in a group it uses) resubmits to


def _spec(table: Table, fields: str, goto: tuple[Table, ...] = (),
          recirculate: tuple[Table, ...] = ()) -> TableSpec:
    return TableSpec(table, frozenset(fields.split()), frozenset(goto), frozenset(recirculate))


# A security-group table's fields besides the VM's (in_port, eth_dst) and the remote end's address.
_SG_FIELDS = "eth_type ct_state ct_zone ip_proto tcp_src tcp_dst udp_src udp_dst icmpv6_type"

# The encapsulation's fabric-ingress fields (Encap.ingress_fields) are
# allowed in INGRESS on top of these.
TABLES: Mapping[int, TableSpec] = {spec.table: spec for spec in (
    _spec(Table.INGRESS, "in_port vlan_vid eth_src eth_type ipv4_src arp_spa arp_sha",
          goto=(Table.ARP, Table.SG_EGRESS, Table.SERVICES, Table.UNNAT, Table.FORWARD, Table.ROUTE)),
    _spec(Table.ARP, "metadata eth_type arp_op arp_tpa"),
    _spec(Table.SG_EGRESS, f"in_port {_SG_FIELDS} ipv4_dst", goto=(Table.SERVICES, Table.FORWARD),
          recirculate=(Table.SG_EGRESS,)),
    _spec(Table.SERVICES, "metadata eth_type ip_proto ipv4_dst tcp_dst udp_dst",
          goto=(Table.UNNAT,), recirculate=(Table.LB,)),
    _spec(Table.LB, "metadata eth_type ct_state ip_proto ipv4_dst tcp_dst udp_dst", goto=(Table.FORWARD,)),
    _spec(Table.UNNAT, "metadata eth_type ct_state ct_nw_proto ct_nw_dst ct_tp_dst ip_proto ipv4_src tcp_src udp_src",
          goto=(Table.FORWARD,), recirculate=(Table.UNNAT,)),
    _spec(Table.FORWARD, "metadata eth_dst", goto=(Table.FLOOD, Table.SG_INGRESS, Table.ROUTE)),
    _spec(Table.FLOOD, "metadata eth_type", goto=(Table.ROUTE,)),
    _spec(Table.SG_INGRESS, f"eth_dst {_SG_FIELDS} ipv4_src", recirculate=(Table.SG_INGRESS,)),
    _spec(Table.ROUTE, "eth_dst"),
)}


def packet_in_meter(meter_id: MeterId, settings: FabricSettings) -> Meter:
    """A meter on what a switch may send the controller unasked."""
    rate = settings.packet_in_rate
    return Meter(meter_id, rate, max(10, rate // 10))
