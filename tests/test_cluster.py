"""Switch mastership and fencing: the pure decisions over a view, then one
instance's agent on a real etcd with a fake clock (no sleeping for leases)."""

import contextlib
import queue
import shutil
import threading
from types import SimpleNamespace

import pytest
from fabrics import TWO_TENANTS, placed_model
from os_ken.ofproto import ofproto_v1_3 as ofp

from sdnvirt import config
from sdnvirt.cluster import claims, member
from sdnvirt.cluster.claims import Claim, Placement, Verdict, View, health_writes, moves, owner, placement_writes
from sdnvirt.cluster.member import Member, State
from sdnvirt.controller.core import Controller
from sdnvirt.controller.discovery import Discovery
from sdnvirt.controller.roles import RECONNECT_GRACE, Roles
from sdnvirt.controller.session import Role, SwitchSession
from sdnvirt.emulation.etcdlab import EtcdLab
from sdnvirt.emulation.lab import wait_for
from sdnvirt.events import Events
from sdnvirt.fabric import leaf_spine
from sdnvirt.metrics import Metrics
from sdnvirt.store import ABSENT, Delete, EtcdStore, Event, StoreError

SWITCHES = range(1, 41)


def test_every_instance_computes_the_same_owner_and_a_join_moves_only_its_share():
    two = {"a": set(SWITCHES), "b": set(SWITCHES)}
    three = {**two, "c": set(SWITCHES)}
    before = {d: owner(d, two) for d in SWITCHES}
    after = {d: owner(d, three) for d in SWITCHES}
    assert {d: owner(d, dict(reversed(list(two.items())))) for d in SWITCHES} == before
    moved = {d for d in SWITCHES if before[d] != after[d]}
    assert moved and all(after[d] == "c" for d in moved)        # only to the newcomer
    assert 5 <= len(moved) <= 25                                # about a third of 40
    assert {after[d] for d in SWITCHES} == {"a", "b", "c"}
    # Leaving: only the leaver's switches move.
    gone = {d: owner(d, {"a": set(SWITCHES), "c": set(SWITCHES)}) for d in SWITCHES}
    assert all(gone[d] == after[d] for d in SWITCHES if after[d] != "b")


def test_only_instances_connected_to_a_switch_may_own_it():
    assert owner(7, {"a": {1}, "b": {7}}) == "b"
    assert owner(7, {"a": {1}}) is None


def test_moves_claim_what_is_free_and_mine_and_release_what_another_connected_instance_should_own():
    view = View(members={"a": frozenset(SWITCHES)})
    mine_alone = moves("b", view, [1, 2])
    assert mine_alone.release == [] and set(mine_alone.take) == {d for d in (1, 2) if owner(d, {"a": SWITCHES,
                                                                                                 "b": {1, 2}}) == "b"}
    # b holds every switch it reaches; a is connected to all of them: b gives a its share.
    view = View(members={"a": frozenset(SWITCHES), "b": frozenset(SWITCHES)},
                claims={d: Claim("b", 100 + d) for d in SWITCHES})
    result = moves("b", view, SWITCHES)
    assert result.take == []
    assert result.release == [(d, 100 + d) for d in SWITCHES if owner(d, view.members) == "a"]
    # A claim held by another is never taken, even if b should own it.
    view = View(members={"a": frozenset(SWITCHES), "b": frozenset(SWITCHES)},
                claims={d: Claim("a", 1) for d in SWITCHES})
    assert moves("b", view, SWITCHES).take == []


def test_the_view_follows_the_keys():
    view = View()
    view.apply(claims.member_key("a"), {"name": "a", "switches": ["000000000000000a"]}, 5)
    view.apply(claims.switch_key(10), {"owner": "a"}, 6)
    view.apply(claims.LEADER, {"name": "a"}, 7)
    assert view.members == {"a": frozenset({10})} and view.claims == {10: Claim("a", 6)} and view.leader == "a"
    view.apply(claims.switch_key(10), None, 8)
    view.apply(claims.member_key("a"), None, 8)
    assert view.claims == {} and view.members == {} and view.revision == 8
    view.apply(claims.health_key(("blue", "web", "web2:8080")), {"up": False, "by": "a"}, 9)
    assert view.health == {("blue", "web", "web2:8080"): Verdict(False, "a", 9)}
    view.apply(claims.health_key(("blue", "web", "web2:8080")), None, 10)
    assert view.health == {}


