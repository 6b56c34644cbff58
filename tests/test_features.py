"""The features of the pipeline: each writes only its declared part, and only the Encap puts a tenant on the wire."""

import copy
import itertools

import pytest
from fabrics import TWO_TENANTS, leafspine, placed_model

from sdnvirt.migration import Migrations
from sdnvirt.model import Location
from sdnvirt.plan import pipeline
from sdnvirt.plan.check import Conflict, OutsideDeclaration
from sdnvirt.plan.encap import LABEL_MASK, Encap, label_mac
from sdnvirt.plan.feature import Feature, declare
from sdnvirt.plan.features.preinstall import MigrationPreinstall
from sdnvirt.plan.flows import (
    MULTICAST,
    OFPVID_NONE,
    Group,
    Meter,
    Owner,
    apply,
    cookie,
    flow,
    goto,
    meter,
    write_metadata,
)
from sdnvirt.plan.pipeline import FEATURES, plan
from sdnvirt.plan.tables import TABLES, MeterId, Table

SERVICES = {
    "web": {"vip": "10.1.0.100", "port": 80, "backends": [{"vm": "web2", "port": 8080}, {"vm": "web3", "port": 8080}]},
    "dns": {"vip": "10.1.0.100", "port": 53, "protocol": "udp", "on_empty": "drop",
            "backends": [{"vm": "web1", "port": 53}]},
}


def with_services():
    doc = copy.deepcopy(TWO_TENANTS)
    doc["tenants"]["blue"]["services"] = SERVICES
    return doc


def migrating():
    """web1 on its way from leaf1 to leaf4 (port 5), its target prepared."""
    model = placed_model(with_services())
    migs = Migrations(model, wall=lambda: 0.0, mono=lambda: 0.0)
    switches = {f"leaf{i}": 0x100 + i for i in range(1, 5)}
    mig = migs.request("web1", "leaf4", "live", switches, {d: n for n, d in switches.items()})
    migs.plugged(mig.id, 5)
    return model


def no_backend():
    model = placed_model(with_services())
    for health in model.health.values():
        health.up = False
    return model


def split():
    """Leaves 1-2 reach only spine 1, leaves 3-4 only spine 2."""
    fab = leafspine()
    for leaf, port in ((0x101, 2), (0x102, 2), (0x103, 1), (0x104, 1)):
        fab.set_port(leaf, port, False)
    return fab


SCENARIOS = {
    "two tenants": lambda: (leafspine(), placed_model()),
    "services": lambda: (leafspine(), placed_model(with_services())),
    "no usable backend": lambda: (leafspine(), no_backend()),
    "a migration prepared": lambda: (leafspine(), migrating()),
    "a fabric in two pieces": lambda: (split(), placed_model(with_services())),
    "4 spines, 8 leaves": lambda: (leafspine(spines=4, leaves=8), placed_model(with_services(), spines=4)),
}


@pytest.mark.parametrize("name", SCENARIOS)
def test_every_feature_writes_only_what_it_declares(name):
    fab, model = SCENARIOS[name]()
    assert plan(model, fab, checked=True) == plan(model, fab)


# -- the checker ------------------------------------------------------------------------------

VM_COOKIE = cookie(Owner.VM, 101, "web1")
ROGUE = declare("rogue", {Table.FORWARD: {100}}, {Owner.VM}, {MeterId.SERVICE})


def rogue(flows=(), groups=(), meters=()):
    class Rogue(Feature):
        declaration = ROGUE

        def switch(self, dpid, out):
            out.add(dpid, *flows)
            for g in groups:
                out.group(dpid, g)
            for m in meters:
                out.meter(dpid, m)
    return Rogue


def fails(feature, why):
    fab, model = leafspine(), placed_model()
    plan(model, fab, features=(feature,))       # unchecked, the controller's way, it plans
    with pytest.raises(OutsideDeclaration, match=why):
        plan(model, fab, checked=True, features=(feature,))


def forward(match=None, instructions=(), owner=VM_COOKIE, priority=100, table=Table.FORWARD):
    return flow(table, priority, {"metadata": 101, **(match or {})}, list(instructions), owner)


@pytest.mark.parametrize("bad, why", [
    (forward(table=Table.FLOOD), "table 7 is not the feature's"),
    (forward(priority=90), "priority 90 in table 6 is not the feature's"),
    (forward(owner=cookie(Owner.TENANT, 101, "blue")), "cookie kind 0x2 is not the feature's"),
    (forward({"ipv4_dst": "10.1.0.11"}), "table 6 matches no ipv4_dst"),
    (forward(instructions=[goto(Table.SERVICES)]), "table 6 does not go to table 3"),
    (forward(instructions=[apply(("ct", 0, 101, Table.LB, ("nat",)))]), "table 6 does not recirculate to table 4"),
    (forward(instructions=[meter(MeterId.LEARN)]), "meter 1 is not the feature's"),
])
def test_a_feature_writing_outside_its_declaration_fails(bad, why):
    fails(rogue([bad]), why)


