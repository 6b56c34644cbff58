"""The reconciler's changes as OpenFlow messages, and the only place they are sent.

``message`` is also what the fake switch is fed in tests, so what is traced
there is what a switch is sent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from ..plan.flows import Flow, Group
from ..plan.reconcile import Batches, Change, Phase, Verb
from . import ofmsg
from .loop import Loop
from .session import SwitchSession

LOG = logging.getLogger("sdnvirt.controller")

BARRIER_TIMEOUT = 2.0

_FLOW = {Verb.ADD: ofp.OFPFC_ADD, Verb.MODIFY: ofp.OFPFC_MODIFY_STRICT, Verb.DELETE: ofp.OFPFC_DELETE_STRICT}
_GROUP = {Verb.ADD: ofp.OFPGC_ADD, Verb.MODIFY: ofp.OFPGC_MODIFY, Verb.DELETE: ofp.OFPGC_DELETE}
_METER = {Verb.ADD: ofp.OFPMC_ADD, Verb.MODIFY: ofp.OFPMC_MODIFY, Verb.DELETE: ofp.OFPMC_DELETE}

Work = dict[int, tuple[SwitchSession, Batches]]


def message(dp: Any, change: Change) -> Any:
    entry = change.entry
    if isinstance(entry, Flow):
        return ofmsg.flow_mod(dp, entry, _FLOW[change.verb])
    if isinstance(entry, Group):
        return ofmsg.group_mod(dp, entry, _GROUP[change.verb])
    return ofmsg.meter_mod(dp, entry, _METER[change.verb])


@dataclass
class _Push:
    work: dict[int, tuple[SwitchSession, dict[tuple[Phase, int], list[Change]]]]
    done: Callable[[], None]
    failed: Callable[[], None]
    steps: list[tuple[Phase, int]]
    waiting: set[tuple[int, int]] = field(default_factory=set)     # (dpid, xid) of the barriers sent


class Sender:
    """Sends messages, counting them, and pushes a reconcile's batches step by
    step (a phase, or a rank within it): every switch confirms a step with a
    barrier reply before any switch gets the next.  The pushing never blocks the loop: barrier replies move it on."""

    def __init__(self, loop: Loop, count: Callable[[str], None], withheld: Callable[[str], None]):
        self._loop = loop
        self._count, self._withheld = count, withheld
        self._push: _Push | None = None
        # Whether a message may go to a switch: in a cluster, writes go only
        # where this instance is master (``roles``).
        self.may_write: Callable[[Any, Any], bool] = lambda dp, msg: True

    @property
    def busy(self) -> bool:
        return self._push is not None

    def send(self, dp: Any, msg: Any) -> None:
        kind = ofmsg.MESSAGE_TYPES[msg.cls_msg_type]
        if not self.may_write(dp, msg):
            self._withheld(kind)
            return
        dp.send_msg(msg)
        self._count(kind)

    def push(self, work: Work, done: Callable[[], None], failed: Callable[[], None]) -> None:
        """Send ``work``; ``done`` runs on the loop once the last step is confirmed,
        ``failed`` instead if a step could not be sent (the sender is free again)."""
        assert self._push is None, "one push at a time"
        steps = {dpid: (session, batches.steps()) for dpid, (session, batches) in work.items()}
        self._push = _Push(steps, done, failed, sorted({step for _, by_step in steps.values() for step in by_step}))
        self._next_phase()

    def barrier_reply(self, dpid: int, xid: int) -> None:
        push = self._push
        if push is not None and (dpid, xid) in push.waiting:
            push.waiting.discard((dpid, xid))
            if not push.waiting:
                self._next_phase()

    def switch_gone(self, dpid: int) -> None:
        """A switch that went away confirms nothing more: stop waiting for it."""
        push = self._push
        if push is None:
            return
        push.work.pop(dpid, None)
        push.waiting = {(d, x) for d, x in push.waiting if d != dpid}
        if not push.waiting:
            self._next_phase()

    def _next_phase(self) -> None:
        push = self._push
        assert push is not None
        try:
            finished = self._send_steps(push)
        except Exception:    # noqa: BLE001 - logged; nothing would ever move this push on
            LOG.exception("sending a reconcile's changes failed")
            self._push = None
            push.failed()
            return
        if finished:
            self._push = None
            push.done()

    def _send_steps(self, push: _Push) -> bool:
        """Send the next step that has changes; True once no step is left."""
        while push.steps:
            step = push.steps.pop(0)
            for dpid, (session, by_step) in sorted(push.work.items()):
                batch = by_step.get(step)
                if batch:
                    for change in batch:
                        self.send(session.dp, message(session.dp, change))
                    push.waiting.add((dpid, self._barrier(session.dp)))
            if push.waiting:
                self._loop.after(BARRIER_TIMEOUT, partial(self._timeout, push, set(push.waiting)))
                return False
        return True

    def _timeout(self, push: _Push, waiting: set[tuple[int, int]]) -> None:
        late = waiting & push.waiting
        if self._push is not push or not late:
            return
        for dpid in sorted({d for d, _ in late}):
            LOG.warning("switch %016x did not confirm its changes in time", dpid)
        push.waiting.clear()
        self._next_phase()

    def _barrier(self, dp: Any) -> int:
        barrier = parser.OFPBarrierRequest(dp)
        dp.set_xid(barrier)
        self.send(dp, barrier)
        return barrier.xid
