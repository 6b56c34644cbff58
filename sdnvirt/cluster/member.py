"""One instance's membership of the cluster: its lease, its record, its claims,
the leader key, and the fencing that stops it writing before its lease can
be taken by another.

Two threads: ``_follow`` watches the cluster's keys into the view; ``_run``
keeps the lease alive and acts on the view (``claims.moves``). Whoever
embeds it (the controller) is told the claims and whether this instance is
fenced, through ``changed``, from the agent's thread, and tells it which
switches it is connected to with ``set_switches``, and which backends there
are and what its probes found of those on the switches it masters with
``set_health`` (written as ``claims.health_writes`` says, at each step), and
where the VMs of the migrations it coordinates are with ``set_placements``
(``claims.placement_writes``), and which migrating VMs' pending targets it
has prepared on the switches it masters with ``set_prepared``.

A switch handed over to its owner (one that joined, ``claims.moves``) is
first given up here: ``State.yielding`` names it, the controller stops
writing to it and says so with ``yielded`` once the switch confirmed (its
answer to a SLAVE role request comes after every earlier message), and only
then is the claim deleted, so that the new master's first writes never meet
the old master's last. Without that word within ``YIELD_WAIT`` the claim
goes anyway (the switch still fences the old master by its generation_id).

Fencing: the lease lives ``ttl`` seconds after the last renewal etcd
received, which is after the renewal was sent. An instance that has had no
renewal answered for ``ttl - margin`` seconds since it sent the last good
one stops writing at once (``fenced``), so it is silent before any other
instance can claim its switches; it writes again once a renewal is answered,
or, with a new lease if the old one expired, once it claims switches anew.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

from ..store import ABSENT, Compacted, Conflict, EtcdStore, LeaseExpired, Observe, StoreError, Watch
from . import claims
from .claims import Claim, HealthKey, Placement, View

LOG = logging.getLogger("sdnvirt.cluster")

YIELD_WAIT = 1.0    # seconds a switch handed over waits for the controller to have stopped writing to it


@dataclass(frozen=True)
class State:
    """What the embedding controller acts on."""

    me: str
    claims: dict[int, Claim]
    members: list[str]
    leader: str | None
    fenced: bool
    reached: frozenset[int] = frozenset()     # the switches the other instances are connected to
    health: Mapping[HealthKey, bool] = field(default_factory=dict)     # backends, as their prober says
    placements: Mapping[str, Placement] = field(default_factory=dict)  # migrating VMs, as their coordinator says
    prepared: Mapping[str, Placement] = field(default_factory=dict)    # their targets, as the targets' masters say
    lease: int = 0              # this instance's: another one means the last expired
    yielding: frozenset[int] = frozenset()    # its switches being handed over: written to no more

    def mine(self, dpid: int) -> Claim | None:
        claim = self.claims.get(dpid)
        return claim if claim is not None and claim.owner == self.me and not self.fenced \
            and dpid not in self.yielding else None


class Member:
    def __init__(self, name: str, endpoints: list[str], ttl: float,
                 changed: Callable[[State], None] = lambda state: None,
                 clock: Callable[[], float] = time.monotonic, observe: Observe | None = None):
        """Raises StoreError if etcd cannot be reached."""
        self.name, self.ttl = name, ttl
        # Cluster requests must finish well inside a lease: a slow one is an
        # error, and the next member is tried.
        self.store = EtcdStore(endpoints, timeout=ttl / 4, idle=max(1.0, ttl), observe=observe)
        self.changed = changed
        self.clock = clock
        self.margin = ttl / 4
        self.view = View()
        self._lock = threading.Condition()
        self._switches: frozenset[int] = frozenset()
        self._stop = threading.Event()
        self._watch: Watch | None = None
        self._listed = 0    # how many times the view was listed afresh: a watch older than the last stops
        self._registered: frozenset[int] | None = None
        self._verdicts: dict[HealthKey, bool] = {}      # the backends this instance probes
        self._backends: frozenset[HealthKey] | None = None      # every backend there is; None: not told yet
        self._placements: dict[str, Mapping[str, Any]] = {}     # of the migrations this instance coordinates
        self._prepared: dict[str, Mapping[str, Any]] = {}       # the others' migrations' targets prepared here
        self._yielding: dict[tuple[int, int], float] = {}   # (switch, claim revision) being handed over: since when
        self._yielded: set[tuple[int, int]] = set()         # of those, the ones the controller writes to no more
        self.lease = 0
        self.renewed = float("-inf")    # when the last renewal that etcd answered was sent
        self.fenced = True
        self.lldp_secret = self._shared_secret()
        self._last: State | None = None

    def _shared_secret(self) -> bytes:
        """The LLDP signing key every instance uses: one instance's LLDP is heard by all."""
        try:
            self.store.put(claims.LLDP_SECRET, os.urandom(16).hex(), expect=ABSENT)
        except Conflict:
            pass    # another instance made it first: use that one
        item = self.store.get(claims.LLDP_SECRET)
        assert item is not None, "written or found just now"
        return bytes.fromhex(item.value)

    # -- the controller's side ---------------------------------------------------
    def start(self) -> None:
        self._join()
        threading.Thread(target=self._follow, name="cluster-watch", daemon=True).start()
        threading.Thread(target=self._run, name="cluster", daemon=True).start()

    def set_switches(self, dpids: frozenset[int]) -> None:
        with self._lock:
            self._switches = dpids
            self._lock.notify_all()

    def set_health(self, verdicts: Mapping[HealthKey, bool], backends: AbstractSet[HealthKey]) -> None:
        """``verdicts``: what this instance's probes found of the backends it probes
        (those on the switches it masters), for the others; ``backends``: every
        backend of the desired state, whose keys stay (the agent's thread writes
        them, woken now if anything changed)."""
        with self._lock:
            if (verdicts, backends) != (self._verdicts, self._backends):
                self._verdicts, self._backends = dict(verdicts), frozenset(backends)
                self._lock.notify_all()

    def set_placements(self, placements: Mapping[str, Mapping[str, Any]]) -> None:
        """By VM, the latest migration this instance coordinates, as
        ``Migration.placement`` (the agent's thread writes them, woken now if
        anything changed: a migration's paths flip on every instance)."""
        with self._lock:
            if placements != self._placements:
                self._placements = dict(placements)
                self._lock.notify_all()

    def set_prepared(self, prepared: Mapping[str, Mapping[str, Any]]) -> None:
        """By VM, the migration whose pending target this instance holds the VM's
        flows at, on a switch it masters: {"id", "at"} (written at once: the
        migration's coordinator waits for it)."""
        with self._lock:
            if prepared != self._prepared:
                self._prepared = dict(prepared)
                self._lock.notify_all()

    def yielded(self, dpid: int, revision: int) -> None:
        """The controller writes to switch ``dpid`` no more, and the switch has
        confirmed it, since its claim at ``revision`` was yielding."""
        with self._lock:
            if (dpid, revision) in self._yielding:
                self._yielded.add((dpid, revision))
                self._lock.notify_all()

    def claim_placement(self, vm: str, placement: Mapping[str, Any]) -> bool:
        """Make ``placement`` the VM's at once (the caller waits for etcd): False if
        another instance's migration of the VM runs, or its key changed since this
        instance last saw it (a compare-and-set, so two instances never both win)."""
        with self._lock:
            said = self.view.placements.get(vm)
            if said is not None and said.by != self.name and said.doc["active"]:
                return False
            # Named before it is written: a step meanwhile must not take the new key for a stale one.
            before = self._placements.get(vm)
            self._placements[vm] = dict(placement)
        value = self._placement_value(placement)
        try:
            self.store.put_leased(claims.placement_key(vm), value, self.lease,
                                  expect=ABSENT if said is None else said.revision)
            return True
        except Conflict:
            # This instance's step may have written it first, on the same grounds.
            item = self.store.get(claims.placement_key(vm))
            if item is not None and item.value == value:
                return True
            self._unname(vm, before)
            return False
        except StoreError:
            self._unname(vm, before)
            raise

    def _unname(self, vm: str, before: Mapping[str, Any] | None) -> None:
        with self._lock:
            if before is None:
                self._placements.pop(vm, None)
            else:
                self._placements[vm] = before

    def stop(self) -> None:
        """Leave at once: the lease revoked, its record, claims and leadership go with it."""
        self._stop.set()
        with self._lock:
            self._lock.notify_all()
        if self._watch is not None:
            self._watch.cancel()
        try:
            self.store.revoke(self.lease)
        except StoreError as err:
            LOG.warning("cannot revoke the cluster lease (its switches move when it expires): %s", err)

    # -- the agent -----------------------------------------------------------------
    def _join(self) -> None:
        self.lease = self.store.grant(self.ttl)
        self.renewed = self.clock()
        self._register(self._switches)
        self._reread()
        self.fenced = False
        LOG.info("cluster member %s joined (lease %x, %.0f s)", self.name, self.lease, self.ttl)

    def _reread(self) -> None:
        listing = self.store.list(claims.PREFIX)
        with self._lock:
            self.view = View()
            for key, item in listing.items.items():
                self._apply(key, item.value, item.revision)
            self.view.revision = listing.revision
            self._listed += 1
            self._lock.notify_all()

    def _register(self, switches: frozenset[int]) -> None:
        self.store.put_leased(claims.member_key(self.name),
                              {"name": self.name, "switches": [f"{d:016x}" for d in sorted(switches)]}, self.lease)
        self._registered = switches

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except StoreError as err:
                LOG.warning("cluster: %s", err)
            except Exception:
                # Renewing and fencing must go on whatever one step met.
                LOG.exception("cluster: a step failed")
            with self._lock:
                self._lock.wait(self.ttl / 8)

    def step(self) -> None:
        """Renew the lease when due, fence if it may be lost, act on the view."""
        now = self.clock()
        # Renewed at every step (an eighth of the lease): the more recent the
        # last renewal, the longer an etcd leader election may take before
        # this instance fences itself.
        if now - self.renewed >= self.ttl / 8:
            try:
                self.store.keepalive(self.lease)
                self.renewed = now
            except LeaseExpired:
                LOG.error("cluster lease expired: this instance's switches have moved; joining again")
                self._fence(True)
                self._join()
            except StoreError:
                self._fence(self.clock() - self.renewed >= self.ttl - self.margin)
                self._tell()
                raise
        self._fence(self.clock() - self.renewed >= self.ttl - self.margin)
        if self.fenced:
            self._tell()
            return
        with self._lock:
            switches, view = self._switches, self.view
            moves = claims.moves(self.name, view, switches)
            # Until the controller has said which backends there are, no key is anyone's to delete.
            health = None if self._backends is None else claims.health_writes(self.name, view, self._verdicts,
                                                                              self._backends)
            placements = claims.placement_writes(self.name, view.placements, self._placements)
            prepared = claims.placement_writes(self.name, view.prepared, self._prepared)
        # First: the others wait for these to flip their paths, or to let the data transfer start.
        self._write_placements(placements, claims.placement_key, "placement")
        self._write_placements(prepared, claims.prepared_key, "prepared")
        if switches != self._registered:
            self._register(switches)
        if health is not None:
            self._write_health(health)
        for dpid in moves.take:
            try:
                revision = self.store.put_leased(claims.switch_key(dpid), {"owner": self.name}, self.lease,
                                                 expect=ABSENT)
                LOG.info("cluster: claimed switch %016x (revision %d)", dpid, revision)
            except Conflict:
                pass    # someone else's now: the watch says whose
        for dpid, revision in self._handed_over(moves.release, switches, now):
            try:
                self.store.delete(claims.switch_key(dpid), expect=revision)
                LOG.info("cluster: released switch %016x to its owner", dpid)
            except Conflict:
                pass
        if view.leader is None:
            try:
                self.store.put_leased(claims.LEADER, {"name": self.name}, self.lease, expect=ABSENT)
            except Conflict:
                pass
        self._tell()

    def _handed_over(self, release: list[tuple[int, int]], switches: frozenset[int],
                     now: float) -> list[tuple[int, int]]:
        """Of the claims to release, those the controller writes to no more (or
        cannot: not connected), or that waited ``YIELD_WAIT``; the others yield."""
        with self._lock:
            self._yielding = {claim: self._yielding.get(claim, now) for claim in release}
            self._yielded &= self._yielding.keys()
            return [(dpid, revision) for (dpid, revision), since in self._yielding.items()
                    if dpid not in switches or (dpid, revision) in self._yielded or now - since >= YIELD_WAIT]

    def _write_health(self, health: claims.HealthWrites) -> None:
        """What fails is written at a later step: each step compares the keys with the verdicts afresh."""
        for key, up in health.put.items():
            self.store.put(claims.health_key(key), {"up": up, "by": self.name})
        self._delete_unchanged((claims.health_key(key), revision) for key, revision in health.delete)

    def _write_placements(self, placements: claims.PlacementWrites, key: Callable[[str], str],
                          kind: str) -> None:
        for vm, (doc, expect) in placements.put.items():
            try:
                self.store.put_leased(key(vm), self._placement_value(doc, kind), self.lease, expect=expect)
            except Conflict:
                pass    # changed since: the watch brings it, and the next step decides again
        self._delete_unchanged((key(vm), revision) for vm, revision in placements.delete)

    def _placement_value(self, doc: Mapping[str, Any], kind: str = "placement") -> dict[str, Any]:
        return {"by": self.name, kind: dict(doc)}

    def _delete_unchanged(self, keys: Iterable[tuple[str, int]]) -> None:
        """Each key deleted if it is still at the revision given."""
        for key, revision in keys:
            try:
                self.store.delete(key, expect=revision)
            except Conflict:
                pass    # written again since: the watch brings it, and the next step decides again

    def _fence(self, fenced: bool) -> None:
        if fenced and not self.fenced:
            LOG.error("cluster: no lease renewal for %.1f s: writing to no switch until etcd answers",
                      self.clock() - self.renewed)
        self.fenced = fenced

    def _tell(self) -> None:
        with self._lock:
            others = [dpids for name, dpids in self.view.members.items() if name != self.name]
            state = State(self.name, dict(self.view.claims), sorted(self.view.members), self.view.leader, self.fenced,
                          frozenset().union(*others), {key: said.up for key, said in self.view.health.items()},
                          dict(self.view.placements), dict(self.view.prepared), self.lease,
                          frozenset(dpid for dpid, _ in self._yielding))
        if state != self._last:
            self._last = state
            self.changed(state)

    def _follow(self) -> None:
        while not self._stop.is_set():
            try:
                with self._lock:
                    listed, after = self._listed, self.view.revision
                self._watch = watch = self.store.watch(claims.PREFIX, after)
                for events in watch:
                    with self._lock:
                        if self._listed != listed:
                            # Listed again since this watch began: what it applied to the old
                            # view may be newer than the listing. Watch on from the listing.
                            break
                        for event in events:
                            self._apply(event.key, None if event.deleted else event.value, event.revision)
                        self._lock.notify_all()
                watch.cancel()
            except Compacted:
                try:
                    self._reread()
                except StoreError as err:
                    LOG.warning("cluster watch: cannot list the keys again: %s", err)
                    self._stop.wait(self.ttl / 8)
            except StoreError as err:
                LOG.warning("cluster watch: %s; watching again", err)
                self._stop.wait(self.ttl / 8)
            except Exception:
                # Whatever it was: a view that stops following the keys would hold this
                # instance's claims where they are for good (a switch left without a master).
                LOG.exception("cluster watch failed; watching again")
                self._stop.wait(self.ttl / 8)

    def _apply(self, key: str, value: object, revision: int) -> None:
        """One key into the view; one that is not as sdnvirt writes it is left out, and said so."""
        try:
            self.view.apply(key, value, revision)
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            LOG.warning("cluster: key %s left out, it is not as sdnvirt writes it (%r: %s)", key, value, err)
