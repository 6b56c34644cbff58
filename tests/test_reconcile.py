"""The keyed diff of flows, groups and meters, and the order of its phases."""

from __future__ import annotations

from sdnvirt.plan.flows import Flow, Group, Meter, flow
from sdnvirt.plan.reconcile import Phase, Tables, Verb, reconcile


def _f(priority: int, port: int, out: int, cookie: int = 1) -> Flow:
    return flow(0, priority, {"in_port": port}, [("apply", (("output", out),))], cookie)


G1 = Group(7, ((("output", 1),),))
G1_CHANGED = Group(7, ((("output", 2),),))
M1 = Meter(1, 100, 10)


def test_same_tables_need_no_change():
    t = Tables.of([_f(10, 1, 2), _f(10, 2, 1)], {7: G1}, {1: M1})
    assert not reconcile(t, Tables.of(t.flows.values(), t.groups, t.meters))


def test_changes_come_in_make_before_break_phases():
    installed = Tables.of([_f(10, 1, 2), _f(10, 3, 4)], {}, {})
    desired = Tables.of([_f(10, 1, 5), _f(10, 2, 1)], {7: G1}, {1: M1})
    batches = reconcile(desired, installed)
    assert list(batches.phases) == [Phase.MAKE_REFERENCED, Phase.MAKE_FLOWS, Phase.BREAK_FLOWS]
    assert [(c.verb, c.entry) for c in batches.phases[Phase.MAKE_REFERENCED]] == [
        (Verb.ADD, M1), (Verb.ADD, G1)]
    assert [(c.verb, c.entry) for c in batches.phases[Phase.MAKE_FLOWS]] == [
        (Verb.ADD, _f(10, 2, 1)), (Verb.MODIFY, _f(10, 1, 5))]
    assert [(c.verb, c.entry) for c in batches.phases[Phase.BREAK_FLOWS]] == [(Verb.DELETE, _f(10, 3, 4))]


def test_a_new_cookie_is_an_add_not_a_modify():
    # OpenFlow 1.3 cannot change a flow's cookie in place.
    batches = reconcile(Tables.of([_f(10, 1, 2, cookie=2)]), Tables.of([_f(10, 1, 2, cookie=1)]))
    assert batches.entries(Verb.ADD) == [_f(10, 1, 2, cookie=2)]
    assert not batches.entries(Verb.MODIFY) and not batches.entries(Verb.DELETE)


def test_groups_and_meters_go_after_the_flows_that_used_them():
    installed = Tables.of([_f(10, 1, 2)], {7: G1}, {1: M1})
    batches = reconcile(Tables.of(), installed)
    assert list(batches.phases) == [Phase.BREAK_FLOWS, Phase.BREAK_REFERENCED]
    assert batches.entries(Verb.DELETE, Group) == [G1] and batches.entries(Verb.DELETE, Meter) == [M1]


def test_a_changed_group_or_meter_is_modified():
    batches = reconcile(Tables.of([], {7: G1_CHANGED}, {1: Meter(1, 200, 20)}), Tables.of([], {7: G1}, {1: M1}))
    assert batches.count(Group) == {Verb.ADD: 0, Verb.MODIFY: 1, Verb.DELETE: 0}
    assert batches.count(Meter) == {Verb.ADD: 0, Verb.MODIFY: 1, Verb.DELETE: 0}


def test_applying_every_batch_gives_the_desired_tables():
    installed = Tables.of([_f(10, 1, 2), _f(10, 3, 4), _f(20, 1, 1, cookie=3)],
                          {7: G1, 9: Group(9, ())}, {2: Meter(2, 50, 10)})
    desired = Tables.of([_f(10, 1, 5), _f(10, 2, 1), _f(20, 1, 1, cookie=4)], {7: G1_CHANGED}, {1: M1})
    for batch in reconcile(desired, installed).phases.values():
        installed.apply(batch)
    assert installed == desired
    assert not reconcile(desired, installed)
