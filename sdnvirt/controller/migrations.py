"""Migrations on the controller's side: events and the reconciler drive the records.

The records and the model changes are ``sdnvirt.migration``'s; this module
ties them to what the controller sees (a port appearing or coming up at the
target, ports and switches going away, the reconciler confirming a plan in
the switches, the clock) and to what the hypervisor agent says through the
API.  It never writes a flow: every step is a model change and a reconcile.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from functools import partial
from typing import Protocol

from ..cluster.claims import Placement
from ..events import Cause, Events, Kind, Step
from ..fabric import Fabric
from ..migration import Elsewhere, Migration, Migrations, Outcome, Phase, Refused
from ..model import VM, Location, Model
from ..plan.flows import Flow
from ..plan.owners import vm_cookie
from ..store import Store, StoreError, keys
from . import backends, packets

LOG = logging.getLogger("sdnvirt.migration")

# QEMU's self-announce defaults (announce-initial 50 ms, -step 100 ms,
# -rounds 5): 5 gratuitous ARPs, 50, 150, 250 and 350 ms apart.
ANNOUNCE_AT = (0.0, 0.05, 0.2, 0.45, 0.8)

# Seconds after its coordinator was lost that a migrating VM is looked for (ARP probes)
# at its source and its target: it may run silent at either while the paths lead to the other.
SEEK_AT = (0.25, 1.0, 3.0)

# Seconds an ended migration's placement stays in the cluster's keys: each other
# instance acts on the cluster's state at least every lease_ttl / 8, so none misses it.
ENDED_KEPT = 30.0

# What the agent may report, with the fields each event takes.
EVENTS = {"plugged": {"port"}, "heartbeat": set(), "frozen": {"frozen_at"},
          "thawed": {"frozen_at", "thawed_at", "qemu"}, "aborted": {"reason"}}


class Network(Protocol):
    """What the coordinator needs of the controller, and nothing more."""

    model: Model
    fabric: Fabric
    event_hub: Events

    def connected(self) -> dict[int, str]:
        """The connected switches' names, by dpid."""

    def request(self, *, urgent: bool = False) -> int:
        """Ask for a reconcile (``urgent``: at once); the request's number, which ``reconciled`` covers once done."""

    def installed_flows(self) -> dict[int, list[Flow]]:
        """What each switch holds."""

    def backend_counters(self) -> dict[tuple, dict]:
        """What the switches counted per backend (``stats.backend_counters``)."""

    def send_frame(self, dpid: int, port: int, data: bytes) -> None:
        """A frame out of a switch's port."""

    def holds(self, dpid: int, request: int) -> bool:
        """Whether this controller writes to switch ``dpid`` (in a cluster: masters it)
        and the switch has confirmed a reconcile that covered ``request``."""

    def after(self, delay: float, fn: Callable[[], object]) -> None:
        """Run ``fn`` once ``delay`` seconds have passed (on the controller's loop, as everything here)."""


