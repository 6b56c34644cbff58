"""The controller's side of migrations, driven by the events the app feeds it (no switch)."""

import copy

import pytest
from fabrics import TWO_TENANTS, leafspine, placed_model
from test_loop import Clock

from sdnvirt import config
from sdnvirt.cluster.claims import Placement
from sdnvirt.controller.core import DEBOUNCE, Controller
from sdnvirt.controller.migrations import ANNOUNCE_AT, ENDED_KEPT, SEEK_AT, Coordinator
from sdnvirt.events import Events, Kind
from sdnvirt.metrics import Metrics
from sdnvirt.migration import Refused
from sdnvirt.model import Location
from sdnvirt.store import StoreError


class FakeApp:
    """The coordinator's port to the controller (migrations.Network)."""

    def __init__(self):
        self.model = placed_model()
        self.fabric = leafspine()
        self.wanted = 0
        self.urgent = []        # the request numbers asked for at once
        self.sent = []
        self.timers = []
        self.event_hub = Events()
        self.covered = 0            # the last request a reconcile in the switches covered
        self.mastered = None        # in a cluster: the switches this instance masters (None: all)
        self.migrations = Coordinator(self)

    def connected(self):
        return {dpid: sw.name for dpid, sw in self.fabric.switches.items()}

    def request(self, urgent=False):
        self.wanted += 1
        if urgent:
            self.urgent.append(self.wanted)
        return self.wanted

    def installed_flows(self):
        return {}

    def backend_counters(self):
        return {}

    def holds(self, dpid, request):
        return (self.mastered is None or dpid in self.mastered) and self.covered >= request

    def send_frame(self, dpid, port, data):
        self.sent.append((dpid, port))

    def after(self, delay, fn):
        self.timers.append((delay, fn))

    def run_timers(self):
        """The time of every timer passes, in order."""
        timers, self.timers = sorted(self.timers, key=lambda t: t[0]), []
        for _, fn in timers:
            fn()
        return [delay for delay, _ in timers]


def reconcile(app):
    app.covered = app.wanted
    app.migrations.reconciled(app.wanted)


def prepared(app, vm="web1", target="leaf4", mode="live"):
    rec = app.migrations.request(vm, target, mode)
    app.migrations.event(rec["id"], "plugged", port=5)
    assert app.migrations.record(rec["id"])["phase"] == "preparation"    # not before the switches confirm
    reconcile(app)
    assert app.migrations.record(rec["id"])["phase"] == "data_transfer"
    return rec["id"]


def test_a_live_migration_from_request_to_finish():
    app = FakeApp()
    mid = prepared(app)
    co = app.migrations
    assert not app.urgent       # preparation's flows may wait for a burst of changes to gather
    co.event(mid, "frozen", frozen_at=100.0)
    # Frozen: nothing sent to the source reaches it any more, the paths flip to the target now.
    assert app.model.locations["web1"] == Location(0x104, 5) and app.urgent == [app.wanted]
    assert co.record(mid)["phase"] == "restoration"
    # The agent removes the VM's old interface: nothing to unbind there.
    assert not co.port_gone(Location(0x101, 3), deleted=True)
    co.port_up(Location(0x104, 5))
    assert app.model.locations["web1"] == Location(0x104, 5)
    reconcile(app)
    co.event(mid, "thawed", frozen_at=100.0, thawed_at=100.1)
    rec = co.record(mid)
    assert rec["outcome"] == "ok" and rec["downtime"] > 0
    steps = [(e.fields["step"], e.fields["phase"], e.fields["outcome"]) for e in app.event_hub.since().events]
    assert steps == [("accepted", "preparation", None), ("plugged", "preparation", None),
                     ("captured", "data_transfer", None), ("arrived", "restoration", None),
                     ("flipped", "restoration", None), ("finished", "finished", "ok")]
    # Five gratuitous ARPs to each of blue's other VMs (web2 on leaf2, web3 on leaf1),
    # at QEMU's self-announce times; the ended migration's placement is dropped after ENDED_KEPT.
    assert app.run_timers() == [*ANNOUNCE_AT, ENDED_KEPT]
    assert app.migrations.placements() == {}
    assert sorted(set(app.sent)) == [(0x101, 4), (0x102, 3)] and len(app.sent) == 10


