"""A switch that holds what the controller's messages leave in it (Faucet's ``fakeoftable``).

It is fed the os-ken messages ``sender.message`` makes for the reconciler's
changes.  Each is serialised to bytes and parsed back by os-ken, so what is
applied is what would go on the wire, and what the switch holds is read
into specs by ``ofmsg.installed_*``, the functions that read a real
switch's stats replies: a spec that does not survive the wire shows up as a
difference at the next reconcile, as it would after a restart.

It does what Open vSwitch does with the commands sdnvirt sends
(OpenFlow 1.3, 6.4 and 6.5):

- ``OFPFC_ADD`` replaces a flow with the same table, priority and match,
  new cookie and counters included; ``OFPFC_MODIFY_STRICT`` changes only the
  instructions of such a flow (cookie and counters kept) and adds nothing;
  ``OFPFC_DELETE_STRICT`` removes it;
- a flow that uses a group or a meter the switch does not hold is refused;
- group and meter ``ADD`` of one that exists and ``MODIFY`` of one that
  does not are refused; ``DELETE`` also removes the flows that use it.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from itertools import count
from typing import Any

from os_ken.ofproto import ofproto_parser
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from ..plan.flows import Flow
from ..plan.reconcile import Change, Tables
from . import ofmsg
from .sender import message


class Refused(Exception):
    """What a switch answers with an OFPT_ERROR."""


def _uses(f: Flow) -> tuple[set[int], set[int]]:
    """The groups and the meters a flow sends packets through."""
    groups = {a[1] for i in f.instructions if i[0] == "apply" for a in i[1] if a[0] == "group"}
    meters = {i[1] for i in f.instructions if i[0] == "meter"}
    return groups, meters


class FakeSwitch:
    """Stands in for os-ken's Datapath where a message is made (``send_msg``, ``set_xid``)."""

    def __init__(self, dpid: int = 0):
        self.id = dpid
        self.ofproto, self.ofproto_parser = ofp, parser
        self.tables = Tables()
        # The number of the message that added each flow (by key): a modify
        # keeps it, as a switch keeps the flow's counters.
        self.added: dict[tuple, int] = {}
        self._xids = count(1)
        self._received = 0

    def set_xid(self, msg: Any) -> None:
        msg.set_xid(next(self._xids))

    def apply(self, batch: Iterable[Change]) -> None:
        """Receive the messages the controller sends for ``batch``."""
        for change in batch:
            self.send_msg(message(self, change))

    def send_msg(self, msg: Any) -> None:
        msg.serialize()
        self.receive(bytes(msg.buf))

    def receive(self, buf: bytes) -> None:
        """One OpenFlow message, as bytes."""
        self._received += 1
        version, msg_type, length, xid = ofproto_parser.header(buf)
        if msg_type == ofp.OFPT_FLOW_MOD:
            mod = ofproto_parser.msg(self, version, msg_type, length, xid, buf)
            self._flow_mod(mod.command, ofmsg.installed_flow(mod))
        elif msg_type in (ofp.OFPT_GROUP_MOD, ofp.OFPT_METER_MOD):
            # os-ken parses neither a GroupMod nor a MeterMod, but their bodies
            # are a group-desc (meter-config) reply's entry with the command
            # where the entry's length is: read them as a reply is read.
            (command,) = struct.unpack_from("!H", buf, ofp.OFP_HEADER_SIZE)
            entry = bytearray(buf)
            struct.pack_into("!H", entry, ofp.OFP_HEADER_SIZE, length - ofp.OFP_HEADER_SIZE)
            if msg_type == ofp.OFPT_GROUP_MOD:
                group = ofmsg.installed_group(parser.OFPGroupDescStats.parser(bytes(entry), ofp.OFP_HEADER_SIZE))
                self._referenced(self.tables.groups, group.group_id, group, command,
                                 (ofp.OFPGC_ADD, ofp.OFPGC_MODIFY, ofp.OFPGC_DELETE), 0)
            else:
                meter = ofmsg.installed_meter(parser.OFPMeterConfigStats.parser(bytes(entry), ofp.OFP_HEADER_SIZE))
                self._referenced(self.tables.meters, meter.meter_id, meter, command,
                                 (ofp.OFPMC_ADD, ofp.OFPMC_MODIFY, ofp.OFPMC_DELETE), 1)
        elif msg_type != ofp.OFPT_BARRIER_REQUEST:
            raise Refused(f"the fake switch does not take message type {msg_type}")

    def _flow_mod(self, command: int, f: Flow) -> None:
        held = self.tables.flows
        if command == ofp.OFPFC_DELETE_STRICT:
            held.pop(f.key, None)
            self.added.pop(f.key, None)
            return
        groups, meters = _uses(f)
        if not groups <= self.tables.groups.keys() or not meters <= self.tables.meters.keys():
            raise Refused(f"flow uses a group or meter the switch does not hold: {f}")
        if command == ofp.OFPFC_ADD:
            held[f.key] = f
            self.added[f.key] = self._received
        elif command == ofp.OFPFC_MODIFY_STRICT:
            old = held.get(f.key)
            if old is not None:
                held[f.key] = Flow(old.table, old.priority, old.match, f.instructions, old.cookie)
        else:
            raise Refused(f"the fake switch does not take flow command {command}")

    def _referenced(self, held: dict, key: int, entry: Any, command: int, verbs: tuple[int, int, int],
                    used: int) -> None:
        """A group or meter command; ``used``: which of ``_uses`` names it."""
        add, modify, delete = verbs
        if command == add and key in held:
            raise Refused(f"{entry} exists already")
        if command == modify and key not in held:
            raise Refused(f"{entry} is unknown")
        if command == delete:
            held.pop(key, None)
            for f in [f for f in self.tables.flows.values() if key in _uses(f)[used]]:
                del self.tables.flows[f.key]
                self.added.pop(f.key, None)
        elif command in (add, modify):
            held[key] = entry
        else:
            raise Refused(f"the fake switch does not take command {command}")