WEB2, WEB3, OLD = ("blue", "web", "web2:8080"), ("blue", "web", "web3:8080"), ("blue", "gone", "web2:8080")


def test_a_master_writes_its_verdicts_where_the_keys_say_otherwise_or_say_another_instances():
    view = View(health={WEB2: Verdict(True, "a", 5), WEB3: Verdict(False, "b", 6)})
    # web2 as found; web3's switch taken over from b: written as a's, though b said the same.
    assert health_writes("a", view, {WEB2: True, WEB3: False}, {WEB2, WEB3}).put == {WEB3: False}
    # A key deleted meanwhile, or one left down about a backend created again and found up here: written.
    assert health_writes("a", View(), {WEB2: True}, {WEB2}).put == {WEB2: True}
    assert health_writes("a", view, {WEB2: False}, {WEB2}).put == {WEB2: False}


def test_the_keys_of_backends_the_desired_state_lacks_are_deleted_by_their_writer_or_by_the_leader_once_it_is_gone():
    view = View(members={"a": frozenset(), "b": frozenset()}, leader="b",
                health={WEB2: Verdict(False, "a", 5), WEB3: Verdict(False, "b", 6), OLD: Verdict(False, "b", 7)})
    assert health_writes("a", view, {}, {WEB3}).delete == [(WEB2, 5)]               # its own only
    assert health_writes("b", view, {}, {WEB2, WEB3}).delete == [(OLD, 7)]
    # b is gone: the leader deletes what b wrote about backends that are no more, not the others.
    view.leader, view.members = "a", {"a": frozenset()}
    assert health_writes("a", view, {}, {WEB2, WEB3}).delete == [(OLD, 7)]
    assert health_writes("c", view, {}, {WEB2, WEB3}).delete == []                  # c does not lead


def placed(mid, active=True):
    return {"id": mid, "active": active, "pending": [0x104, 5] if active else None, "at": [0x101, 3],
            "drained": False}


def test_a_coordinator_writes_its_migrations_placements_over_older_ones_and_deletes_those_it_no_longer_names():
    view = View(placements={"web1": Placement("a", placed(3), 10), "web2": Placement("b", placed(4), 11),
                            "db1": Placement("a", placed(1, active=False), 12)})
    writes = placement_writes("a", view.placements, {"web1": placed(3), "web2": placed(2, active=False),
                                          "web3": placed(5)})
    # web1's key says so already; web2's is about a later migration, b's.
    assert writes.put == {"web3": (placed(5), ABSENT)} and writes.delete == [("db1", 12)]
    assert placement_writes("b", view.placements, {"web1": placed(6)}).put == {"web1": (placed(6), 10)}
    assert placement_writes("b", view.placements, {}).delete == [("web2", 11)]
    view.apply(claims.placement_key("web3"), {"by": "a", "placement": placed(5)}, 13)
    view.apply(claims.placement_key("web1"), None, 14)
    assert view.placements == {"web2": Placement("b", placed(4), 11), "db1": Placement("a", placed(1, False), 12),
                               "web3": Placement("a", placed(5), 13)}


@pytest.fixture(scope="module")
def etcd():
    if shutil.which("etcd") is None:
        pytest.skip("needs etcd (Debian package etcd-server; scripts/setup.sh installs it)")
    with EtcdLab(1) as lab:
        yield lab.endpoints


@pytest.fixture
def store(etcd):
    store = EtcdStore(etcd)
    store.commit([Delete(key) for key in store.list("").items])
    return store