def test_an_urgent_reconcile_does_not_wait_for_a_burst_to_gather():
    ctl = Controller(config.parse(TWO_TENANTS), Metrics(), Events(), lambda handler: None, clock=Clock())
    ctl.request()
    ctl.loop.run_due()
    assert ctl.dirty        # gathering for DEBOUNCE
    ctl.request(urgent=True)
    ctl.loop.run_due()
    assert not ctl.dirty
    ctl.loop.clock.now += DEBOUNCE
    ctl.loop.run_due()      # the gathering's timer finds nothing left to do
    assert not ctl.dirty and ctl.scheduled is None
    ctl.request()
    ctl.loop.run_due()
    assert ctl.dirty        # urgency is not left behind


def test_a_port_coming_up_at_the_target_flips_the_paths_if_the_agent_did_not_say_it_froze_the_vm():
    app = FakeApp()
    mid = prepared(app)
    app.migrations.port_up(Location(0x104, 5))
    assert app.model.locations["web1"] == Location(0x104, 5)
    assert app.migrations.record(mid)["phase"] == "restoration"


def test_a_failure_while_the_vm_is_frozen_flips_the_paths_back():
    app = FakeApp()
    mid = prepared(app)
    app.migrations.event(mid, "frozen", frozen_at=100.0)
    app.migrations.event(mid, "aborted", reason="no room")
    rec = app.migrations.record(mid)
    assert rec["outcome"] == "rolled_back" and "no room" in rec["reason"], rec
    assert app.model.locations["web1"] == Location(0x101, 3) and not app.model.pending


def frozen_and_moved(app):
    """A migration of web1 whose agent froze it and, as it does then, moved its
    interface: its source port is gone."""
    mid = prepared(app)
    app.migrations.event(mid, "frozen", frozen_at=100.0)
    app.fabric.remove_port(0x101, 3)
    app.migrations.port_gone(Location(0x101, 3), deleted=True)
    return mid


def test_a_failure_once_the_vm_left_its_source_port_lets_it_be_learnt_back_at_its_source():
    app = FakeApp()
    mid = frozen_and_moved(app)
    app.migrations.event(mid, "aborted", reason="no room")
    rec = app.migrations.record(mid)
    assert rec["outcome"] == "rolled_back" and rec["reason"] == "the agent gave up: no room", rec
    assert "web1" not in app.model.locations and not app.model.pending and not app.model.migrating


def test_an_agent_silent_once_the_vm_left_its_source_port_fails_the_migration():
    # Nobody will plug the VM back in at its source: the record must not say it went back.
    app = FakeApp()
    mid = frozen_and_moved(app)
    later = app.migrations.migs.mono() + 10
    app.migrations.migs.mono = lambda: later
    app.migrations.tick()
    rec = app.migrations.record(mid)
    assert rec["outcome"] == "failed" and rec["reason"].startswith("no word from the hypervisor agent"), rec
    assert "web1" not in app.model.locations and not app.model.migrating
    lost, ended = app.event_hub.since().events[-2:]
    assert lost.kind is Kind.VM_LOST and lost.fields == {"vm": "web1", "tenant": "blue", "migration": mid}
    assert ended.fields["step"] == "ended" and ended.fields["outcome"] == "failed"


def test_a_failure_once_the_vm_runs_at_the_target_is_recorded_and_leaves_it_there():
    app = FakeApp()
    mid = prepared(app)
    app.migrations.event(mid, "thawed", frozen_at=100.0, thawed_at=100.1)
    app.migrations.tick()
    app.migrations.migs.roll_back(mid, "test")
    rec = app.migrations.record(mid)
    assert rec["outcome"] == "failed" and "runs at its target" in rec["reason"]
    assert app.model.locations["web1"] == Location(0x104, 5)


def test_the_target_switch_going_away_rolls_back():
    app = FakeApp()
    mid = prepared(app)
    app.migrations.switch_gone(0x104)
    rec = app.migrations.record(mid)
    assert (rec["outcome"], rec["reason"]) == ("rolled_back", "target switch leaf4 disconnected")
    assert app.model.locations["web1"] == Location(0x101, 3) and not app.model.pending


def test_a_vm_leaving_its_port_before_it_was_frozen_rolls_back_and_is_unbound():
    app = FakeApp()
    mid = prepared(app)
    assert not app.migrations.port_gone(Location(0x101, 3), deleted=False)
    assert app.migrations.record(mid)["outcome"] == "rolled_back"


