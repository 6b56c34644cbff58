"""The incremental engine against the full plan, its oracle: after every change, flow for flow."""

import copy

from fabrics import TWO_TENANTS, leafspine, placed_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sdnvirt import config
from sdnvirt.model import Location
from sdnvirt.plan.engine import Engine
from sdnvirt.plan.feature import BySwitch, Contribution, Feature, declare
from sdnvirt.plan.flows import Owner, flow
from sdnvirt.plan.pipeline import FEATURES, plan
from sdnvirt.plan.reconcile import Tables, reconcile
from sdnvirt.plan.tables import Table
from sdnvirt.plan.tenancy import Tenant

SPINES, LEAVES, VM_PORTS = 2, 4, 3
ACCESS = [Location(0x100 + leaf, SPINES + p) for leaf in range(1, LEAVES + 1) for p in range(1, VM_PORTS + 1)]
LINKS = [((0x100 + i, j), (0x200 + j, i)) for i in range(1, LEAVES + 1) for j in range(1, SPINES + 1)]


def doc(extra_tenant: bool, services: bool, drained: bool) -> dict:
    """Two tenants, a third added through the API or not, services or not."""
    d = copy.deepcopy(TWO_TENANTS)
    if services:
        d["tenants"]["blue"]["services"] = {
            "web": {"vip": "10.1.0.100", "port": 80, "backends": [
                {"vm": "web2", "port": 8080, "drained": drained}, {"vm": "web3", "port": 8080}]},
            "dns": {"vip": "10.1.0.100", "port": 53, "protocol": "udp", "backends": [{"vm": "web1", "port": 53}]}}
    if extra_tenant:
        d["tenants"]["green"] = {"segment": 103, "subnet": "10.3.0.0/24", "vms": {
            "g1": {"mac": "02:00:00:00:03:01", "ip": "10.3.0.11", "host": "leaf2"},
            "g2": {"mac": "02:00:00:00:03:02", "ip": "10.3.0.12", "host": "leaf4"}},
            "services": {"g": {"vip": "10.3.0.100", "port": 80, "backends": [{"vm": "g1", "port": 80}]}}}
    return d


class Moves:
    def __init__(self):
        self.targets = {}

    def migrating(self):
        return set(self.targets)

    def pending(self):
        return dict(self.targets)

    def draining(self):
        return set()


class World:
    def __init__(self):
        self.fab = leafspine(SPINES, LEAVES, VM_PORTS)
        self.model = placed_model(doc(False, True, False))
        self.model.moves = Moves()

    def free(self, i):
        taken = {*self.model.locations.values(), *self.model.moves.targets.values()}
        free = [loc for loc in ACCESS if loc not in taken]
        return free[i % len(free)] if free else None

    def vm(self, i):
        names = sorted(vm.name for vm in self.model.vms())
        return names[i % len(names)]

    def do(self, change):
        kind, i, j = change
        model = self.model
        if kind == "flap" and model.health:
            keys = sorted(model.health)
            health = model.health[keys[i % len(keys)]]
            health.up = not health.up
        elif kind == "move":
            loc, name = self.free(j), self.vm(i)
            if loc is not None and name not in model.moves.targets:
                model.bind(name, loc)
        elif kind == "lost":
            model.unbind(self.vm(i), "gone")
        elif kind == "migrate":
            loc, name = self.free(j), self.vm(i)
            if loc is not None and name in model.locations:
                model.moves.targets[name] = loc
        elif kind == "arrive":
            if model.moves.targets:
                name = sorted(model.moves.targets)[i % len(model.moves.targets)]
                model.bind(name, model.moves.targets.pop(name))
        elif kind == "link":
            a, b = LINKS[i % len(LINKS)]
            if self.fab.links.get(a) == b:
                self.fab.remove_links_at(a)
            else:
                self.fab.add_link(a, b)
                self.fab.add_link(b, a)
        elif kind == "unplug":      # the port of a link removed, up or down
            self.fab.remove_port(*LINKS[i % len(LINKS)][j % 2])
        elif kind == "config":     # tenants and services added and removed, a backend drained, through the overlay
            model.set_config(config.parse(doc(bool(i % 2), bool(j % 2), bool(i % 3 == 0))))
        elif kind == "restart":    # a switch comes or goes (the engine starts afresh) with a config change
            if not self.fab.remove_switch(EXTRA_SWITCH):
                self.fab.add_switch(EXTRA_SWITCH)
            self.do(("config", i, j))
            model.moves.targets = {n: loc for n, loc in model.moves.targets.items() if model.vm(n)}


EXTRA_SWITCH = 0x999
CHANGES = st.tuples(st.sampled_from(["flap", "move", "lost", "migrate", "arrive", "link", "unplug",
                                     "config", "restart"]),
                    st.integers(0, 50), st.integers(0, 50))