class CutOff:
    """A store this instance cannot reach while ``cut``."""

    def __init__(self, store):
        self.store, self.cut = store, True

    def __getattr__(self, name):
        if self.cut:
            raise StoreError("etcd unreachable (cut off by the test)")
        return getattr(self.store, name)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_two_instances_share_the_switches_and_the_survivor_takes_a_revoked_ones_over(etcd, store):
    states = {}
    a = Member("a", etcd, 2.0, lambda s: states.__setitem__("a", s))
    b = Member("b", etcd, 2.0, lambda s: states.__setitem__("b", s))
    assert a.lldp_secret == b.lldp_secret
    for m in (a, b):
        m.set_switches(frozenset(SWITCHES))
        m.start()
    try:
        # Whoever started first claimed everything, then gave the other its share.
        shared = {d: owner(d, {"a": SWITCHES, "b": SWITCHES}) for d in SWITCHES}
        assert set(shared.values()) == {"a", "b"}
        assert wait_for(lambda: all(m in states and {d: c.owner for d, c in states[m].claims.items()} == shared
                                    for m in "ab"), 10)
        assert states["a"].leader in ("a", "b")
        assert states["a"].reached == states["b"].reached == frozenset(SWITCHES)     # what the other reaches
        b.stop()
        assert wait_for(lambda: all(c.owner == "a" for c in states["a"].claims.values())
                        and len(states["a"].claims) == len(SWITCHES) and states["a"].members == ["a"], 5)
        # generation ids only grow: each new claim is a later revision.
        assert all(states["a"].claims[d].revision > 0 for d in SWITCHES)
    finally:
        a.stop()


def test_a_switch_handed_over_goes_once_its_master_said_it_writes_to_it_no_more(etcd, store, monkeypatch):
    # Released before, the new master's first writes could meet the old one's last (IS_SLAVE errors).
    monkeypatch.setattr(member, "YIELD_WAIT", 60.0)
    states = {}
    a = Member("a", etcd, 2.0, lambda s: states.__setitem__("a", s))
    a.set_switches(frozenset(SWITCHES))
    a.start()
    b = Member("b", etcd, 2.0, lambda s: states.__setitem__("b", s))
    try:
        assert wait_for(lambda: "a" in states and len(states["a"].claims) == len(SWITCHES), 5)
        b.set_switches(frozenset(SWITCHES))
        b.start()
        theirs = {d for d in SWITCHES if owner(d, {"a": SWITCHES, "b": SWITCHES}) == "b"}
        assert wait_for(lambda: states["a"].yielding == theirs, 5)
        assert not wait_for(lambda: any(states["a"].claims[d].owner != "a" for d in theirs), 1.0)
        assert all(states["a"].mine(d) is None for d in theirs) and all(states["a"].mine(d) for d in
                                                                          set(SWITCHES) - theirs)
        half = sorted(theirs)[::2]
        for d in half:
            a.yielded(d, states["a"].claims[d].revision)
        assert wait_for(lambda: {d for d, c in states["b"].claims.items() if c.owner == "b"} == set(half), 5)
        for d in theirs - set(half):
            a.yielded(d, states["a"].claims[d].revision)
        assert wait_for(lambda: {d for d, c in states["b"].claims.items() if c.owner == "b"} == theirs
                        and states["a"].yielding == frozenset(), 5)
    finally:
        b.stop()
        a.stop()


@contextlib.contextmanager
def a_told_by_b(etcd):
    """Instances a and b started; yields a and what b is told, by b's name."""
    states = {}
    a = Member("a", etcd, 2.0)
    b = Member("b", etcd, 2.0, lambda s: states.__setitem__("b", s))
    for m in (a, b):
        m.start()
    try:
        yield a, states
    finally:
        a.stop()
        b.stop()


def test_a_backend_found_down_by_one_instance_is_down_in_the_others_view_until_it_is_deleted(etcd, store):
    with a_told_by_b(etcd) as (a, states):
        a.set_health({WEB2: False}, {WEB2})
        assert wait_for(lambda: "b" in states and states["b"].health.get(WEB2) is False, 5)
        a.set_health({WEB2: True}, {WEB2})
        assert wait_for(lambda: states["b"].health.get(WEB2) is True, 5)
        a.set_health({}, set())                 # its service deleted: a deletes the key it wrote
        assert wait_for(lambda: WEB2 not in states["b"].health, 5)
        assert store.get(claims.health_key(WEB2)) is None


