"""The controller's loop and the sender's phases, driven by a clock of the test's own."""

from __future__ import annotations

import threading

import pytest
from fabrics import TWO_TENANTS
from os_ken.ofproto import ofproto_v1_3 as ofp

from sdnvirt import config
from sdnvirt.controller import packet_in, periodic
from sdnvirt.controller.core import Controller
from sdnvirt.controller.loop import BATCH, Loop
from sdnvirt.controller.sender import BARRIER_TIMEOUT, Sender
from sdnvirt.controller.session import SwitchSession
from sdnvirt.events import Events, Handler
from sdnvirt.metrics import Metrics
from sdnvirt.plan.flows import flow
from sdnvirt.plan.reconcile import Tables, reconcile


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class FakeDatapath:
    def __init__(self):
        self.sent = []
        self.xid = 0

    def set_xid(self, msg):
        self.xid += 1
        msg.xid = self.xid

    def send_msg(self, msg):
        self.sent.append(msg)


def test_timers_run_in_order_when_their_time_comes():
    clock = Clock()
    loop = Loop(clock)
    ran = []
    loop.after(2.0, lambda: ran.append("b"))
    loop.after(1.0, lambda: ran.append("a"))
    assert loop.run_due() == pytest.approx(1.0) and ran == []
    clock.now += 1.5
    assert loop.run_due() == pytest.approx(0.5) and ran == ["a"]
    clock.now += 1.0
    assert loop.run_due() is None and ran == ["a", "b"]


def test_call_runs_on_the_loop_and_returns_or_raises():
    loop = Loop()
    loop.start("test-loop")
    assert loop.call(lambda: threading.current_thread().name) == "test-loop"
    with pytest.raises(KeyError):
        loop.call(lambda: {}["missing"])


def test_a_failing_piece_of_work_does_not_stop_the_loop():
    loop = Loop(Clock())
    ran = []
    loop.post(lambda: 1 / 0)
    loop.post(lambda: ran.append(1))
    assert loop.run_posted() and ran == [1]


def _work(dpid: int):
    dp = FakeDatapath()
    session = SwitchSession(dp, dpid)
    want = Tables.of([flow(0, 10, {"in_port": 1}, [], 1)])
    have = Tables.of([flow(0, 10, {"in_port": 2}, [], 1)])
    return dp, (session, reconcile(want, have))


def test_no_switch_gets_a_phase_before_every_switch_confirmed_the_last():
    loop = Loop(Clock())
    sender = Sender(loop, lambda kind: None, lambda kind: None)
    (dp1, w1), (dp2, w2) = _work(1), _work(2)
    done = []
    sender.push({1: w1, 2: w2}, lambda: done.append(True), lambda: done.append(False))
    # The adds and a barrier to each switch; no delete yet.
    assert [type(m).__name__ for m in dp1.sent] == ["OFPFlowMod", "OFPBarrierRequest"]
    sender.barrier_reply(1, dp1.sent[-1].xid)
    assert len(dp2.sent) == 2 and len(dp1.sent) == 2
    sender.barrier_reply(2, dp2.sent[-1].xid)
    assert [m.command for m in dp1.sent if type(m).__name__ == "OFPFlowMod"] == [0, 4]   # ADD, DELETE_STRICT
    sender.barrier_reply(1, dp1.sent[-1].xid)
    assert not done
    sender.barrier_reply(2, dp2.sent[-1].xid)
    assert done and not sender.busy


def test_a_switch_that_never_confirms_holds_the_others_up_only_until_the_timeout():
    clock = Clock()
    loop = Loop(clock)
    sender = Sender(loop, lambda kind: None, lambda kind: None)
    (dp1, w1), (_, w2) = _work(1), _work(2)
    done = []
    sender.push({1: w1, 2: w2}, lambda: done.append(True), lambda: done.append(False))
    sender.barrier_reply(1, dp1.sent[-1].xid)
    clock.now += BARRIER_TIMEOUT
    loop.run_due()
    assert len(dp1.sent) == 4          # the next phase went out anyway
    sender.switch_gone(2)
    sender.barrier_reply(1, dp1.sent[-1].xid)
    assert done


def test_work_that_raises_is_counted_by_where_it_ran_and_the_controller_goes_on():
    # With os-ken's native hub an exception in one of its handlers would end
    # its event loop without a word: the shim only posts, and the loop guards.
    failed = []
    ctl = Controller(config.parse(TWO_TENANTS), Metrics(), Events(), failed.append, clock=Clock())
    ctl.loop.post(packet_in.handle, ctl, object())           # no datapath: AttributeError
    ctl.loop.post(periodic.tick, ctl)
    ctl.loop.post(ctl.switch_gone, object())
    ctl.loop.post(ctl.request)
    assert ctl.loop.run_posted()
    assert failed == [Handler.PACKET_IN, Handler.OPENFLOW] and ctl.wanted == 1


class RefusingDatapath(FakeDatapath):
    def send_msg(self, msg):
        if type(msg).__name__ == "OFPFlowMod":
            raise OSError("the connection broke")
        super().send_msg(msg)


def test_a_push_that_cannot_be_sent_frees_the_sender_and_says_so():
    loop = Loop(Clock())
    sender = Sender(loop, lambda kind: None, lambda kind: None)
    dp = RefusingDatapath()
    session = SwitchSession(dp, 1)
    batches = reconcile(Tables.of([flow(0, 10, {"in_port": 1}, [], 1)]), Tables.of())
    outcome = []
    sender.push({1: (session, batches)}, lambda: outcome.append("done"), lambda: outcome.append("failed"))
    assert outcome == ["failed"] and not sender.busy


def test_a_stream_of_posts_does_not_hold_up_the_timers():
    # The loop looks at its timers again after at most BATCH posted pieces.
    loop = Loop(Clock())
    ran = []
    for i in range(3 * BATCH):
        loop.post(ran.append, i)
    assert loop.run_posted() and ran == list(range(BATCH))
    assert loop.run_posted() and ran == list(range(2 * BATCH))


@pytest.mark.parametrize("planning", ["incremental", "full"])
def test_a_full_planning_round_diffs_every_switch_an_incremental_one_what_changed(planning):
    ctl = Controller(config.parse({**TWO_TENANTS, "controller": {"fabric": {"planning": planning}}}), Metrics(),
                     Events(), lambda handler: None, clock=Clock())
    dp = FakeDatapath()
    ctl.fabric.add_switch(0x101)
    session = ctl.sessions[0x101] = SwitchSession(dp, 0x101)
    session.installed_flows, session.installed_groups, session.installed_meters = {}, {}, {}

    def round_() -> list:
        sent = len(dp.sent)
        ctl.reconcile(ctl.clock())
        while ctl.sender.busy:
            ctl.sender.barrier_reply(0x101, dp.sent[-1].xid)
        return [m for m in dp.sent[sent:] if type(m).__name__ == "OFPFlowMod"]

    assert round_()                     # programmed: from now on the switch is in step
    stray = flow(0, 1, {"in_port": 99}, [], 1)
    session.installed_flows[stray.key] = stray      # a flow no change of the model's accounts for
    # Incremental: nothing changed, nothing is looked at; full: every switch diffed, the stray flow goes.
    assert [m.command for m in round_()] == ([] if planning == "incremental" else [ofp.OFPFC_DELETE_STRICT])
