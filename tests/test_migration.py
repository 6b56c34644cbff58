"""Migration: the record's state machine, validation, and what the planner makes of it."""

import copy
import ipaddress

import pytest
from fabrics import TWO_TENANTS, leafspine, placed_model

from sdnvirt import config
from sdnvirt.migration import Migrations, Outcome, Phase, Refused
from sdnvirt.model import Location, Model
from sdnvirt.plan.features.load_balancer import group_for, group_ids
from sdnvirt.plan.owners import vm_cookie
from sdnvirt.plan.pipeline import plan
from sdnvirt.plan.reconcile import Tables, Verb, reconcile
from sdnvirt.plan.tables import Table
from sdnvirt.plan.trace import FakeFabric

SWITCHES = {f"leaf{i}": 0x100 + i for i in range(1, 5)}
NAMES = {dpid: name for name, dpid in SWITCHES.items()}
TARGET_PORT = 5     # leaf2's ports 3 and 4 hold web2 and nothing in placed_model


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def setup(doc=TWO_TENANTS):
    clock = Clock()
    model = placed_model(doc)
    return model, Migrations(model, wall=clock, mono=clock), clock


def start(migs, vm="web1", target="leaf2", mode="live"):
    return migs.request(vm, target, mode, SWITCHES, NAMES)


def test_phases_follow_in_order_and_end_with_the_downtime():
    model, migs, clock = setup()
    mig = start(migs)
    assert (mig.phase, mig.source, mig.target, mig.source_location) == \
        (Phase.PREPARATION, "leaf1", "leaf2", Location(0x101, 3))
    migs.plugged(mig.id, TARGET_PORT)
    assert model.pending["web1"] == Location(0x102, TARGET_PORT)
    clock.t += 1
    migs.capture(mig.id, ["a flow"], {"x": 1})
    assert mig.phase is Phase.DATA_TRANSFER
    assert mig.state["mac"] == "02:00:00:00:01:01" and mig.state["flows"] == ["a flow"]
    migs.heard(mig.id, frozen_at=1002.0)
    clock.t = 1002.1
    assert migs.arrived(mig.id) and not migs.arrived(mig.id)
    assert model.locations["web1"] == Location(0x102, TARGET_PORT) and "web1" not in model.pending
    clock.t = 1002.13
    migs.flipped(mig.id)
    assert not migs.complete(mig.id)      # the agent has not said when it thawed the VM
    migs.heard(mig.id, thawed_at=1002.12)
    assert migs.complete(mig.id)
    assert mig.outcome is Outcome.OK and mig.phase is Phase.FINISHED
    assert mig.downtime == pytest.approx(0.13)
    record = mig.as_dict()
    assert list(record["phases"]) == ["preparation", "state_capture", "data_transfer", "restoration", "finished"]
    assert record["phases"]["preparation"]["duration"] == pytest.approx(1.0)
    assert "web1" not in model.migrating


def test_a_phase_cannot_be_skipped_or_repeated():
    _, migs, _ = setup()
    mig = start(migs)
    with pytest.raises(ValueError):
        mig.enter(Phase.DATA_TRANSFER, 0)
    assert not migs.arrived(mig.id)       # not before the data transfer
    with pytest.raises(ValueError):
        migs.capture(mig.id, [], {}) and migs.capture(mig.id, [], {})


@pytest.mark.parametrize("vm, target, mode, why", [
    ("nobody", "leaf2", "live", "no VM named"),
    ("web1", "leaf9", "live", "no connected switch"),
    ("web1", "leaf1", "live", "already on leaf1"),
    ("web1", "leaf2", "warm", "live or cold"),
])
def test_bad_requests_are_refused(vm, target, mode, why):
    _, migs, _ = setup()
    with pytest.raises(Refused, match=why):
        migs.request(vm, target, mode, SWITCHES, NAMES)
    assert migs.records() == []