def test_the_placements_of_one_instances_migrations_reach_the_others_and_go_with_its_lease(etcd, store):
    with a_told_by_b(etcd) as (a, states):
        a.set_placements({"web1": placed(7)})
        assert wait_for(lambda: "b" in states and "web1" in states["b"].placements, 5)
        assert states["b"].placements["web1"].by == "a" and states["b"].placements["web1"].doc == placed(7)
        a.set_placements({"web1": placed(7, active=False)})
        assert wait_for(lambda: not states["b"].placements["web1"].doc["active"], 5)
        a.set_prepared({"web2": {"id": 8, "at": [4, 5]}})      # as the master of another migration's target
        assert wait_for(lambda: "web2" in states["b"].prepared, 5)
        assert states["b"].prepared["web2"].by == "a" and states["b"].prepared["web2"].doc == {"id": 8, "at": [4, 5]}
        a.stop()        # its lease revoked: what it said goes with it
        assert wait_for(lambda: "web1" not in states["b"].placements and "web2" not in states["b"].prepared, 5)


def test_keys_not_as_sdnvirt_writes_them_are_left_out_and_the_others_followed(etcd, store):
    store.put(claims.placement_key("odd"), {"by": "x", "placement": "garbage"})
    store.put(claims.prepared_key("odd"), {"by": "x", "prepared": {"id": "nine"}})
    store.put(claims.switch_key(0x999), {"not-an-owner": 1})
    with a_told_by_b(etcd) as (a, states):
        store.put(claims.health_key(WEB2), ["not", "a", "verdict"])
        a.set_placements({"web1": placed(7)})
        assert wait_for(lambda: "b" in states and "web1" in states["b"].placements, 5)
        assert "odd" not in states["b"].placements and "odd" not in states["b"].prepared
        assert 0x999 not in states["b"].claims
        assert WEB2 not in states["b"].health


class Scripted:
    """Watches whose batches the test hands out; each watch is (the revision it starts after, its queue)."""

    def __init__(self):
        self.started: queue.Queue[tuple[int, queue.Queue]] = queue.Queue()

    def watch(self, prefix, after):
        batches: queue.Queue = queue.Queue()
        self.started.put((after, batches))
        return ScriptedWatch(batches)


class ScriptedWatch:
    def __init__(self, batches):
        self.batches, self.cancelled = batches, False

    def __iter__(self):
        while not self.cancelled:
            batch = self.batches.get()
            if batch is None:
                return
            yield batch

    def cancel(self):
        self.cancelled = True
        self.batches.put(None)


def test_a_watch_begun_before_a_fresh_listing_is_left_for_one_from_the_listing(etcd, store):
    # A watch may have applied a release newer than a listing that then replaced the view: without a
    # watch from the listing on, that release would be lost, and its switch left without a master.
    member = Member("a", etcd, 2.0)
    member._join()
    scripted = Scripted()
    member.store.watch = scripted.watch
    threading.Thread(target=member._follow, daemon=True).start()
    try:
        after, first = scripted.started.get(timeout=5)
        assert after == member.view.revision
        first.put([Event(claims.switch_key(7), {"owner": "b"}, after + 1000)])
        assert wait_for(lambda: 7 in member.view.claims, 5)
        member._reread()                # older than the watch's event: switch 7 is not in it
        assert 7 not in member.view.claims
        first.put([Event(claims.switch_key(8), {"owner": "b"}, after + 1001)])
        again, second = scripted.started.get(timeout=5)
        assert again == member.view.revision and 8 not in member.view.claims
        second.put([Event(claims.switch_key(8), {"owner": "b"}, after + 1001)])
        assert wait_for(lambda: 8 in member.view.claims, 5)
    finally:
        member._stop.set()
        if member._watch is not None:
            member._watch.cancel()
        member.stop()


def test_of_two_instances_claiming_one_vms_migration_only_one_wins(etcd, store):
    with a_told_by_b(etcd) as (a, states):
        b = Member("b2", etcd, 2.0)
        b._join()
        # b has not seen a's claim yet when it makes its own: its compare-and-set fails.
        assert a.claim_placement("web1", placed(8))
        assert not b.claim_placement("web1", placed(9))
        assert wait_for(lambda: "b" in states and "web1" in states["b"].placements, 5)
        b._reread()
        assert not b.claim_placement("web1", placed(9))         # seen: a's runs
        a.set_placements({"web1": placed(8, active=False)})
        assert wait_for(lambda: not states["b"].placements["web1"].doc["active"], 5)
        b._reread()
        assert b.claim_placement("web1", placed(10))            # a's ended: b's may start
        # b's own step wrote the same before its claim did (b's view has not seen it yet): b's still.
        store.put_leased(claims.placement_key("web2"), {"by": "b2", "placement": placed(11)}, b.lease)
        assert b.claim_placement("web2", placed(11)) and not b.claim_placement("web2", placed(12))
        b.stop()


