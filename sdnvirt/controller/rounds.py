"""One reconcile round: the engine's desired state against what each switch holds.

The engine (``plan.engine.Engine``) says which keys of which switch changed
since the last round; a switch whose installed state was in step with the
desired state at the end of its last round (``SwitchSession.synced``) is
diffed on those keys only, any other (just read, re-read after an error,
held back while warm, or in a round that failed) on all of them.  Only the
flows that differ are sent; once they are in, the session's installed state
takes the desired state's own entries, so a flow is held once.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..events import Kind
from ..plan.engine import Engine
from ..plan.flows import Flow, Group, Meter
from ..plan.reconcile import Keys, Verb, reconcile_fabric
from .sender import Work

if TYPE_CHECKING:
    from .core import Controller

LOG = logging.getLogger("sdnvirt.controller")


def reconcile(ctl: Controller, started: float, done: Callable[[], None], failed: Callable[[], None]) -> None:
    """Plan, diff and hand the changes to the sender; ``done`` once they are in the switches."""
    covers, planned_after = ctl.wanted, ctl.event_hub.last()
    full = ctl.settings.planning == "full"
    if full:
        ctl.engine = Engine()
    engine = ctl.engine
    engine.update(ctl.model, ctl.fabric)
    if not full:
        settle(engine)
    changes = engine.take_changes()
    # Not read yet, or warm and the fabric not settled: held back, and diffed
    # in full when their turn comes (another instance's switch: when this one becomes its master).
    ready = {dpid: s for dpid, s in ctl.sessions.items() if s.reconcilable(ctl.settled())}
    held = any(s.writable and dpid not in ready for dpid, s in ctl.sessions.items())
    for dpid, session in ctl.sessions.items():
        if dpid not in ready:
            session.synced = False
    only = {} if full else {dpid: changes.get(dpid, Keys()) for dpid, s in ready.items() if s.synced}
    for session in ready.values():
        session.warm = False
    generations = {dpid: s.generation for dpid, s in ready.items()}
    changed = reconcile_fabric(engine.desired, {dpid: s.live() for dpid, s in ready.items()}, engine.wires, only)
    work: Work = {dpid: (ready[dpid], batches) for dpid, batches in changed.items()}
    if LOG.isEnabledFor(logging.DEBUG):
        for dpid, (_, batches) in work.items():
            for change in (c for b in batches.phases.values() for c in b):
                LOG.debug("%016x %s %s", dpid, change.verb.value, change.entry)
    reinject, ctl.reinject = ctl.reinject, []
    totals = (len(engine.desired), sum(len(t.flows) for t in engine.desired.values()))

    def pushed() -> None:
        try:
            for dpid, generation in generations.items():
                session = ctl.sessions.get(dpid)
                # A session re-read meanwhile keeps what the newer read found.
                if session is not None and session is ready[dpid] and session.generation == generation:
                    if dpid in work:
                        session.apply(work[dpid][1])
                    session.synced, session.covered = True, covers
            _pushed(ctl, work, covers, reinject, totals, held, started, planned_after)
        finally:
            done()

    def not_pushed() -> None:
        for session in ready.values():
            session.synced = False
        failed()
    ctl.sender.push(work, pushed, not_pushed)


def settle(engine: Engine) -> None:
    """After the engine started afresh (a cold start: a million flows and their parts, held
    for good), leave what it holds out of the collector's full passes, each of which would
    otherwise walk all of it (0.1-0.4 s at 10,000 VMs) whatever a change costs.  What an
    earlier freeze held and has become garbage since (an old encapsulation's graph, a
    reference cycle) is collected first."""
    if engine.restarted:
        gc.unfreeze()
        gc.collect()
        gc.freeze()


def _pushed(ctl: Controller, work: Work, covers: int, reinject: list[tuple[int, int, bytes]],
            totals: tuple[int, int], held: bool, started: float, planned_after: int) -> None:
    """A round's changes are in the switches; ``totals``: the switches and flows
    planned; ``held``: some switch was held back (not read yet, or warm);
    ``planned_after``: the last event before it was planned."""
    counts = {(name, verb): sum(b.count(kind)[verb] for _, b in work.values())
              for kind, name in ((Flow, "flow"), (Group, "group"), (Meter, "meter")) for verb in Verb}
    for name in ("flow", "group", "meter"):
        ctl.metrics.changed(name, **{verb.value: counts[name, verb] for verb in Verb})
    for dpid, port, data in reinject:
        ctl.packet_out(dpid, data, port, in_port=port, to_table=True)
    ctl.migrations.reconciled(covers)
    fresh = [s for s in (ctl.sessions.get(d) for d in work) if s is not None and s.unannounced]
    # A switch without flows dropped its neighbours' LLDP and its VMs'
    # answers to probes; now that it has them, ask again instead of
    # waiting for the next rounds.
    for session in ctl.sessions.values() if fresh else ():
        ctl.send_frames(ctl.discovery.frames(ctl.fabric, session.dpid))
    for session in fresh:
        session.unannounced = False
        ctl._locate(session)
    ctl.metrics.reconciled("success", ctl.clock() - started)
    if work:
        ms = (ctl.clock() - started) * 1000
        located, vms = len(ctl.model.locations), sum(1 for _ in ctl.model.vms())
        LOG.info("reconciled %d switches, %d flow, %d group and %d meter changes in %.1f ms", len(work),
                 *(sum(counts[name, v] for v in Verb) for name in ("flow", "group", "meter")), ms)
        if not held:
            LOG.info("fabric programmed: %d switches, %d flows, %d of %d VMs located", *totals, located, vms)
        ctl.event_hub.publish(Kind.RECONCILED, switches=len(work), ms=round(ms, 3), programmed=not held,
                              fabric_switches=totals[0], flows=totals[1], vms_located=located, vms=vms,
                              planned_after=planned_after,
                              **{f"{name}_{verb.value}": n for (name, verb), n in counts.items()})