def test_a_full_hypervisor_is_refused_and_nothing_changes():
    doc = copy.deepcopy(TWO_TENANTS)
    doc["hypervisors"] = {"leaf2": {"max_vms": 1}}      # web2 is there
    model, migs, _ = setup(doc)
    before = dict(model.locations)
    with pytest.raises(Refused, match="leaf2 is full"):
        start(migs)
    assert model.locations == before and not model.migrating and not model.pending
    start(migs, target="leaf3")     # not listed: migration.max_vms (16)


def test_capacity_counts_vms_on_their_way():
    doc = copy.deepcopy(TWO_TENANTS)
    doc["hypervisors"] = {"leaf4": {"max_vms": 1}}
    _, migs, _ = setup(doc)
    start(migs, "web1", "leaf4")
    with pytest.raises(Refused, match="full"):
        start(migs, "db2", "leaf4")


def test_one_migration_per_vm_but_different_vms_at_once():
    _, migs, _ = setup()
    first = start(migs, "web1", "leaf2")
    with pytest.raises(Refused, match="already migrating"):
        start(migs, "web1", "leaf3")
    other = start(migs, "db1", "leaf3")
    assert {m.id for m in migs.active()} == {first.id, other.id}
    migs.roll_back(first.id, "test")
    start(migs, "web1", "leaf3")


def test_rollback_before_restoration_leaves_the_vm_where_it_was():
    model, migs, _ = setup()
    mig = start(migs)
    migs.plugged(mig.id, TARGET_PORT)
    migs.capture(mig.id, [], {})
    migs.roll_back(mig.id, "target switch disconnected")
    assert mig.outcome is Outcome.ROLLED_BACK and mig.reason == "target switch disconnected"
    assert mig.phase is Phase.DATA_TRANSFER      # where it failed
    assert model.locations["web1"] == Location(0x101, 3)
    assert not model.pending and not model.migrating


def test_silent_agents_and_slow_migrations_are_overdue():
    model, migs, clock = setup()
    quiet, slow = start(migs, "web1"), start(migs, "db2", "leaf4")
    settings = model.config.migration
    clock.t += settings.agent_timeout / 2
    migs.heard(slow.id)
    clock.t += settings.agent_timeout / 2 + 0.01
    assert [m.id for m, _ in migs.overdue()] == [quiet.id]
    clock.t += settings.timeout
    assert {m.id for m, why in migs.overdue() if "timeout" in why} == {quiet.id, slow.id}


def test_a_migrating_vm_is_not_moved_by_learning():
    model, migs, _ = setup()
    start(migs)
    seen = model.observe("02:00:00:00:01:01", ipaddress.IPv4Address("10.1.0.11"), Location(0x104, 5),
                         lambda loc: False)
    assert not seen.bound and "migrating" in seen.reason
    assert model.locations["web1"] == Location(0x101, 3)


def test_a_vm_that_left_its_port_is_lost_until_it_is_seen_again():
    model = placed_model(TWO_TENANTS)
    never = model.vm("web2")
    del model.locations[never.name]          # not located yet: not lost, only looked for at home
    model.unbind("web1", "its VM left its port")
    assert {vm.name for vm in model.unlocated()} == {"web1", "web2"} and model.lost == {"web1"}
    seen = model.observe("02:00:00:00:01:01", ipaddress.IPv4Address("10.1.0.11"), Location(0x104, 5),
                         lambda loc: False)
    assert seen.bound and model.lost == set()
    model.unbind("web1", "its VM left its port")
    model.bind("web1", Location(0x101, 3))
    assert model.lost == set()