def test_the_leader_deletes_the_keys_a_lost_instance_wrote_about_backends_that_are_no_more(etcd, store):
    for key in (WEB2, OLD):
        store.put(claims.health_key(key), {"up": False, "by": "lost"})
    member = Member("a", etcd, 2.0, clock=Clock())
    member._join()
    member.step()
    member._reread()
    assert member.view.leader == "a" and set(member.view.health) == {WEB2, OLD}    # not told the backends yet
    member.set_health({}, {WEB2})
    member.step()
    member._reread()
    assert set(member.view.health) == {WEB2}        # a backend that still is: its key stays for its next master
    member.stop()


class Told:
    """A member that keeps what the controller tells it of the backends' health."""

    def __init__(self):
        self.verdicts, self.backends = {}, set()

    def set_health(self, verdicts, backends):
        self.verdicts, self.backends = dict(verdicts), set(backends)


def web_doc():
    doc = {"tenants": {**TWO_TENANTS["tenants"]}}
    doc["tenants"]["blue"] = {**doc["tenants"]["blue"], "services": {"web": {
        "vip": "10.1.0.100", "port": 80, "backends": [{"vm": "web2", "port": 8080}, {"vm": "web3", "port": 8080}]}}}
    return doc


def roles_of(model, masters=(), health=None):
    """An instance's roles over ``model``, MASTER of the switches of the VMs ``masters``, told ``health``."""
    mastered = {model.locations[vm].dpid for vm in masters}
    ctl = SimpleNamespace(model=model, event_hub=Events(), sessions={
        loc.dpid: SimpleNamespace(role=Role.MASTER if loc.dpid in mastered else Role.SLAVE)
        for loc in model.locations.values()})
    roles = Roles(ctl, None)
    roles.member = told = Told()
    roles.state = State("a", {}, ["a", "b"], "b", False, health=health or {})
    return roles, told


def test_shared_health_applies_to_the_backends_another_instance_probes_and_this_ones_verdicts_go_to_the_cluster():
    model = placed_model(web_doc())
    roles, told = roles_of(model, masters=["web3"], health={WEB2: False, WEB3: False})
    assert roles.exchange_health()
    # web2's switch is another's: its word holds; web3's is mine: my probes decide, and the others are told.
    assert not model.health[WEB2].up and model.health[WEB3].up
    assert told.verdicts == {WEB3: True} and told.backends == {WEB2, WEB3}
    assert [(e.kind, e.fields["cause"]) for e in roles.ctl.event_hub.since(0).events] == [("backend_down", "shared")]
    assert not roles.exchange_health()      # nothing new


def test_a_verdict_applies_to_no_backend_the_desired_state_lacks_and_to_one_it_gains_at_its_next_plan():
    model = placed_model(TWO_TENANTS)       # the service is gone here; its key is not yet
    roles, told = roles_of(model, health={WEB2: False})
    assert not roles.exchange_health() and told.backends == set() and WEB2 not in model.health
    model.set_config(config.parse(web_doc()))       # a config change: a plan follows, which exchanges first
    assert roles.exchange_health() and not model.health[WEB2].up


def test_the_master_of_a_backend_created_again_writes_its_own_verdict_over_the_one_left_of_the_old():
    model = placed_model(web_doc())         # deleted and created again: web2 starts up, as any new backend
    roles, told = roles_of(model, masters=["web2"], health={WEB2: False})
    roles.exchange_health()
    assert model.health[WEB2].up and told.verdicts[WEB2]
    left = View(members={"a": frozenset()}, leader="a", health={WEB2: Verdict(False, "a", 5)})
    assert health_writes("a", left, told.verdicts, told.backends).put == {WEB2: True}


