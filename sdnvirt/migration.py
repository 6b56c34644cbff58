"""VM migration between hypervisors: the record, its state machine, validation.

Pure: no OpenFlow, no Mininet.  A migration moves the network in model
changes only, and the planner does the rest (DESIGN.md's four steps):

1. preparation: the request is checked (the VM is located, the target is a
   connected switch other than its own with room, the VM is not migrating
   already); services that ask for it stop giving the VM new connections
   (``Model.draining``); the hypervisor agent plugs a port for the VM into
   the target, and ``Model.pending`` makes the planner pre-install the VM's
   port security and its tenant's flows there, while every path to the VM
   still leads to its source;
2. state capture: once those flows are confirmed in the switches, the VM's
   network state is recorded (``Migration.state``) and the agent may copy;
3. data transfer: the agent's business (``sdnvirt/emulation/agent.py``): it
   reports when it froze the VM and when it thawed it at the target;
4. restoration: as soon as the agent has frozen the VM (nothing delivered
   to the source reaches it from then on), or else when the VM is seen at
   the target (its port comes up, or the agent says it thawed it there),
   one ``Model.bind`` at the target flips every path make-before-break and
   removes the source's flows; when the switches confirm it and the agent
   has thawed the VM, the record gets its downtime, the VM is announced
   with gratuitous ARPs and undrained.

A failure before the VM runs at its target (target switch gone, agent
silent, timeout, or the VM leaving its source port before it was frozen)
rolls back: the pending target and the drain are undone, and paths already
flipped go back, so the VM stays where it was.

In a cluster, the instance that accepted a migration coordinates it, and
the others follow what it says of it (``Migration.placement``; their
``Migrations.elsewhere``): the VM migrates on their switches too.

For the REST API and the metrics exporter: ``View.migration_records()`` gives every
migration of the controller's lifetime, oldest first, each as ``Migration.as_dict()``
describes; on the controller's loop, ``Migrations.records()`` gives the objects.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from .model import Location, Model


class Mode(str, Enum):
    LIVE = "live"    # pre-copy while running, then a short stop-and-copy pause
    COLD = "cold"    # stopped, copied, started


class Phase(str, Enum):
    PREPARATION = "preparation"
    STATE_CAPTURE = "state_capture"
    DATA_TRANSFER = "data_transfer"
    RESTORATION = "restoration"
    FINISHED = "finished"


ORDER = list(Phase)


class Outcome(str, Enum):
    OK = "ok"
    ROLLED_BACK = "rolled_back"   # the VM stayed at (or went back to) its source
    FAILED = "failed"             # and could not be kept reachable there


class Refused(ValueError):
    """A migration request that cannot be accepted; nothing was changed."""


@dataclass
class Migration:
    id: int
    vm: str
    tenant: str
    mode: Mode
    source: str                  # hypervisor (switch) names
    target: str
    source_location: Location
    target_dpid: int
    requested_at: float          # wall clock (time.time()), like every timestamp here
    phase: Phase = Phase.PREPARATION
    # phase -> [start, end]; end None while the phase runs.
    phases: dict[str, list[Any]] = field(default_factory=dict)
    target_port: int | None = None
    drained: list[str] = field(default_factory=list)       # "tenant/service" that drained it
    state: dict[str, Any] = field(default_factory=dict)     # captured network state
    frozen_at: float | None = None   # agent: the VM stopped answering (stop-and-copy began)
    thawed_at: float | None = None   # agent: the VM runs again at the target
    flipped_at: float | None = None  # controller: the switches confirmed the paths to the target
    qemu: dict[str, Any] | None = None  # agent: QEMU's own figures of a QEMU live migration
    downtime: float | None = None
    outcome: Outcome | None = None
    reason: str = ""
    heard: float = 0.0               # monotonic: the agent's last word (or the request)
    deadline: float = 0.0            # monotonic: rolled back if not finished by then
    controller: str | None = None    # the cluster instance coordinating it (None: no cluster)

    @property
    def active(self) -> bool:
        return self.outcome is None

    def enter(self, phase: Phase, now: float) -> None:
        """Move on to ``phase``, the next one; phases are never skipped or repeated."""
        if self.outcome is not None:
            raise ValueError(f"migration {self.id} is over ({self.outcome.value})")
        if ORDER.index(phase) != ORDER.index(self.phase) + 1:
            raise ValueError(f"migration {self.id}: {self.phase.value} cannot be followed by {phase.value}")
        self.phases[self.phase.value][1] = now
        self.phase = phase
        self.phases.setdefault(phase.value, [now, None])

    def finish(self, outcome: Outcome, reason: str, now: float) -> None:
        if not self.active:
            return
        self.phases[self.phase.value][1] = now
        self.outcome, self.reason = outcome, reason
        if outcome is Outcome.OK:
            self.phase = Phase.FINISHED
            self.phases[Phase.FINISHED.value] = [now, now]

    def placement(self, at: Location | None) -> dict[str, Any]:
        """What the other instances of a cluster need of it to plan as this one does
        (``Migrations.follow`` reads it): whether it runs, the VM's pending target,
        where the VM is (``at``: the model's location, or None), whether it drains it."""
        pending = self.active and self.target_port is not None and self.phase is not Phase.RESTORATION
        return {"id": self.id, "active": self.active,
                "pending": [self.target_dpid, self.target_port] if pending else None,
                "at": None if at is None else [at.dpid, at.port], "drained": self.active and bool(self.drained)}

    def as_dict(self) -> dict[str, Any]:
        """The record as JSON-ready data, for the REST API and the metrics exporter.

        Keys:
          id (int), vm, tenant, mode ("live" | "cold"), source, target
          (hypervisor = switch names), source_port, target_port (OpenFlow
          port numbers; target_port None until the agent plugged it);
          phase: the current one, or the one it failed in (preparation,
          state_capture, data_transfer, restoration, finished);
          phases: {phase: {"start": t, "end": t | None, "duration": s | None}}
          for the phases entered, wall-clock seconds (time.time());
          requested_at, frozen_at, thawed_at, flipped_at: wall clock or None;
          downtime: seconds the VM could not exchange traffic, from the agent freezing it to
          whichever came last of its thaw and the switches confirming the paths to the target;
          None unless outcome ok; qemu: QEMU's figures (sdnvirt/emulation/qemu_migration.py) or None;
          outcome: None while running, else "ok" | "rolled_back" | "failed";
          reason: why it ended that way ("" while running); controller: the
          cluster instance that coordinates it (None without a cluster); drained: services
          ("tenant/service") that stopped giving it new connections during the migration;
          state: the captured network state {tenant, segment, mac, ip,
          services: [{service, port, weight}], flows: [str], counters: {...}}.
        """
        return {
            "id": self.id, "vm": self.vm, "tenant": self.tenant, "mode": self.mode.value,
            "source": self.source, "target": self.target,
            "source_port": self.source_location.port, "target_port": self.target_port,
            "phase": self.phase.value,
            "phases": {name: {"start": start, "end": end,
                              "duration": None if end is None else round(end - start, 6)}
                       for name, (start, end) in self.phases.items()},
            "requested_at": self.requested_at, "frozen_at": self.frozen_at,
            "thawed_at": self.thawed_at, "flipped_at": self.flipped_at,
            "downtime": self.downtime, "qemu": self.qemu,
            "outcome": None if self.outcome is None else self.outcome.value, "reason": self.reason,
            "controller": self.controller, "drained": list(self.drained), "state": self.state,
        }


@dataclass(frozen=True)
class Elsewhere:
    """A migration another instance of the cluster coordinates, as it says (``Migration.placement``)."""

    id: int
    by: str                       # the instance
    pending: Location | None
    drained: bool


class Migrations:
    """Every migration of this controller's lifetime, and the model changes they make.

    ``switches`` maps a connected switch's name to its dpid; ``wall`` and
    ``mono`` are clocks (injected so that the state machine is testable).
    """

    def __init__(self, model: Model, wall: Callable[[], float] = time.time,
                 mono: Callable[[], float] = time.monotonic, ids: Callable[[], int] | None = None,
                 controller: str | None = None):
        """``ids``: where a new migration's id comes from (the store's counter in the daemon);
        ``controller``: this instance's name in a cluster, written into its migrations' records."""
        self.model = model
        self.controller = controller
        self.wall, self.mono = wall, mono
        self._records: dict[int, Migration] = {}
        self._active: dict[str, Migration] = {}      # by VM: the records not finished
        self._ids = ids or itertools.count(1).__next__
        # By VM: the migrations the other instances of a cluster coordinate.
        self.elsewhere: dict[str, Elsewhere] = {}
        model.moves = self

    # -- what the model sees of them (model.Moves) ----------------------------------
    def migrating(self) -> set[str]:
        return set(self._active) | self.elsewhere.keys()

    def pending(self) -> dict[str, Location]:
        out = {vm: there.pending for vm, there in self.elsewhere.items() if there.pending is not None}
        out.update((vm, Location(m.target_dpid, m.target_port)) for vm, m in self._active.items()
                   if m.target_port is not None and m.phase is not Phase.RESTORATION)
        return out

    def draining(self) -> set[str]:
        return {vm for vm, m in self._active.items() if m.drained} | \
            {vm for vm, there in self.elsewhere.items() if there.drained}

    # -- queries -------------------------------------------------------------
    def records(self) -> list[Migration]:
        """All migrations, oldest first; finished ones included (the metrics read these)."""
        return list(self._records.values())

    def get(self, mid: int) -> Migration | None:
        return self._records.get(mid)

    def active_for(self, vm: str) -> Migration | None:
        return self._active.get(vm)

    def active(self) -> list[Migration]:
        return sorted(self._active.values(), key=lambda m: m.id)

    # -- preparation -----------------------------------------------------------
    def request(self, vm_name: str, target: str, mode: str, switches: dict[str, int],
                names: dict[int, str]) -> Migration:
        """Accept a migration or raise Refused saying why (and change nothing)."""
        model = self.model
        vm = model.vm(vm_name)
        if vm is None:
            raise Refused(f"no VM named {vm_name}")
        try:
            mode_ = Mode(mode)
        except ValueError:
            raise Refused(f"mode must be live or cold, not {mode!r}") from None
        running = self.active_for(vm_name)
        if running is not None:
            raise Refused(f"VM {vm_name} is already migrating (migration {running.id})")
        there = self.elsewhere.get(vm_name)
        if there is not None:
            raise Refused(f"VM {vm_name} is already migrating (migration {there.id}, coordinated by {there.by})")
        source = model.locations.get(vm_name)
        if source is None:
            raise Refused(f"VM {vm_name} is not located: there is nothing to migrate from")
        if target not in switches:
            raise Refused(f"no connected switch named {target}")
        target_dpid = switches[target]
        if target_dpid == source.dpid:
            raise Refused(f"VM {vm_name} is already on {target}")
        arriving = [m.vm for m in self.active() if m.target_dpid == target_dpid and m.phase is not Phase.RESTORATION]
        arriving += [vm for vm, there in self.elsewhere.items() if there.pending and there.pending.dpid == target_dpid]
        held = sum(1 for loc in model.locations.values() if loc.dpid == target_dpid) + len(arriving)
        capacity = model.config.capacity(target)
        if held >= capacity:
            raise Refused(f"hypervisor {target} is full: it holds or receives {held} VMs, its capacity "
                          f"is {capacity}")
        now, mono = self.wall(), self.mono()
        mig = Migration(self._ids(), vm_name, vm.tenant, mode_, names.get(source.dpid, f"{source.dpid:016x}"),
                        target, source, target_dpid, now, phases={Phase.PREPARATION.value: [now, None]},
                        heard=mono, deadline=mono + model.config.migration.timeout, controller=self.controller)
        mig.drained = [f"{svc.tenant}/{svc.name}" for svc in model.services()
                       if svc.drain_on_migration and any(b.vm.name == vm_name for b in svc.backends)]
        self._records[mig.id] = self._active[vm_name] = mig
        return mig

    def withdraw(self, mid: int) -> None:
        """Forget a migration just accepted, as if refused (another instance's took the VM first)."""
        mig = self._records.pop(mid)
        self._release(mig)

    def plugged(self, mid: int, port: int) -> Migration:
        """The agent plugged the VM's port into the target: prepare the flows there."""
        mig = self._running(mid, Phase.PREPARATION)
        if mig.target_port is not None and mig.target_port != port:
            raise ValueError(f"migration {mid} already has target port {mig.target_port}")
        loc = Location(mig.target_dpid, port)
        holder = self.model.vm_at(loc)
        if holder is not None and holder.name != mig.vm:
            raise ValueError(f"port {port} of {mig.target} holds VM {holder.name}")
        mig.target_port = port
        return mig

    # -- state capture -----------------------------------------------------------
    def capture(self, mid: int, flows: list[str], counters: dict[str, Any]) -> Migration:
        """The target's flows are in the switches: record the VM's network state,
        and let the agent copy."""
        mig = self._running(mid, Phase.PREPARATION)
        vm = self.model.vm(mig.vm)
        assert vm is not None, "the caller found the VM's flows by its cookie"
        now = self.wall()
        mig.enter(Phase.STATE_CAPTURE, now)
        mig.state = {
            "tenant": vm.tenant, "segment": vm.segment, "mac": vm.mac, "ip": str(vm.ip),
            "services": [{"service": f"{svc.tenant}/{svc.name}", "port": b.port, "weight": b.weight}
                         for svc in self.model.services() for b in svc.backends if b.vm.name == vm.name],
            "flows": sorted(flows), "counters": counters,
        }
        mig.enter(Phase.DATA_TRANSFER, self.wall())
        return mig

    # -- data transfer -------------------------------------------------------------
    def heard(self, mid: int, frozen_at: float | None = None, thawed_at: float | None = None,
              qemu: dict[str, Any] | None = None) -> Migration:
        """A word from the agent (a heartbeat, or when it froze / thawed the VM, with QEMU's figures)."""
        mig = self._get(mid)
        if not mig.active:
            return mig
        mig.heard = self.mono()
        if frozen_at is not None:
            mig.frozen_at = frozen_at
        if thawed_at is not None:
            mig.thawed_at = thawed_at
        if qemu is not None:
            mig.qemu = qemu
        return mig

    # -- restoration -------------------------------------------------------------
    def arrived(self, mid: int) -> bool:
        """The VM belongs at its target now (frozen at the source, or seen at
        the target): flip every path to it.  False if it was already flipped."""
        mig = self._get(mid)
        if not mig.active or mig.phase is not Phase.DATA_TRANSFER:
            return False
        target = self.pending()[mig.vm]
        mig.enter(Phase.RESTORATION, self.wall())
        self.model.bind(mig.vm, target)
        return True

    def flipped(self, mid: int) -> Migration:
        """The switches confirmed the paths to the target."""
        mig = self._get(mid)
        if mig.active and mig.phase is Phase.RESTORATION and mig.flipped_at is None:
            mig.flipped_at = self.wall()
        return mig

    def complete(self, mid: int) -> bool:
        """Finish the migration once paths are flipped and the agent said when
        it froze and thawed the VM; True if it finished now."""
        mig = self._get(mid)
        if not mig.active or mig.flipped_at is None or mig.thawed_at is None:
            return False
        start = mig.frozen_at if mig.frozen_at is not None else mig.thawed_at
        mig.downtime = round(max(mig.flipped_at, mig.thawed_at) - start, 6)
        self._release(mig)
        mig.finish(Outcome.OK, "", self.wall())
        return True

    # -- failures ----------------------------------------------------------------
    def roll_back(self, mid: int, reason: str) -> Migration:
        """Give up: the VM stays at, or goes back to, its source.

        Once the VM runs at its target (the agent thawed it there), a failure
        is recorded but nothing is undone: the target is where it runs.
        """
        mig = self._get(mid)
        if not mig.active:
            return mig
        if mig.phase is Phase.RESTORATION and mig.thawed_at is not None:
            self._release(mig)
            mig.finish(Outcome.FAILED, f"{reason} (the VM runs at its target)", self.wall())
            return mig
        if mig.phase is Phase.RESTORATION:
            self.model.bind(mig.vm, mig.source_location)      # paths flipped while it was frozen: back
        self._release(mig)
        mig.finish(Outcome.ROLLED_BACK, reason, self.wall())
        return mig

    def lost(self, mid: int, reason: str) -> Migration:
        """The VM is neither at its source nor at its target any more."""
        mig = self.roll_back(mid, reason)
        if mig.outcome is Outcome.ROLLED_BACK:
            mig.outcome = Outcome.FAILED
        return mig

    def vms_removed(self) -> list[Migration]:
        """End the active migrations of VMs the config no longer has (failed): the
        VM, its location and its flows are gone with it."""
        gone = [mig for mig in self.active() if self.model.vm(mig.vm) is None]
        for mig in gone:
            self._release(mig)
            mig.finish(Outcome.FAILED, "the VM was removed from the config", self.wall())
        return gone

    def overdue(self) -> list[tuple[Migration, str]]:
        """Active migrations to roll back now, with why: past the timeout, or
        an agent silent too long before it thawed the VM at its target."""
        now = self.mono()
        settings = self.model.config.migration
        due = []
        for mig in self.active():
            if now >= mig.deadline:
                due.append((mig, f"not finished within migration.timeout ({settings.timeout:g} s)"))
            elif mig.thawed_at is None and self.agent_silent(mig):
                due.append((mig, f"no word from the hypervisor agent for {settings.agent_timeout:g} s"))
        return due

    def agent_silent(self, mig: Migration) -> bool:
        """The hypervisor agent has said nothing for ``migration.agent_timeout``."""
        return self.mono() - mig.heard > self.model.config.migration.agent_timeout

    # -- internals ---------------------------------------------------------------
    def _release(self, mig: Migration) -> None:
        self._active.pop(mig.vm, None)

    def _get(self, mid: int) -> Migration:
        mig = self._records.get(mid)
        if mig is None:
            raise KeyError(mid)
        return mig

    def _running(self, mid: int, phase: Phase) -> Migration:
        mig = self._get(mid)
        if mig.outcome is not None:
            raise ValueError(f"migration {mid} is over ({mig.outcome.value}: {mig.reason})")
        if mig.phase is not phase:
            raise ValueError(f"migration {mid} is in {mig.phase.value}, not {phase.value}")
        return mig


def describe(rec: dict[str, Any]) -> str:
    """One migration record in a few lines, for people."""
    head = f"migration {rec['id']}: {rec['mode']} {rec['vm']} {rec['source']} -> {rec['target']}: "
    if rec["outcome"] is None:
        head += f"still in {rec['phase']}"
    elif rec["outcome"] == "ok":
        head += f"ok, downtime {rec['downtime'] * 1000:.1f} ms"
    else:
        head += f"{rec['outcome']} in {rec['phase']}: {rec['reason']}"
    phases = ", ".join(f"{name} {p['duration'] * 1000:.0f} ms" for name, p in rec["phases"].items()
                       if p["duration"] is not None and name != "finished")
    return head + (f"\n  {phases}" if phases else "")