def test_the_pending_port_coming_down_does_not_unbind_the_vm():
    app = FakeApp()
    mid = prepared(app)
    assert app.migrations.port_gone(Location(0x104, 5), deleted=False)
    assert app.migrations.record(mid)["outcome"] is None
    assert app.migrations.port_gone(Location(0x104, 5), deleted=True)
    assert app.migrations.record(mid)["outcome"] == "rolled_back"


def test_refusals_and_unknown_events():
    app = FakeApp()
    with pytest.raises(Refused, match="no connected switch"):
        app.migrations.request("web1", "spine9", "live")
    mid = prepared(app)
    with pytest.raises(ValueError, match="unknown event"):
        app.migrations.event(mid, "teleported")
    with pytest.raises(KeyError):
        app.migrations.event(999, "heartbeat")


def test_finished_migrations_are_kept_in_the_store_across_restarts(tmp_path):
    from sdnvirt.store import SQLiteStore

    store = SQLiteStore(tmp_path / "sdnvirt.db")
    app = FakeApp()
    app.migrations = Coordinator(app, store)
    done = prepared(app)
    app.migrations.event(done, "thawed", frozen_at=100.0, thawed_at=100.1)
    failed = prepared(app, vm="web2", target="leaf3")
    app.migrations.event(failed, "aborted", reason="agent crashed")
    running = app.migrations.request("db1", "leaf3", "cold")["id"]
    before = {rec["id"]: rec for rec in app.migrations.records()}

    again = FakeApp()                     # the daemon restarted: same store, a new model
    again.migrations = Coordinator(again, SQLiteStore(tmp_path / "sdnvirt.db"))
    kept = {rec["id"]: rec for rec in again.migrations.records()}
    assert set(kept) == {done, failed, running}
    assert kept[done] == before[done] and kept[done]["outcome"] == "ok"
    assert kept[failed]["outcome"] == "rolled_back" and "agent crashed" in kept[failed]["reason"]
    assert kept[running]["outcome"] == "failed" and "restarted" in kept[running]["reason"]
    assert again.migrations.record(done) == before[done]
    assert again.migrations.request("web1", "leaf3", "live")["id"] == max(kept) + 1


def test_two_controllers_on_one_store_never_give_the_same_id(tmp_path):
    from sdnvirt.store import SQLiteStore

    apps = [FakeApp(), FakeApp()]
    for app in apps:
        app.migrations = Coordinator(app, SQLiteStore(tmp_path / "sdnvirt.db"))
    ids = [apps[0].migrations.request("web1", "leaf3", "live")["id"],
           apps[1].migrations.request("web2", "leaf3", "live")["id"],
           apps[0].migrations.request("db1", "leaf3", "cold")["id"]]
    assert ids == [1, 2, 3]


def test_in_a_cluster_a_restart_ends_only_the_instance_s_own_migrations_and_the_leader_those_of_a_lost_one(tmp_path):
    from sdnvirt.store import SQLiteStore

    def instance(name):
        app = FakeApp()
        app.migrations = Coordinator(app, SQLiteStore(tmp_path / "sdnvirt.db"), name)
        return app

    ctl1, ctl2 = instance("ctl1"), instance("ctl2")
    mine = ctl1.migrations.request("web1", "leaf3", "live")["id"]
    theirs = ctl2.migrations.request("web2", "leaf3", "live")["id"]
    assert ctl2.migrations.record(theirs)["controller"] == "ctl2"

    again = instance("ctl1")            # ctl1 restarted; ctl2 still runs its migration
    stored = {rec["id"]: rec for rec in again.migrations.records()}
    assert stored[mine]["outcome"] == "failed" and "restarted" in stored[mine]["reason"]
    assert stored[theirs]["outcome"] is None
    again.migrations.orphans({"ctl1", "ctl2"})
    assert again.migrations.record(theirs)["outcome"] is None

    again.migrations.orphans({"ctl1", "ctl3"})      # ctl2 is lost
    ended = again.migrations.record(theirs)
    assert ended["outcome"] == "failed" and "ctl2 was lost" in ended["reason"]
    assert {rec["id"]: rec["outcome"] for rec in instance("ctl3").migrations.records()} == {
        mine: "failed", theirs: "failed"}
    # ctl2's own view lists its live migration as it is, the store's as they are now.
    assert {r["id"]: r["outcome"] for r in ctl2.migrations.records(reread=True)} == {mine: "failed", theirs: None}