def test_a_config_change_reaches_the_clusters_health_keys_before_the_next_plan():
    told = Told()
    member = SimpleNamespace(lldp_secret=b"k" * 16, changed=None, set_health=told.set_health,
                             set_placements=lambda placements: None, claim_placement=lambda vm, placement: True,
                             set_prepared=lambda prepared: None)
    ctl = Controller(config.parse(TWO_TENANTS), Metrics(), Events(), lambda handler: None, clock=Clock())
    Roles(ctl, member)
    ctl.reload(config.parse(web_doc()))
    ctl.reconcile(ctl.clock())
    assert told.backends == {WEB2, WEB3} and told.verdicts == {}      # it masters no switch


def test_a_joining_instance_plans_nothing_until_it_reaches_the_switches_the_others_reach_or_its_grace_ends():
    clock = Clock()
    ctl = SimpleNamespace(clock=clock, started=clock(), sessions={1: None})
    roles = Roles(ctl, None)
    assert roles.incomplete()       # not told the cluster's state yet
    roles.state = State("a", {}, ["a", "b"], "b", False, reached=frozenset({1, 2}))
    assert roles.incomplete()
    ctl.sessions[2] = None
    assert not roles.incomplete()
    del ctl.sessions[2]
    clock.now += RECONNECT_GRACE    # a switch the others reach and this instance cannot: it plans anyway
    assert not roles.incomplete()


def test_an_instance_without_renewals_fences_itself_before_its_lease_can_expire(etcd, store):
    clock = Clock()
    member = Member("a", etcd, 2.0, clock=clock)
    member.set_switches(frozenset({1}))
    member._join()
    member.step()
    member.step()
    assert not member.fenced
    # etcd unreachable from here on: renewals fail.
    cut = CutOff(member.store)
    member.store = cut
    clock.now += 1.0
    with pytest.raises(StoreError):
        member.step()
    assert not member.fenced                       # 1 s of 2: still safe
    clock.now += 0.6                               # ttl - margin = 1.5 s since the last renewal
    with pytest.raises(StoreError):
        member.step()
    assert member.fenced
    # etcd back before the lease expired: renewed, writing again.
    cut.cut = False
    clock.now += 0.1
    member.step()
    assert not member.fenced
    member.stop()


def one_link_heard():
    """A leaf and a spine, each end's LLDP heard at the other at 0 s."""
    fab = leaf_spine(spines=1, leaves=1)
    disc = Discovery()
    for (_, _, frame), dst in zip(disc.frames(fab, 0x101, [1]) + disc.frames(fab, 0x201, [1]),
                                  [(0x201, 1), (0x101, 1)], strict=True):
        disc.heard(fab, *dst, frame, max_age=1.0, now=0.0)
    return fab, disc


def test_links_out_of_a_switch_taken_over_age_from_the_takeover_not_from_its_old_masters_last_lldp():
    fab, disc = one_link_heard()
    # leaf1's master dies at 0.5 s; another instance claims leaf1 at 3.0 s.
    disc.new_master(0x101, 3.0)
    assert disc.expire(fab, 4.0, timeout=3.5) == [(0x201, 1)]       # spine1 still had a master: its LLDP stopped
    assert (0x101, 1) in fab.links
    assert disc.expire(fab, 6.6, timeout=3.5) == [(0x101, 1)]       # nothing from leaf1 since its takeover


def test_links_do_not_age_while_the_instance_is_fenced_and_age_from_its_return():
    fab, disc = one_link_heard()
    disc.held = True        # etcd lost its quorum at 0.5 s: nobody sends LLDP
    assert disc.expire(fab, 10.0, timeout=3.5) == []
    disc.resume(10.0)
    assert disc.expire(fab, 13.0, timeout=3.5) == [] and len(fab.links) == 2
    assert sorted(disc.expire(fab, 13.6, timeout=3.5)) == [(0x101, 1), (0x201, 1)]    # none heard since


