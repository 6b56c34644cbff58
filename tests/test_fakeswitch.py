"""The fake switch: what it does with each command, and why every planned entry survives the wire."""

import pytest
from fabrics import leafspine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sdnvirt import config
from sdnvirt.controller.fakeswitch import FakeSwitch, Refused
from sdnvirt.model import Location, Model
from sdnvirt.plan.flows import Group, Meter, apply, flow, meter
from sdnvirt.plan.pipeline import plan
from sdnvirt.plan.reconcile import Change, Tables, Verb, reconcile

G = Group(7, ((("output", 1),), (("output", 2),)))
M = Meter(3, 100, 10)


def _f(out: int, cookie: int = 1, *extra):
    return flow(2, 10, {"in_port": 1, "eth_type": 0x0800, "ipv4_dst": "10.0.0.1"},
                [*extra, apply(("output", out))], cookie)


def _switch(*changes):
    sw = FakeSwitch(1)
    sw.apply(Change(verb, entry) for verb, entry in changes)
    return sw


def test_add_replaces_the_flow_with_the_same_strict_match_and_its_cookie_and_counters():
    sw = _switch((Verb.ADD, _f(5)))
    first = sw.added[_f(5).key]
    sw.apply([Change(Verb.ADD, _f(6, cookie=2))])
    assert list(sw.tables.flows.values()) == [_f(6, cookie=2)]
    assert sw.added[_f(5).key] != first


def test_modify_strict_changes_the_instructions_only_and_adds_nothing():
    sw = _switch((Verb.ADD, _f(5)))
    first = sw.added[_f(5).key]
    sw.apply([Change(Verb.MODIFY, _f(6, cookie=9))])
    assert list(sw.tables.flows.values()) == [_f(6, cookie=1)] and sw.added[_f(5).key] == first
    other = flow(2, 11, {"in_port": 1}, [], 1)
    sw.apply([Change(Verb.MODIFY, other)])
    assert other.key not in sw.tables.flows


def test_delete_strict_removes_only_that_flow():
    other = flow(2, 11, {"in_port": 1}, [], 1)
    sw = _switch((Verb.ADD, _f(5)), (Verb.ADD, other))
    sw.apply([Change(Verb.DELETE, _f(5))])
    assert list(sw.tables.flows.values()) == [other]


def test_groups_and_meters_are_added_modified_and_deleted_as_a_switch_does():
    sw = _switch((Verb.ADD, G), (Verb.ADD, M))
    assert sw.tables.groups == {7: G} and sw.tables.meters == {3: M}
    with pytest.raises(Refused):
        sw.apply([Change(Verb.ADD, G)])
    with pytest.raises(Refused):
        sw.apply([Change(Verb.MODIFY, Group(8, G.buckets))])
    sw.apply([Change(Verb.MODIFY, Group(7, G.buckets[:1])), Change(Verb.MODIFY, Meter(3, 200, 20))])
    assert sw.tables.groups == {7: Group(7, G.buckets[:1])} and sw.tables.meters == {3: Meter(3, 200, 20)}


def test_a_flow_needs_its_group_and_meter_and_goes_with_them():
    uses_group = flow(2, 20, {"in_port": 2}, [apply(("group", 7))], 1)
    uses_meter = _f(5, 1, meter(3))
    with pytest.raises(Refused):
        _switch((Verb.ADD, uses_group))
    with pytest.raises(Refused):
        _switch((Verb.ADD, uses_meter))
    sw = _switch((Verb.ADD, G), (Verb.ADD, M), (Verb.ADD, uses_group), (Verb.ADD, uses_meter))
    sw.apply([Change(Verb.DELETE, G)])
    assert list(sw.tables.flows.values()) == [uses_meter]
    sw.apply([Change(Verb.DELETE, M)])
    assert not sw.tables


# -- every planned entry, serialised and parsed back, equals itself ------------------

LEAVES, SPINES, ACCESS = 3, 2, 3      # leaf ports SPINES+1 .. SPINES+ACCESS hold VMs


@st.composite
def scenarios(draw):
    """A fabric-sized model: tenants, VMs placed or not, services with backends, migrations pending."""
    free = [Location(0x100 + leaf, port) for leaf in range(1, LEAVES + 1)
            for port in range(SPINES + 1, SPINES + ACCESS + 1)]
    free = draw(st.permutations(free))
    tenants, vms = {}, []
    for t in range(1, draw(st.integers(1, 3)) + 1):
        names = [f"t{t}vm{v}" for v in range(1, draw(st.integers(1, 4)) + 1)]
        vms += names
        services = {}
        for s in range(draw(st.integers(0, 2))):
            chosen = draw(st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True))
            protocol = draw(st.sampled_from(["tcp", "udp"]))
            services[f"s{s}"] = {
                "vip": f"10.{t}.0.{100 + s}", "protocol": protocol, "port": draw(st.integers(1, 65535)),
                "on_empty": draw(st.sampled_from(["reject", "drop"])),
                "health_check": {"type": "icmp" if protocol == "udp" else "tcp"},
                "backends": [{"vm": n, "port": draw(st.integers(1, 65535)), "weight": draw(st.integers(0, 3)),
                              "drained": draw(st.booleans())} for n in chosen]}
        tenants[f"t{t}"] = {"segment": 100 + t, "subnet": f"10.{t}.0.0/24", "services": services, "vms": {
            n: {"mac": f"02:00:00:00:{t:02x}:{v:02x}", "ip": f"10.{t}.0.{10 + v}"}
            for v, n in enumerate(names, 1)}}
    model = Model(config.parse({"tenants": tenants}))
    for name in vms:
        if free and draw(st.booleans()):
            model.bind(name, free.pop())
    model.moves = _Pending({n: free.pop() for n in draw(st.lists(st.sampled_from(vms), unique=True, max_size=2))
                            if free})
    for health in model.health.values():
        health.up = draw(st.booleans())
    return model


class _Pending:
    def __init__(self, pending):
        self._pending = pending

    def migrating(self):
        return set(self._pending)

    def pending(self):
        return dict(self._pending)

    def draining(self):
        return set()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_every_planned_entry_survives_the_wire(model):
    fab = leafspine(spines=SPINES, leaves=LEAVES, vm_ports=ACCESS)
    desired = plan(model, fab)
    for dpid in fab.switches:
        want = Tables.of(desired.flows[dpid], desired.groups[dpid], desired.meters[dpid])
        sw = FakeSwitch(dpid)
        for batch in reconcile(want, sw.tables).phases.values():
            sw.apply(batch)
        # What the switch holds, read back through os-ken's parser, is the
        # plan: a warm restart reconciles to nothing.
        assert sw.tables == want
        assert not reconcile(want, sw.tables)