def test_a_feature_may_add_only_its_own_meters_and_the_groups_its_flows_use():
    fails(rogue(meters=[Meter(MeterId.LEARN, 10, 10)]), "meter 1 is not declared")
    fails(rogue(groups=[Group(7, ())]), "group 7 that no flow of the feature uses")
    uses = forward(instructions=[apply(("group", 7))])
    fails(rogue([uses], groups=[Group(7, ((("ct", 1, 101, Table.LB, ("nat",)),),))]),
          "group 7: table 6 does not recirculate to table 4")


def test_a_real_feature_that_strays_fails():
    class Sloppy(MigrationPreinstall):
        def tenant(self, tenant, out):
            super().tenant(tenant, out)
            out.add(min(tenant.members), flow(Table.FLOOD, 100, {"metadata": tenant.segment}, [], tenant.cookie))
    fails(Sloppy, "migration pre-install")


def test_two_features_wanting_different_flows_in_one_place_fail():
    drop, punt = forward(), forward(instructions=[apply(("controller", 0xFFFF))])
    fab, model = leafspine(), placed_model()
    assert plan(model, fab, checked=True, features=(rogue([drop]), rogue([drop])))
    with pytest.raises(Conflict, match="flows with the same table, priority and match"):
        plan(model, fab, checked=True, features=(rogue([drop]), rogue([punt])))


# -- the declarations --------------------------------------------------------------------------

def test_gotos_only_go_forward_and_every_table_is_declared():
    assert set(TABLES) == set(Table)
    for spec in TABLES.values():
        assert all(t > spec.table for t in spec.goto), spec     # OpenFlow 1.3 refuses a goto back


def test_each_priority_of_a_table_is_one_features_but_the_vm_flows_a_migration_prepares():
    owners = {}
    for feature in FEATURES:
        for table, priorities in feature.declaration.owns.items():
            for prio in priorities:
                owners.setdefault((table, prio), []).append(feature.__name__)
    shared = {k: v for k, v in owners.items() if len(v) > 1}
    assert shared == {(Table.INGRESS, 300): ["PortSecurity", "MigrationPreinstall"],
                      (Table.INGRESS, 250): ["PortSecurity", "MigrationPreinstall"],
                      (Table.FORWARD, 100): ["TenantSwitching", "MigrationPreinstall"]}


# -- what the features make of a known fabric -------------------------------------------------

def test_flow_and_group_counts_of_known_fabrics():
    counts = {}
    for name in ("two tenants", "a migration prepared"):
        fab, model = SCENARIOS[name]()
        counts[name] = {dpid: len(flows) for dpid, flows in plan(model, fab).flows.items()}
    assert counts["two tenants"] == {0x101: 59, 0x102: 40, 0x103: 38, 0x104: 24, 0x201: 30, 0x202: 30}
    assert counts["a migration prepared"] == {0x101: 75, 0x102: 56, 0x103: 38, 0x104: 56, 0x201: 30, 0x202: 30}
    fab, model = SCENARIOS["services"]()
    p = plan(model, fab)
    assert {dpid: len(groups) for dpid, groups in p.groups.items()} == \
        {0x101: 2, 0x102: 2, 0x103: 0, 0x104: 0, 0x201: 0, 0x202: 0}
    assert all(sorted(meters) == [1, 2, 3] for meters in p.meters.values())