def test_a_drained_backend_takes_no_new_connections_until_restored():
    doc = copy.deepcopy(TWO_TENANTS)
    doc["tenants"]["blue"]["services"] = {
        "web": {"vip": "10.1.0.100", "port": 80, "drain_on_migration": True,
                "backends": [{"vm": "web1", "port": 80}, {"vm": "web2", "port": 80}]},
        "keep": {"vip": "10.1.0.101", "port": 80, "backends": [{"vm": "web1", "port": 80}]}}
    model, migs, _ = setup(doc)
    fab = leafspine()
    web, keep = model.services()[1], model.services()[0]
    assert (web.name, keep.name) == ("web", "keep")

    def backends(svc):
        group = group_for(model, svc, group_ids([svc])[(svc.tenant, svc.name)], Table.FORWARD, fab.graph())
        return len(set(group.buckets)) if group else 0

    assert backends(web) == 2
    mig = start(migs)
    assert mig.drained == ["blue/web"]
    assert backends(web) == 1 and backends(keep) == 1      # only the service that asks for it
    migs.plugged(mig.id, TARGET_PORT)
    migs.capture(mig.id, [], {})
    migs.arrived(mig.id)
    assert backends(web) == 1              # still drained until the switches confirmed the move
    migs.flipped(mig.id)
    migs.heard(mig.id, frozen_at=1000.0, thawed_at=1000.0)
    migs.complete(mig.id)
    assert backends(web) == 2


# -- the planner --------------------------------------------------------------

def _prepared():
    fab = leafspine()
    model, migs, _ = setup()
    before = plan(model, fab).flows
    mig = start(migs, "web1", "leaf4")      # leaf4 holds no blue VM yet
    migs.plugged(mig.id, TARGET_PORT)
    return fab, model, migs, mig, before


def test_preparation_preinstalls_the_vms_flows_at_the_target_and_keeps_paths_to_the_source():
    fab, model, _, _, before = _prepared()
    web1, web2 = model.vm("web1"), model.vm("web2")
    flows = plan(model, fab).flows
    changes = {dpid: reconcile(Tables.of(flows[dpid]), Tables.of(before[dpid])) for dpid in flows}
    # Nothing is removed and no path to a VM rewritten before the move: the
    # target and the switches on its paths gain flows, the tenant's flood
    # tree grows a branch.
    assert changes[0x104].entries(Verb.ADD) and not any(ch.entries(Verb.DELETE) for ch in changes.values())
    assert all(f.table == Table.FLOOD for ch in changes.values() for f in ch.entries(Verb.MODIFY))
    for dpid, old in before.items():
        paths = {f for f in old if f.cookie == vm_cookie(web1) and f.table == Table.FORWARD}
        assert paths <= flows[dpid]
    fake = FakeFabric.of(flows, fab.links)
    loc2 = model.locations["web2"]
    # The VM's frames from the target port are forwarded at once (port security is in)...
    out = fake.send(0x104, TARGET_PORT, {"eth_src": web1.mac, "eth_dst": web2.mac, "eth_type": 0x0800,
                                        "ipv4_src": str(web1.ip), "ipv4_dst": str(web2.ip)})
    assert [(d.dpid, d.port) for d in out] == [(loc2.dpid, loc2.port)]
    # ... its ARP is answered there ...
    [answer] = fake.send(0x104, TARGET_PORT, {
        "eth_src": web1.mac, "eth_dst": "ff:ff:ff:ff:ff:ff", "eth_type": 0x0806, "arp_op": 1,
        "arp_sha": web1.mac, "arp_spa": str(web1.ip), "arp_tha": "00:00:00:00:00:00", "arp_tpa": str(web2.ip)})
    assert answer.fields["arp_sha"] == web2.mac
    # ... while traffic to it still goes to the source, and no other MAC may use the target port.
    out = fake.send(loc2.dpid, loc2.port, {"eth_src": web2.mac, "eth_dst": web1.mac, "eth_type": 0x0800,
                                           "ipv4_src": str(web2.ip), "ipv4_dst": str(web1.ip)})
    assert [(d.dpid, d.port) for d in out] == [(0x101, 3)]
    assert fake.send(0x104, TARGET_PORT, {"eth_src": web2.mac, "eth_dst": web1.mac, "eth_type": 0x0800,
                                          "ipv4_src": str(web2.ip), "ipv4_dst": str(web1.ip)}) == []