def test_the_leader_ends_the_migrations_of_a_lost_instance_when_the_members_or_the_leader_change():
    swept = []
    ctl = SimpleNamespace(clock=Clock(), event_hub=Events(), sessions={}, model=placed_model(),
                          discovery=SimpleNamespace(held=False, resume=lambda now: None),
                          migrations=SimpleNamespace(orphans=swept.append, follow=lambda said: False,
                                                     prepared=lambda said: None))
    roles = Roles(ctl, None)
    roles.apply(State("a", {}, ["a", "b", "c"], "b", False))
    roles.apply(State("a", {}, ["a", "c"], "b", False))
    assert swept == []                      # b leads: b's duty
    roles.apply(State("a", {}, ["a", "c"], "a", False))
    roles.apply(State("a", {}, ["a", "c"], "a", False))
    roles.apply(State("a", {}, ["a"], "a", True))       # fenced: it writes nothing, records neither
    roles.apply(State("a", {}, ["a"], "a", False))
    assert swept == [{"a", "c"}, {"a"}]


def test_a_switch_handed_over_is_written_to_no_more_and_its_answer_to_slave_lets_its_claim_go():
    sent, yielded = [], []
    dp = SimpleNamespace(id=7)
    session = SimpleNamespace(dpid=7, dp=dp, role=Role.MASTER)
    ctl = SimpleNamespace(event_hub=Events(), sessions={7: session}, session=lambda d: session,
                          send=lambda s, msg: sent.append(msg), migrations=SimpleNamespace(roles_changed=lambda: None))
    roles = Roles(ctl, None)
    roles.member = SimpleNamespace(yielded=lambda dpid, revision: yielded.append((dpid, revision)))
    roles.asked[7] = (Role.MASTER, 41)
    roles.state = State("a", {7: Claim("a", 41)}, ["a", "b"], "a", False, yielding=frozenset({7}))
    roles._update(session)
    assert session.role is Role.SLAVE and not roles.may_write(dp, SimpleNamespace(cls_msg_type=ofp.OFPT_FLOW_MOD))
    assert [(m.role, m.generation_id) for m in sent] == [(ofp.OFPCR_ROLE_SLAVE, 41)]
    assert yielded == []        # not before the switch answered
    roles.role_reply(dp, ofp.OFPCR_ROLE_SLAVE, 41)
    assert yielded == [(7, 41)]


def test_target_is_not_said_prepared_by_a_round_that_never_wrote_its_switch():
    """The master of the target's switch says 'prepared' after a round that skipped that
    switch (just became MASTER, its tables not read back yet): the coordinator then
    starts the data transfer with nothing at the target."""
    told = []
    member = SimpleNamespace(lldp_secret=b"k" * 16, changed=None, set_health=lambda v, b: None,
                             set_placements=lambda p: None, claim_placement=lambda vm, p: True,
                             set_prepared=told.append)
    ctl = Controller(config.parse(TWO_TENANTS), Metrics(), Events(), lambda handler: None, clock=Clock())
    Roles(ctl, member)
    # leaf4 (0x104): MASTER answered a moment ago; its flows, groups and meters not read yet.
    ctl.sessions[0x104] = SwitchSession(SimpleNamespace(id=0x104), 0x104, role=Role.MASTER)
    doc = {"id": 7, "active": True, "pending": [0x104, 5], "at": [0x102, 3], "drained": False}
    assert ctl.migrations.follow({"web2": Placement("a", doc, 1)})
    ctl.reconcile(ctl.clock())          # leaf4 not ready: the round writes nothing to it
    assert ctl.sessions[0x104].installed_flows is None
    assert told == [], f"said prepared though leaf4 holds nothing: {told}"


def test_two_instances_that_both_name_a_prepared_target_do_not_overwrite_each_other_forever():
    """The old master of the target's switch (b, handed it over, not reconciled since)
    and the new one (c) both name the same prepared target: each step writes over the
    other's key (a write wakes the other's step through its watch)."""
    doc = {"id": 7, "at": [0x104, 5]}
    keys = {"web2": Placement("b", doc, 10)}
    writes = 0
    for writer in ["c", "b"] * 3:
        put = claims.placement_writes(writer, keys, {"web2": doc}).put
        if put:
            writes += 1
            keys = {"web2": Placement(writer, doc, 10 + writes)}
    assert writes <= 1, f"{writes} writes of one unchanged word"