class Coordinator:
    """Owned by the controller; every method runs on the controller's loop."""

    def __init__(self, app: Network, store: Store | None = None, name: str | None = None):
        """``name``: this instance's in a cluster (its migrations' records say who coordinates them)."""
        self.app = app
        self.store = store
        # Migrations of earlier runs and, in a cluster, of the other instances, as the store last had them.
        self.history: dict[int, dict] = {}
        if store is not None:
            self._reread()
            for doc in self.history.values():
                # Another instance's may be running: the leader ends it if that instance is lost.
                if doc["outcome"] is None and doc.get("controller") == name:
                    # Its VM is wherever the switches' flows and its frames say.
                    self._end_stored(doc, "the controller restarted during the migration")
        self.migs = Migrations(app.model, ids=None if store is None else partial(_next_id, store), controller=name)
        # migration id -> the reconcile request its next step waits for
        self.waits: dict[int, int] = {}
        # By VM, its latest migration's placement, for ENDED_KEPT s once it ended here (``placements``).
        self._ended: dict[str, dict] = {}
        # The other instances' word (``follow``): as last said; by VM, the latest migration id
        # seen and the (migration id, place) last applied.
        self._said: Mapping[str, Placement] = {}
        self._latest: dict[str, int] = {}
        self._applied: dict[str, tuple[int, Location | None]] = {}
        # Called at each step of a migration (in a cluster: the others are told its ``placements``).
        self.told: Callable[[], object] = lambda: None
        # In a cluster: makes a new migration's placement the VM's at once, unless another
        # instance's migration of it runs (False); two instances never run one each.
        self.claim: Callable[[str, dict], bool] = lambda vm, placement: True
        # In a cluster: the others told, by VM, the migrations whose pending targets it
        # prepared on the switches it masters.
        self.prepared_told: Callable[[dict[str, dict]], object] = lambda prepared: None
        # The others' migrations: by VM, the reconcile request that plans its pending target here.
        self._prepare: dict[str, tuple[int, Location, int]] = {}      # VM -> (migration id, target, request)
        self._prepared_here: dict[str, dict] = {}           # as last told
        # Migrations waiting for the master of their target's switch to say it is prepared:
        # by id, the reconcile request that prepared it here.
        self._unprepared: dict[int, int] = {}
        self._covers = 0        # the last reconcile request in the switches
        self._prepared_there: Mapping[str, Placement] = {}
        # By VM, the places its running migration (another instance's) has named: (id, places).
        self._named: dict[str, tuple[int, set[Location]]] = {}

    # -- the API's side --------------------------------------------------------
    def request(self, vm: str, target: str, mode: str) -> dict:
        """Accept a migration (raises migration.Refused) and return its record."""
        app = self.app
        names = app.connected()
        mig = self.migs.request(vm, target, mode, {n: d for d, n in names.items()}, names)
        try:
            claimed = self.claim(mig.vm, mig.placement(app.model.locations.get(mig.vm)))
        except StoreError as err:
            self.migs.withdraw(mig.id)
            raise Refused(f"the cluster's store cannot take it: {err}") from None
        if not claimed:
            self.migs.withdraw(mig.id)
            raise Refused(f"VM {vm} is already migrating, coordinated by another instance (or its placement "
                          "changed meanwhile: try again)")
        self._keep(mig)
        record = mig.as_dict()
        LOG.info("migration %d: %s VM %s from %s to %s accepted%s", mig.id, mig.mode.value, mig.vm, mig.source,
                 mig.target, f"; drained in {', '.join(mig.drained)}" if mig.drained else "")
        self._publish(mig, Step.ACCEPTED)
        if mig.drained:
            app.request()
        return record

    def records(self, reread: bool = False) -> list[dict]:
        """Every migration, oldest first: the store's as last read (``reread``: read now), this
        instance's as they are now."""
        if reread:
            self._reread()
        own = {m.id: m.as_dict() for m in self.migs.records()}
        return [own.get(mid) or self.history[mid] for mid in sorted(self.history.keys() | own.keys())]

    def record(self, mid: int) -> dict | None:
        mig = self.migs.get(mid)
        if mig is not None:
            return mig.as_dict()
        self._reread()
        return self.history.get(mid)

    def orphans(self, members: set[str]) -> None:
        """The leader's duty: a migration coordinated by an instance no longer among ``members``
        is recorded as failed.  Nothing else is left to undo: the new masters of that instance's
        switches plan no pre-installed target, its hypervisor agent, cut off, cancels QEMU's
        migration, and the VM is found wherever its frames are seen."""
        self._reread()
        for doc in self.history.values():
            lost = doc.get("controller")
            if doc["outcome"] is None and lost is not None and lost not in members:
                LOG.warning("migration %d: VM %s: its controller instance %s was lost", doc["id"], doc["vm"], lost)
                self._end_stored(doc, f"its controller instance {lost} was lost during the migration")

    # -- a cluster's other instances ---------------------------------------------------
    def placements(self) -> dict[str, dict]:
        """For the other instances (``cluster.claims.PLACEMENTS``): by VM, the latest
        migration this instance coordinates, as ``Migration.placement``."""
        model = self.app.model
        out = {vm: doc for vm, doc in self._ended.items() if model.vm(vm) is not None}
        for mig in self.migs.active():
            out[mig.vm] = mig.placement(model.locations.get(mig.vm))
        return out

    def follow(self, said: Mapping[str, Placement]) -> bool:
        """The other instances' migrations, as their coordinators say (``placements``):
        their VMs are moved by them alone, planned at their pending targets and
        drained while they run, and placed where they say whenever that changes
        while this instance follows them; a coordinator lost takes its word with
        it, and its VMs stay where it last placed them. The word of a migration
        that ended before this instance followed it, or of one older than another
        already seen, is history (the VM may have been learnt elsewhere since).
        True if the model changed."""
        app = self.app
        self._said = said
        elsewhere, changed = {}, False
        for vm, placement in said.items():
            doc, mid = placement.doc, placement.doc["id"]
            if app.model.vm(vm) is None or mid < self._latest.get(vm, 0):
                continue        # not in this instance's config (yet, or any more), or written again since
            self._latest[vm] = mid
            if self._ended.get(vm, {}).get("id", mid) < mid:
                del self._ended[vm]     # this instance's word on the VM is older: it writes it no more
            at = _location(doc["at"])
            if doc["active"]:
                elsewhere[vm] = Elsewhere(mid, placement.by, _location(doc["pending"]), doc["drained"])
                if self._named.get(vm, (None,))[0] != mid:
                    self._named[vm] = (mid, set())
                self._named[vm][1].update(loc for loc in (at, elsewhere[vm].pending) if loc is not None)
            elif self._applied.get(vm, (None, None))[0] != mid:
                continue
            if self._applied.get(vm) == (mid, at):
                continue
            self._applied[vm] = (mid, at)
            if at == app.model.locations.get(vm):
                continue
            changed = True
            LOG.info("migration %d of VM %s (coordinated by %s): the VM is at %s", mid, vm, placement.by, at)
            if at is not None:
                app.model.bind(vm, at)
                continue
            for svc, backend in app.model.unbind(vm, f"its migration {mid} lost it"):
                backends.changed(app.event_hub, app.model, svc, backend, Cause.MIGRATION)
        for vm, e in self.migs.elsewhere.items():
            if vm not in said:
                self._seek(vm, e, self._named.get(vm, (e.id, set()))[1])
        self._named = {vm: named for vm, named in self._named.items() if vm in elsewhere}
        if elsewhere != self.migs.elsewhere:
            self.migs.elsewhere = elsewhere
            changed = True
        if changed:
            request = self.app.request(urgent=True)
            self._prepare = {vm: was if (was := self._prepare.get(vm)) is not None and was[:2] == (e.id, e.pending)
                             else (e.id, e.pending, request)
                             for vm, e in elsewhere.items() if e.pending is not None}
        return changed

    def _seek(self, vm: str, lost: Elsewhere, places: set[Location]) -> None:
        """``vm``'s coordinator was lost while it migrated (its word went with its lease):
        the VM stays where it last placed it, but it may run elsewhere among the
        ``places`` its migration named: at its target, resumed there while the paths
        still led to its source (QEMU's announcements went unheeded while the
        migration held it), or at its source, the migration cancelled after the
        flip.  Asked for at each, until it is found, it answers from where it is,
        and is learnt there."""
        LOG.warning("migration %d of VM %s: its coordinator %s was lost; looking for the VM at %s", lost.id, vm,
                    lost.by, ", ".join(f"{loc.dpid:016x}:{loc.port}" for loc in sorted(places)) or "no place")
        left = self.app.model.locations.get(vm)

        def seek() -> None:
            model = self.app.model
            known = model.vm(vm)
            if known is None or vm in self.migs.elsewhere or model.locations.get(vm) != left:
                return      # gone, migrating again, or found since
            for loc in sorted(places):
                if loc != left and self.app.holds(loc.dpid, 0):
                    self.app.send_frame(loc.dpid, loc.port, packets.arp_probe(str(known.ip)))
        if places:
            for delay in SEEK_AT:
                self.app.after(delay, seek)

    def prepared(self, said: Mapping[str, Placement]) -> None:
        """The cluster's word on the targets prepared by the masters of their switches
        (``claims.PREPARED``): a migration waiting for its own goes on."""
        self._prepared_there = said
        self._retry_unprepared()

    def roles_changed(self) -> None:
        """A switch was mastered here or given up (a cluster's roles)."""
        self._told_prepared(self._covers)
        self._retry_unprepared()

    def _retry_unprepared(self) -> None:
        for mid, need in sorted(self._unprepared.items()):
            mig = self.migs.get(mid)
            if mig is not None and mig.active and mig.phase is Phase.PREPARATION:
                self._capture(mig, need)
            else:
                del self._unprepared[mid]

    def _told_prepared(self, covers: int) -> None:
        """Say which of the others' migrations have their pending targets on the switches
        this instance masters, as a reconcile that planned them is confirmed there."""
        prepared = {vm: {"id": mid, "at": [target.dpid, target.port]}
                    for vm, (mid, target, request) in self._prepare.items()
                    if self.app.holds(target.dpid, request)}
        if prepared != self._prepared_here:
            self._prepared_here = prepared
            self.prepared_told(prepared)

    def lease_lost(self) -> None:
        """This instance's cluster lease expired: its switches went to others, and the
        leader may have recorded its migrations as failed already. Each one still
        running is rolled back here too, so that none goes on unseen."""
        for mig in self.migs.active():
            self._roll_back(mig, "this instance's cluster lease expired during the migration")

    def _reread(self) -> None:
        if self.store is None:
            return
        try:
            self.history = {item.value["id"]: item.value for item in self.store.list(keys.MIGRATIONS).items.values()}
        except StoreError as err:
            LOG.warning("migration records: the store cannot be read (%s); answering from the last read", err)

    def _end_stored(self, doc: dict, reason: str) -> None:
        """A stored record of a migration nobody coordinates any more: failed."""
        assert self.store is not None
        doc.update(outcome="failed", reason=reason)
        try:
            self.store.put(keys.migration_key(doc["id"]), doc)
        except StoreError as err:
            LOG.error("migration %d: cannot record its end in the store: %s", doc["id"], err)

    def _keep(self, mig: Migration) -> None:
        """A migration's record goes into the store when it is accepted and when it ends:
        a restart loses none."""
        if self.store is None:
            return
        try:
            self.store.put(keys.migration_key(mig.id), mig.as_dict())
        except StoreError as err:
            LOG.error("migration %d: cannot keep its record in the store: %s", mig.id, err)

    def event(self, mid: int, event: str, **fields) -> dict:
        """What the hypervisor agent reports; KeyError for an unknown migration,
        ValueError for an event that does not fit its state."""
        if event not in EVENTS or set(fields) - EVENTS[event]:
            raise ValueError(f"unknown event {event!r} or fields {sorted(fields)}; events: "
                             + ", ".join(f"{e} {sorted(f)}" for e, f in EVENTS.items()))
        mig = self.migs.heard(mid, fields.get("frozen_at"), fields.get("thawed_at"), fields.get("qemu"))
        if not mig.active:
            return mig.as_dict()
        if event == "plugged":
            self.migs.plugged(mid, int(fields["port"]))
            LOG.info("migration %d: target port %s:%d plugged; preparing it", mid, mig.target, mig.target_port)
            self._publish(mig, Step.PLUGGED)
            self._after_reconcile(mig)
        elif event == "frozen":
            # From now on nothing delivered to the source reaches the VM:
            # the paths flip while it is frozen, so they lead to the
            # target by the time it runs there.
            self._arrived(mig, "it is frozen at its source")
        elif event == "thawed":
            self._arrived(mig, "the agent says so")
            self._complete(mig)
        elif event == "aborted":
            self._roll_back(mig, f"the agent gave up: {fields.get('reason', '')}")
        return mig.as_dict()

    # -- what the controller sees -----------------------------------------------
    def port_up(self, loc: Location) -> None:
        """A port is up: the VM has arrived, if the
        agent has not said it froze it yet (another instance's migration: its coordinator decides)."""
        for mig in self.migs.active():
            if self.app.model.pending.get(mig.vm) == loc:
                self._arrived(mig, "its port came up")

    def port_gone(self, loc: Location, deleted: bool) -> bool:
        """A port went down or away; True if a
        migration accounts for it (the VM it held must not be unbound)."""
        for mig in self.migs.active():
            if self.app.model.pending.get(mig.vm) == loc:
                if deleted:
                    self._roll_back(mig, f"its target port on {mig.target} was removed")
                return True
            if mig.source_location == loc and self.app.model.locations.get(mig.vm) == loc:
                self._roll_back(mig, "the VM left its source port before it was frozen")
                return False
        vm = self.app.model.vm_at(loc)
        return vm is not None and vm.name in self.migs.elsewhere       # its coordinator decides

    def switch_gone(self, dpid: int) -> None:
        for mig in self.migs.active():
            if mig.target_dpid == dpid and mig.phase is not Phase.RESTORATION:
                self._roll_back(mig, f"target switch {mig.target} disconnected")

    def config_changed(self) -> None:
        """A new config was adopted."""
        for mig in self.migs.vms_removed():
            self.waits.pop(mig.id, None)
            LOG.warning("migration %d: VM %s failed: %s", mig.id, mig.vm, mig.reason)
            self._publish(mig, Step.ENDED)
            self._keep(mig)
        model = self.app.model
        for kept in (self._ended, self._applied):
            for vm in [vm for vm in kept if model.vm(vm) is None]:
                del kept[vm]
        # The others' word again, on the VMs this config has: none it lost, any it gained.
        self.follow(self._said)

    def tick(self) -> None:
        for mig, why in self.migs.overdue():
            self._roll_back(mig, why)

    def reconciled(self, covers: int) -> None:
        """A reconcile that covered every request up to ``covers`` is in the switches."""
        self._covers = covers
        self._told_prepared(covers)
        self._retry_unprepared()
        announce = []
        for mid, need in list(self.waits.items()):
            if need > covers:
                continue
            del self.waits[mid]
            mig = self.migs.get(mid)
            if mig is None or not mig.active:
                continue
            if mig.phase is Phase.PREPARATION:
                self._capture(mig, need)
            elif mig.phase is Phase.RESTORATION:
                self.migs.flipped(mid)
                LOG.info("migration %d: paths to VM %s flipped to %s", mid, mig.vm, mig.target)
                self._publish(mig, Step.FLIPPED)
                announce.append(mig)
                self._complete(mig)
        for mig in announce:
            self._announce(mig)

    # -- steps -------------------------------------------------------------------
    def _after_reconcile(self, mig: Migration, urgent: bool = False) -> None:
        self.waits[mig.id] = self.app.request(urgent=urgent)

    def _capture(self, mig: Migration, need: int) -> None:
        """The pre-install, reconcile request ``need``, is in this instance's switches:
        once it is in the target's too (confirmed there, or, if another instance
        masters it, that one says so), the state is captured."""
        app = self.app
        said = self._prepared_there.get(mig.vm)
        there = said is not None and said.doc == {"id": mig.id, "at": [mig.target_dpid, mig.target_port]}
        if not app.holds(mig.target_dpid, need) and not there:
            if mig.id not in self._unprepared:
                LOG.info("migration %d: waiting for %s to hold the prepared target", mig.id, mig.target)
            self._unprepared[mig.id] = need
            return
        self._unprepared.pop(mig.id, None)
        vm = self._vm(mig)
        ours = vm_cookie(vm)
        flows = [f"{dpid:016x} {f}" for dpid, held in app.installed_flows().items() for f in held if f.cookie == ours]
        counters = {"/".join(key[:2]) + f"/{key[2]}": c for key, c in app.backend_counters().items()
                    if key[2].split(":")[0] == vm.name}
        self.migs.capture(mig.id, flows, counters)
        LOG.info("migration %d: target prepared, state captured (%d flows); data transfer may start",
                 mig.id, len(flows))
        self._publish(mig, Step.CAPTURED)

    def _arrived(self, mig: Migration, how: str) -> None:
        if self.migs.arrived(mig.id):
            LOG.info("migration %d: VM %s is at %s port %d (%s); flipping its paths", mig.id, mig.vm,
                     mig.target, mig.target_port, how)
            self._publish(mig, Step.ARRIVED)
            # Frozen at the source: what reaches it until the flip is lost.
            self._after_reconcile(mig, urgent=True)

    def _complete(self, mig: Migration) -> None:
        if self.migs.complete(mig.id):
            LOG.info("migration %d: VM %s finished on %s, downtime %.1f ms", mig.id, mig.vm, mig.target,
                     (mig.downtime or 0.0) * 1000)
            self._publish(mig, Step.FINISHED)
            self._keep(mig)
            if mig.drained:
                self.app.request()

    def _roll_back(self, mig: Migration, reason: str) -> None:
        app = self.app
        self.migs.roll_back(mig.id, reason)
        self.waits.pop(mig.id, None)
        loc = app.model.locations.get(mig.vm)
        if mig.outcome is Outcome.ROLLED_BACK and loc is not None and not app.fabric.port_live(loc.dpid, loc.port):
            if mig.phase is Phase.RESTORATION and not self.migs.agent_silent(mig):
                # The agent took it off its source port when it froze it, and
                # plugs it back in at its source on a new port: learnt there.
                down = app.model.unbind(mig.vm, "its migration was rolled back after it left its source port")
            else:
                # Its source port is gone too (or the agent that would plug it
                # back in is silent): learnt again wherever it shows up.
                self.migs.lost(mig.id, reason + "; its source port is gone")
                down = app.model.unbind(mig.vm, "its migration failed away from its port")
                app.event_hub.publish(Kind.VM_LOST, vm=mig.vm, tenant=mig.tenant, migration=mig.id)
            for svc, backend in down:
                backends.changed(app.event_hub, app.model, svc, backend, Cause.MIGRATION)
        outcome = mig.outcome.value if mig.outcome is not None else "ended"
        LOG.warning("migration %d: VM %s %s: %s", mig.id, mig.vm, outcome.replace("_", " "), mig.reason)
        self._publish(mig, Step.ENDED)
        self._keep(mig)
        app.request()

    def _publish(self, mig: Migration, step: Step) -> None:
        """Every step is published, to the event stream and to the cluster (``told``)."""
        if not mig.active:
            self._ended[mig.vm] = mig.placement(self.app.model.locations.get(mig.vm))
            self.app.after(ENDED_KEPT, partial(self._forget, mig.vm, mig.id))
        self.app.event_hub.publish(Kind.MIGRATION, id=mig.id, vm=mig.vm, tenant=mig.tenant, mode=mig.mode, step=step,
                                   phase=mig.phase, outcome=mig.outcome)
        self.told()

    def _forget(self, vm: str, mid: int) -> None:
        if self._ended.get(vm, {}).get("id") == mid:
            del self._ended[vm]
            self.told()

    def _announce(self, mig: Migration) -> None:
        """Gratuitous ARPs for the VM to every other VM of its tenant, where each is plugged in.

        Sent by the controller, not from inside the VM: ARP from a VM's port is
        answered in its edge switch and never crosses the fabric, so only
        packet-outs reach the peers.
        """
        app = self.app
        vm = self._vm(mig)
        peers = {peer.name for peer in app.model.vms() if peer.tenant == vm.tenant and peer.name != vm.name}
        ports = sorted(loc for name, loc in app.model.locations.items() if name in peers)
        frame = packets.gratuitous_arp(vm.mac, str(vm.ip))

        def announce() -> None:
            for loc in ports:
                app.send_frame(loc.dpid, loc.port, frame)
        for delay in ANNOUNCE_AT:
            app.after(delay, announce)

    def _vm(self, mig: Migration) -> VM:
        vm = self.app.model.vm(mig.vm)
        # A VM removed from the config ends its migration first (config_changed).
        assert vm is not None, f"migration {mig.id}: VM {mig.vm} is not in the model"
        return vm


def _location(pair: list[int] | None) -> Location | None:
    return None if pair is None else Location(*pair)


def _next_id(store: Store) -> int:
    """Ids come from the store's counter, so that no process gives one twice."""
    try:
        return keys.next_id(store, keys.MIGRATION_ID)
    except StoreError as err:
        raise Refused(f"the store gives it no id: {err}") from None
