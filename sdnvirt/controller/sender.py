"""The reconciler's changes as OpenFlow messages, and the only place they are sent.

``message`` is also what the fake switch is fed in tests, so what is traced
there is what a switch is sent.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from ..plan.flows import Flow
from ..plan.reconcile import Batches, Change, Phase, Verb
from ..plan.services import Group
from . import ofmsg
from .session import SwitchSession

LOG = logging.getLogger("sdnvirt.controller")

BARRIER_TIMEOUT = 2.0

_FLOW = {Verb.ADD: ofp.OFPFC_ADD, Verb.MODIFY: ofp.OFPFC_MODIFY_STRICT, Verb.DELETE: ofp.OFPFC_DELETE_STRICT}
_GROUP = {Verb.ADD: ofp.OFPGC_ADD, Verb.MODIFY: ofp.OFPGC_MODIFY, Verb.DELETE: ofp.OFPGC_DELETE}
_METER = {Verb.ADD: ofp.OFPMC_ADD, Verb.MODIFY: ofp.OFPMC_MODIFY, Verb.DELETE: ofp.OFPMC_DELETE}


def message(dp: Any, change: Change) -> Any:
    entry = change.entry
    if isinstance(entry, Flow):
        return ofmsg.flow_mod(dp, entry, _FLOW[change.verb])
    if isinstance(entry, Group):
        return ofmsg.group_mod(dp, entry, _GROUP[change.verb])
    return ofmsg.meter_mod(dp, entry, _METER[change.verb])


class Sender:
    """Sends messages, counting them; sends batches phase by phase, every
    switch's phase confirmed by a barrier before any switch gets the next."""

    def __init__(self, count: Callable[[str], None]):
        self._count = count
        self._barriers: dict[int, threading.Event] = {}
        self._lock = threading.Lock()

    def send(self, dp: Any, msg: Any) -> None:
        dp.send_msg(msg)
        self._count(ofmsg.MESSAGE_TYPES[msg.cls_msg_type])

    def barrier_reply(self, xid: int) -> None:
        with self._lock:
            done = self._barriers.pop(xid, None)
        if done is not None:
            done.set()

    def send_batches(self, work: dict[int, tuple[SwitchSession, Batches]]) -> None:
        for phase in Phase:
            waits = []
            for dpid, (session, batches) in sorted(work.items()):
                batch = batches.phases.get(phase)
                if not batch:
                    continue
                dp = session.dp
                for change in batch:
                    self.send(dp, message(dp, change))
                waits.append((dpid, self._barrier(dp)))
            deadline = time.monotonic() + BARRIER_TIMEOUT
            for dpid, (xid, done) in waits:
                if not done.wait(max(0.0, deadline - time.monotonic())):
                    with self._lock:
                        self._barriers.pop(xid, None)
                    LOG.warning("switch %016x did not confirm its changes in time", dpid)

    def _barrier(self, dp: Any) -> tuple[int, threading.Event]:
        barrier = parser.OFPBarrierRequest(dp)
        dp.set_xid(barrier)
        done = threading.Event()
        with self._lock:
            self._barriers[barrier.xid] = done
        self.send(dp, barrier)
        return barrier.xid, done