def told(app, name):
    """What ``app`` tells the cluster of its migrations, as another instance's view reads
    it: a key's revision changes when its placement does."""
    keys = app.__dict__.setdefault("keys", {})
    for vm, doc in app.migrations.placements().items():
        if vm not in keys or keys[vm].doc != doc:
            told.revision = getattr(told, "revision", 0) + 1
            keys[vm] = Placement(name, doc, told.revision)
    return dict(keys)


def test_another_instance_follows_a_migration_step_by_step_and_keeps_the_vm_where_its_coordinator_put_it():
    a, b = FakeApp(), FakeApp()
    assert not b.migrations.follow({})      # the first word: nothing migrates
    rec = a.migrations.request("web2", "leaf4", "live")    # web2 is a backend of no drained service here
    assert b.migrations.follow(told(a, "a"))
    assert "web2" in b.model.migrating and not b.model.pending
    with pytest.raises(Refused, match="coordinated by a"):
        b.migrations.request("web2", "leaf3", "live")
    a.migrations.event(rec["id"], "plugged", port=5)
    assert b.migrations.follow(told(a, "a"))
    assert b.model.pending == {"web2": Location(0x104, 5)}
    assert b.model.vm_at(Location(0x104, 5)).name == "web2"
    # The pending port going down, the source port going away: the coordinator decides, not b.
    assert b.migrations.port_gone(Location(0x104, 5), deleted=False)
    assert b.migrations.port_gone(Location(0x102, 3), deleted=True)
    reconcile(a)
    a.migrations.event(rec["id"], "frozen", frozen_at=100.0)
    assert b.migrations.follow(told(a, "a"))
    assert b.model.locations["web2"] == Location(0x104, 5) and not b.model.pending
    reconcile(a)
    a.migrations.event(rec["id"], "thawed", frozen_at=100.0, thawed_at=100.1)
    assert a.migrations.record(rec["id"])["outcome"] == "ok"
    assert b.migrations.follow(told(a, "a"))
    assert not b.model.migrating and b.model.locations["web2"] == Location(0x104, 5)
    assert not b.migrations.follow(told(a, "a"))        # the same word again: nothing new
    # A VM the coordinator's word placed is learnt elsewhere later, as any VM.
    b.model.bind("web2", Location(0x103, 9))
    assert not b.migrations.follow(told(a, "a")) and b.model.locations["web2"] == Location(0x103, 9)


def test_the_data_transfer_waits_for_the_master_of_the_targets_switch_to_say_it_holds_the_target():
    a, b = FakeApp(), FakeApp()
    a.mastered = {0x101, 0x102, 0x103}      # leaf4, the target's switch, is b's
    b.mastered = {0x104}
    said = []
    b.migrations.prepared_told = said.append
    mid = a.migrations.request("web2", "leaf4", "live")["id"]
    a.migrations.event(mid, "plugged", port=5)
    reconcile(a)
    assert a.migrations.record(mid)["phase"] == "preparation"      # in a's switches, not yet in leaf4
    b.migrations.follow(told(a, "a"))
    assert b.urgent == [b.wanted]
    b.covered = b.wanted - 1                # a round planned before b heard of the target: not in leaf4
    b.migrations.reconciled(b.covered)
    assert said == []
    reconcile(b)
    assert said == [{"web2": {"id": mid, "at": [0x104, 5]}}]
    a.migrations.prepared({"web2": Placement("b", {"id": mid, "at": [0x104, 4]}, 1)})     # not its target
    assert a.migrations.record(mid)["phase"] == "preparation"
    a.migrations.prepared({"web2": Placement("b", said[-1]["web2"], 2)})
    assert a.migrations.record(mid)["phase"] == "data_transfer"
    a.migrations.event(mid, "aborted", reason="no room")
    b.migrations.follow(told(a, "a"))
    reconcile(b)
    assert said[-1] == {}       # its migration ended: b says it no more