def test_the_segment_is_a_vlan_tag_on_fabric_links_and_frames_go_by_their_switch_label():
    fab, model = leafspine(), placed_model()
    flows = plan(model, fab).flows
    web2 = model.vm("web2")
    at = model.locations["web2"]
    assert at.dpid == 0x102
    tag = (("push_vlan",), ("set", "vlan_vid", 0x1000 | 101))
    # leaf1 addresses web2's frames to leaf2's port, tags them and routes them by the label...
    arrival = label_mac(0x102, at.port)
    assert arrival == f"0e:00:01:02:00:{at.port:02x}"
    assert flow(Table.FORWARD, 100, {"metadata": 101, "eth_dst": web2.mac},
                [apply(("set", "eth_dst", arrival), *tag), goto(Table.ROUTE)],
                cookie(Owner.VM, 101, "web2")) in flows[0x101]
    # ... up to spine 1 (0x102 % 2 picks the first), which sends every tenant's frames on to leaf2
    # by the label alone: a flow per switch, none per VM.
    to_leaf2 = {"eth_dst": ("0e:00:01:02:00:00", LABEL_MASK)}
    assert flow(Table.ROUTE, 100, to_leaf2, [apply(("output", 1))], cookie(Owner.FABRIC)) in flows[0x101]
    assert flow(Table.INGRESS, 120, {"in_port": 1, "vlan_vid": (0x1000, 0x1000)}, [goto(Table.ROUTE)],
                cookie(Owner.FABRIC)) in flows[0x201]
    assert flow(Table.ROUTE, 100, to_leaf2, [apply(("output", 2))], cookie(Owner.FABRIC)) in flows[0x201]
    assert not [f for f in flows[0x201] if f.cookie == cookie(Owner.VM, 101, "web2")]
    # leaf2 takes blue's frames addressed to it in and unwraps them, and puts web2's MAC back.
    assert flow(Table.INGRESS, 200, {"in_port": 1, "vlan_vid": 0x1000 | 101,
                                     "eth_dst": ("0e:00:01:02:00:00", LABEL_MASK)},
                [apply(("pop_vlan",)), write_metadata(101), goto(Table.UNNAT)],
                cookie(Owner.TENANT, 101, "blue")) in flows[0x102]
    assert flow(Table.FORWARD, 100, {"metadata": 101, "eth_dst": arrival},
                [apply(("set", "eth_dst", web2.mac), ("output", at.port))],
                cookie(Owner.VM, 101, "web2")) in flows[0x102]
    # Blue's broadcast: leaf1's VMs web1 and web3 untagged, then tagged into the fabric's one
    # spanning tree (table 9), which spine 1 passes on for every tenant alike.
    assert flow(Table.FLOOD, 100, {"metadata": 101},
                [apply(("output", 3), ("output", 4), *tag), goto(Table.ROUTE)],
                cookie(Owner.TENANT, 101, "blue")) in flows[0x101]
    tree = flow(Table.ROUTE, 100, {"eth_dst": MULTICAST}, [apply(*(("output", p) for p in (1, 2, 3, 4)))],
                cookie(Owner.FABRIC))
    assert tree in flows[0x201]
    assert all(f.cookie == cookie(Owner.FABRIC) for f in flows[0x201] | flows[0x202])


class Direct(Encap):
    """A made-up overlay, shaped like VXLAN: every switch straight to the
    destination's, through port 1000 + its dpid, the segment in tunnel_id."""

    name = "direct"
    ingress_fields = frozenset({"in_port", "tunnel_id"})

    def toward(self, segment, dst, sources):
        return {src: (apply(("set", "tunnel_id", segment), ("output", 1000 + dst)),) for src in sources if src != dst}

    def flood(self, segment, members):
        return {at: tuple(a for other in sorted(members - {at})
                          for a in (("set", "tunnel_id", segment), ("output", 1000 + other))) for at in members}

    def ingress(self, segment, dpid, members):
        return [({"in_port": 999, "tunnel_id": segment}, ())]


def test_another_encapsulation_is_one_class_and_nothing_else_writes_a_tag(monkeypatch):
    monkeypatch.setitem(pipeline.ENCAPS, "vlan", Direct)
    fab, model = SCENARIOS["a migration prepared"]()
    flows = plan(model, fab, checked=True).flows
    every = [f for fs in flows.values() for f in fs]
    actions = {a for f in every for i in f.instructions if i[0] == "apply" for a in i[1]}
    assert not {a for a in actions if a[0] in ("push_vlan", "pop_vlan") or a[:2] == ("set", "vlan_vid")}
    # Only port security looks at a tag: a VM's frames must come untagged.
    assert {f.match_dict["vlan_vid"] for f in every if "vlan_vid" in f.match_dict} == {OFPVID_NONE}
    # The spines carry no tenant: frames go straight from one leaf to another.
    assert all(cookie(Owner.FABRIC) == f.cookie for dpid in (0x201, 0x202) for f in flows[dpid])
    web2 = model.vm("web2")
    assert flow(Table.FORWARD, 100, {"metadata": 101, "eth_dst": web2.mac},
                [apply(("set", "tunnel_id", 101), ("output", 1000 + 0x102))],
                cookie(Owner.VM, 101, "web2")) in flows[0x104]
    assert flow(Table.INGRESS, 200, {"in_port": 999, "tunnel_id": 101}, [write_metadata(101), goto(Table.UNNAT)],
                cookie(Owner.TENANT, 101, "blue")) in flows[0x104]


def test_the_plan_does_not_depend_on_the_order_of_the_features():
    fab, model = SCENARIOS["a migration prepared"]()
    want = plan(model, fab)
    for order in itertools.islice(itertools.permutations(FEATURES), 0, None, 720):
        assert plan(model, fab, features=order) == want
    model.bind("web1", Location(0x104, 5))
    assert plan(model, fab, features=FEATURES[::-1]) == plan(model, fab)