def full(world):
    p = plan(world.model, world.fab, checked=True)
    return {d: Tables.of(p.flows[d], p.groups[d], p.meters[d]) for d in world.fab.switches}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(CHANGES, min_size=1, max_size=12))
def test_the_engine_equals_the_full_plan_after_every_change(changes):
    world = World()
    engine = Engine()
    engine.update(world.model, world.fab)
    # A switch that applies only the changed keys must end up as the full plan says.
    held = {d: Tables.of() for d in world.fab.switches}
    for change in (None, *changes):
        if change is not None:
            world.do(change)
            engine.update(world.model, world.fab)
        want = full(world)
        keys = engine.take_changes()
        for dpid, tables in want.items():
            assert engine.desired.get(dpid, Tables()) == tables, (change, dpid)
            only = keys.get(dpid)
            if only is not None:
                for batch in reconcile(tables, held.setdefault(dpid, Tables.of()), only=only).phases.values():
                    held[dpid].apply(batch)
            assert held.get(dpid, Tables()) == tables, (change, dpid)


def test_nothing_changed_recomputes_nothing():
    world = World()
    engine = Engine()
    engine.update(world.model, world.fab)
    engine.take_changes()
    engine.update(world.model, world.fab)
    assert engine.recomputed == 0
    assert engine.take_changes() == {}


def test_a_backend_down_recomputes_its_service_only():
    world = World()
    engine = Engine()
    engine.update(world.model, world.fab)
    engine.take_changes()
    key = next(k for k in world.model.health if k[1] == "web")
    world.model.health[key].up = False
    engine.update(world.model, world.fab)
    assert engine.recomputed == 1
    changed = engine.take_changes()
    assert all(not k.flows and k.groups for k in changed.values())


class Undeclared(Feature):
    """Declares no inputs: recomputed on every plan, and still right."""

    declaration = declare("undeclared", {Table.FLOOD: {7}}, {Owner.TENANT})

    def tenant(self, tenant: Tenant, out: Contribution) -> None:
        for at in tenant.members:
            out.add(at, flow(Table.FLOOD, 7, {"metadata": tenant.segment, "eth_dst": str(len(tenant.bound))}, [],
                             tenant.cookie))


def test_a_feature_that_declares_nothing_is_recomputed_and_right():
    world = World()
    engine = Engine((*FEATURES, Undeclared))
    engine.update(world.model, world.fab)
    engine.update(world.model, world.fab)
    assert engine.recomputed == 2       # once per tenant
    world.model.unbind("web1", "gone")
    engine.update(world.model, world.fab)
    p = plan(world.model, world.fab, features=(*FEATURES, Undeclared))
    assert {d: engine.desired[d].flows for d in world.fab.switches} == {
        d: Tables.of(p.flows[d]).flows for d in world.fab.switches}


class SplitByDefault(Feature):
    """Parts whose inputs are split by switch, without a ``part_at`` of its own."""

    declaration = declare("split by default", {Table.FLOOD: {7}}, {Owner.TENANT})

    def tenant_inputs(self, tenant: Tenant) -> tuple[()]:
        return ()

    def parts(self, tenant: Tenant) -> dict:
        return {"vms here": BySwitch(tenant.segment, {at: self._here(tenant, at) for at in tenant.members})}

    def part(self, tenant: Tenant, key, out: Contribution) -> None:
        for at in tenant.members:
            out.add(at, flow(Table.FLOOD, 7, {"metadata": tenant.segment, "eth_dst": str(self._here(tenant, at))}, [],
                             tenant.cookie))

    @staticmethod
    def _here(tenant: Tenant, at: int) -> int:
        return sum(loc.dpid == at for loc in tenant.bound.values())


def test_a_part_split_by_switch_is_recomputed_on_the_changed_switches_and_right():
    world = World()
    engine = Engine((*FEATURES, SplitByDefault))
    engine.update(world.model, world.fab)
    engine.take_changes()
    world.model.bind("web1", ACCESS[-1])
    engine.update(world.model, world.fab)
    p = plan(world.model, world.fab, features=(*FEATURES, SplitByDefault))
    assert {d: engine.desired[d].flows for d in world.fab.switches} == {
        d: Tables.of(p.flows[d]).flows for d in world.fab.switches}
    # Only the switches the VM left and joined changed, of this feature's part.
    assert {d for d, k in engine.take_changes().items() if any(key[0] == Table.FLOOD and key[1] == 7
                                                              for key in k.flows)} == {0x101, 0x104}


def test_a_tenant_removed_while_the_engine_starts_afresh_leaves_nothing_behind():
    world = World()
    engine = Engine()
    engine.update(world.model, world.fab)
    without_red = doc(False, True, False)
    del without_red["tenants"]["red"]
    world.model.set_config(config.parse(without_red))
    world.fab.add_switch(EXTRA_SWITCH)       # in the same update: the engine starts afresh
    engine.update(world.model, world.fab)
    want = full(world)
    assert {d: engine.desired.get(d, Tables()) for d in want} == want