def test_a_coordinator_that_becomes_the_master_of_its_targets_switch_goes_on():
    """The coordinator waits because another instance masters the target's switch; then
    it takes that switch over (the old master's lease expired, so no one else will ever
    say 'prepared'): the round that writes the target there lets it go on."""
    a = FakeApp()
    a.mastered = {0x101, 0x102, 0x103}
    mid = a.migrations.request("web2", "leaf4", "live")["id"]
    a.migrations.event(mid, "plugged", port=5)
    reconcile(a)
    assert a.migrations.record(mid)["phase"] == "preparation"
    a.mastered.add(0x104)             # MASTER of leaf4 now: read, and a round writes the target there
    a.request()
    reconcile(a)
    assert a.migrations.record(mid)["phase"] == "data_transfer"


def test_a_vm_whose_coordinator_is_lost_while_it_migrates_is_looked_for_where_its_migration_said():
    a, b = FakeApp(), FakeApp()
    b.mastered = {0x102, 0x104}     # web2's source and target switches
    mid = a.migrations.request("web2", "leaf4", "live")["id"]
    a.migrations.event(mid, "plugged", port=5)
    b.migrations.follow(told(a, "a"))
    assert b.migrations.follow({})          # a is lost before the flip: its word went with its lease
    assert b.model.locations["web2"] == Location(0x102, 3) and not b.model.pending
    assert b.run_timers() == list(SEEK_AT)
    # An ARP probe for web2 out of the target port at each (it may have resumed there, silent);
    # none at its source, where it is placed.
    assert b.sent == [(0x104, 5)] * len(SEEK_AT)
    # Lost after the flip, the VM placed at its target: asked for at its source (the migration
    # may have been cancelled there); found there meanwhile by its own frames: asked no more.
    c = FakeApp()
    c.migrations.follow(told(a, "a"))
    reconcile(a)
    a.migrations.event(mid, "frozen", frozen_at=100.0)
    c.migrations.follow(told(a, "a"))
    assert c.model.locations["web2"] == Location(0x104, 5)
    c.migrations.follow({})
    [first, *_] = sorted(c.timers, key=lambda t: t[0])
    c.timers.remove(first)
    first[1]()
    assert c.sent == [(0x102, 3)]
    c.model.bind("web2", Location(0x102, 3))
    c.run_timers()
    assert c.sent == [(0x102, 3)]


def test_a_follower_drains_what_the_coordinator_drains_and_returns_a_rolled_back_vm_to_its_source():
    a, b = FakeApp(), FakeApp()
    for app in (a, b):
        app.model.set_config(config.parse(drained_doc()))
    rec = a.migrations.request("web2", "leaf4", "live")
    b.migrations.follow(told(a, "a"))
    assert b.model.draining == {"web2"}
    a.migrations.event(rec["id"], "plugged", port=5)
    reconcile(a)
    a.migrations.event(rec["id"], "frozen", frozen_at=100.0)
    b.migrations.follow(told(a, "a"))
    assert b.model.locations["web2"] == Location(0x104, 5)
    a.migrations.event(rec["id"], "aborted", reason="no room")
    assert b.migrations.follow(told(a, "a"))
    assert b.model.locations["web2"] == Location(0x102, 3) and not b.model.draining and not b.model.migrating


def test_a_lost_coordinator_s_vm_stays_where_it_last_placed_it_and_a_first_word_places_only_running_migrations():
    a, b = FakeApp(), FakeApp()
    rec = a.migrations.request("web2", "leaf4", "live")
    a.migrations.event(rec["id"], "plugged", port=5)
    reconcile(a)
    a.migrations.event(rec["id"], "frozen", frozen_at=100.0)
    b.migrations.follow(told(a, "a"))
    assert b.migrations.follow({})          # a is lost: its keys went with its lease
    assert not b.model.migrating and not b.model.pending and b.model.locations["web2"] == Location(0x104, 5)
    # A new instance's first word: an ended migration's placement is history, a running one's is not.
    c = FakeApp()
    other = a.migrations.request("db1", "leaf4", "live")
    a.migrations.event(other["id"], "aborted", reason="no room")
    said = told(a, "a")
    c.model.bind("db1", Location(0x103, 7))     # learnt there since
    c.migrations.follow(said)
    assert c.model.locations["db1"] == Location(0x103, 7)
    assert c.model.locations["web2"] == Location(0x104, 5) and "web2" in c.model.migrating