def test_restoration_flips_paths_in_place_and_removes_the_source_flows():
    fab, model, migs, mig, _ = _prepared()
    web1, web2 = model.vm("web1"), model.vm("web2")
    prepared = plan(model, fab).flows
    migs.capture(mig.id, [], {})
    migs.arrived(mig.id)
    flows = plan(model, fab).flows
    changes = {dpid: reconcile(Tables.of(flows[dpid]), Tables.of(prepared[dpid])) for dpid in flows}
    ours = vm_cookie(web1)
    for dpid, ch in changes.items():
        # No flow is added anywhere: the target's were in before the move. Paths
        # to the VM (and the flood tree's local ports) are modified in place,
        # the source's port security goes.
        assert not ch.entries(Verb.ADD), (hex(dpid), ch.entries(Verb.ADD))
        assert all(f.cookie == ours and f.table == Table.FORWARD or f.table == Table.FLOOD
                   for f in ch.entries(Verb.MODIFY))
    # ... and so does its arrival flow (frames from other switches addressed to port 3).
    gone = changes[0x101].entries(Verb.DELETE)
    assert {f.table for f in gone} == {Table.INGRESS, Table.FORWARD}
    assert [f.match_dict["eth_dst"] for f in gone if f.table == Table.FORWARD] == ["0e:00:01:01:00:03"]
    assert all(f.match_dict["in_port"] == 3
               for f in changes[0x101].entries(Verb.DELETE) if "in_port" in f.match_dict)
    fake = FakeFabric.of(flows, fab.links)
    loc2 = model.locations["web2"]
    out = fake.send(loc2.dpid, loc2.port, {"eth_src": web2.mac, "eth_dst": web1.mac, "eth_type": 0x0800,
                                           "ipv4_src": str(web2.ip), "ipv4_dst": str(web1.ip)})
    assert [(d.dpid, d.port) for d in out] == [(0x104, TARGET_PORT)]
    assert fake.send(0x101, 3, {"eth_src": web1.mac, "eth_dst": web2.mac, "eth_type": 0x0800,
                                "ipv4_src": str(web1.ip), "ipv4_dst": str(web2.ip)})[0].port != loc2.port


def test_rollback_removes_exactly_what_preparation_added():
    fab, model, migs, mig, before = _prepared()
    migs.roll_back(mig.id, "test")
    flows = plan(model, fab).flows
    assert all(not reconcile(Tables.of(flows[dpid]), Tables.of(before[dpid])) for dpid in flows)


def test_the_config_example_lists_the_migration_keys():
    cfg = config.load("deploy/examples/full.yaml")
    assert cfg.capacity("leaf1") == cfg.hypervisors["leaf1"].max_vms
    assert Model(cfg).vm("web1") is not None


def test_a_record_is_described_for_people():
    from sdnvirt.migration import describe
    model, migs, clock = setup()
    mig = start(migs)
    assert describe(mig.as_dict()).startswith("migration 1: live web1 leaf1 -> leaf2: still in preparation")
    migs.roll_back(mig.id, "target switch leaf2 disconnected")
    assert describe(mig.as_dict()).startswith(
        "migration 1: live web1 leaf1 -> leaf2: rolled_back in preparation: target switch leaf2 disconnected")


def test_a_vm_removed_from_the_config_ends_its_migration():
    model, migs, _ = setup()
    mig = start(migs)
    migs.plugged(mig.id, TARGET_PORT)
    doc = copy.deepcopy(TWO_TENANTS)
    del doc["tenants"]["blue"]["vms"]["web1"]
    model.set_config(config.parse(doc))
    assert migs.vms_removed() == [mig]
    assert (mig.outcome, mig.reason) == (Outcome.FAILED, "the VM was removed from the config")
    assert not model.pending and not model.migrating and not migs.overdue()