def drained_doc():
    doc = {"tenants": {**TWO_TENANTS["tenants"]}}
    doc["tenants"]["blue"] = {**doc["tenants"]["blue"], "services": {"web": {
        "vip": "10.1.0.100", "port": 80, "drain_on_migration": True, "backends": [{"vm": "web2", "port": 8080}]}}}
    return doc


def test_an_older_migrations_word_written_again_and_a_coordinators_word_rewritten_after_it_rejoined_move_nothing():
    a, b, c = FakeApp(), FakeApp(), FakeApp()
    c.migrations.follow({})
    first = a.migrations.request("web2", "leaf4", "live")
    a.migrations.event(first["id"], "aborted", reason="no room")
    old = told(a, "a")["web2"]
    b.migrations.request("db1", "leaf4", "live")        # ids come from a shared counter: b's next is 2
    second = b.migrations.request("web2", "leaf3", "live")
    c.migrations.follow(told(b, "b"))
    b.migrations.event(second["id"], "plugged", port=6)
    reconcile(b)
    b.migrations.event(second["id"], "frozen", frozen_at=100.0)
    c.migrations.follow(told(b, "b"))
    assert c.model.locations["web2"] == Location(0x103, 6)
    # b's lease expired and it joined again: it writes what it said once more, nothing new.
    said = told(b, "b")
    said["web2"] = Placement("b", said["web2"].doc, said["web2"].revision + 100)
    assert not c.migrations.follow(said)
    # b is gone (its key with it), and a writes its older word about web2 again: history.
    c.migrations.follow({"web2": Placement("a", old.doc, old.revision + 200)})
    assert c.model.locations["web2"] == Location(0x103, 6) and not c.model.migrating


def test_a_vm_migrating_elsewhere_that_this_instances_config_loses_is_followed_no_more():
    a, b = FakeApp(), FakeApp()
    rec = a.migrations.request("web2", "leaf4", "live")
    a.migrations.event(rec["id"], "plugged", port=5)
    b.migrations.follow(told(a, "a"))
    doc = placed_doc()
    del doc["tenants"]["blue"]["vms"]["web2"]
    b.model.set_config(config.parse(doc))
    b.migrations.config_changed()
    assert not b.model.migrating and b.model.vm_at(Location(0x104, 5)) is None
    b.model.set_config(config.parse(placed_doc()))      # back: followed again, its pending target with it
    b.migrations.config_changed()
    assert b.model.pending == {"web2": Location(0x104, 5)}


def test_a_migration_another_instance_claimed_first_is_refused_and_leaves_no_record():
    app = FakeApp()
    app.migrations.claim = lambda vm, placement: False
    with pytest.raises(Refused, match="coordinated by another instance"):
        app.migrations.request("web2", "leaf4", "live")
    assert app.migrations.records() == [] and not app.model.migrating

    def unreachable(vm, placement):
        raise StoreError("etcd unreachable")
    app.migrations.claim = unreachable
    with pytest.raises(Refused, match="store cannot take it: etcd unreachable"):
        app.migrations.request("web2", "leaf4", "live")
    app.migrations.claim = lambda vm, placement: placement["active"] and placement["at"] == [0x102, 3]
    assert app.migrations.request("web2", "leaf4", "live")["outcome"] is None


def test_a_lost_lease_rolls_back_the_instances_migrations_and_a_full_target_counts_arrivals_from_elsewhere():
    app = FakeApp()
    mid = prepared(app)
    app.migrations.event(mid, "frozen", frozen_at=100.0)
    app.migrations.lease_lost()
    rec = app.migrations.record(mid)
    assert rec["outcome"] == "rolled_back" and "lease expired" in rec["reason"]
    assert app.model.locations["web1"] == Location(0x101, 3)
    a, b = FakeApp(), FakeApp()
    for app in (a, b):
        app.model.set_config(config.parse({**placed_doc(), "hypervisors": {"leaf4": {"max_vms": 1}}}))
    rec = a.migrations.request("web2", "leaf4", "live")
    a.migrations.event(rec["id"], "plugged", port=5)
    b.migrations.follow(told(a, "a"))
    with pytest.raises(Refused, match="leaf4 is full"):
        b.migrations.request("web1", "leaf4", "live")


def placed_doc():
    return copy.deepcopy(TWO_TENANTS)
