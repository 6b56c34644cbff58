"""A QEMU VM's live migration: QEMU's own, with the network following its QMP events.

The hypervisor agent's protocol with the controller is the one namespace VMs
use (``agent.py``); only the data transfer differs:

1. preparation: a destination QEMU, the same machine as the source's, is
   started with ``-incoming`` on the target switch, its tap up on the bridge,
   and reported as ``plugged``; the agent waits until the controller has
   pre-installed the VM's flows there (phase ``data_transfer``);
2. data transfer: the source is told to ``migrate`` (QMP, with migration
   events on); QEMU copies the RAM while the guest runs (pre-copy passes),
   then stops the guest for the last pass.  The source's STOP event is
   reported at once as ``frozen``, with QEMU's own timestamp: the guest is
   silent from STOP to the destination's RESUME, so the controller flips the
   paths then and frames for the guest wait in the destination tap's queue
   instead of reaching a stopped source.  Cold mode stops the guest first
   (``stop``), migrates it, and starts it at the destination (``cont``);
3. the destination's RESUME is reported as ``thawed``, with QEMU's figures
   (``qemu``: total time, its downtime, setup time, RAM transferred, dirty
   passes, and the STOP and RESUME times); the source QEMU, paused for good,
   is ended and its tap removed ``TIDY_AFTER`` s later, even if the controller
   ended the migration meanwhile: the guest runs at its target.

Whatever fails before RESUME (the destination QEMU dies, QEMU's migration
fails, the controller rolls back, the timeout passes): the source's
migration is cancelled, the guest runs on at its source (``cont`` if it was
left stopped) and the destination QEMU is ended; the controller flips the
paths back if it had flipped them.
"""

from __future__ import annotations

import logging
import queue
import time
from typing import Any

from .agent import HEARTBEAT, TIDY_AFTER, Aborted, Agent, wait_phase
from .lab import free_port
from .qemu import GuestError, QemuVM, event_time

LOG = logging.getLogger("sdnvirt.qemu_migration")

# Loopback between QEMUs: QEMU's default throttle (32 MiB/s in 7.2) would only stretch the copy.
MAX_BANDWIDTH = 1 << 30     # bytes/s
ENDED = ("failed", "cancelled")


class QemuMove:
    """One QEMU VM's migration, step by step (see the module docstring)."""

    def __init__(self, agent: Agent, rec: dict):
        self.agent, self.rec, self.mid = agent, rec, rec["id"]
        self.vm, self.mode, self.target = rec["vm"], rec["mode"], rec["target"]
        self.source: QemuVM = agent.emu.guests[self.vm]
        self.dest: QemuVM | None = None
        self.deadline = time.monotonic() + agent.settings.timeout
        self.events: queue.Queue[tuple[str, dict]] = queue.Queue()
        self.migrating = False      # the source was told to migrate
        self.thawed = False         # the guest runs at the destination

    def run(self) -> None:
        src = self.source
        port = free_port()
        self.dest = QemuVM(src.spec, src.image, self.target, src.accel, incoming=f"tcp:127.0.0.1:{port}",
                           bridge_of=src.bridge_of)
        src.on_event = self.dest.on_event = self._event
        self.dest.start()
        for guest in (src, self.dest):
            guest.execute("migrate-set-capabilities", {"capabilities": [{"capability": "events", "state": True}]})
        self.agent._report(self.mid, "plugged", port=self.dest.ofport)
        wait_phase(self.agent, self.mid, "data_transfer", self.deadline)
        src.execute("migrate-set-parameters", {"max-bandwidth": MAX_BANDWIDTH})
        if self.mode == "cold":
            src.execute("stop")
        self.migrating = True
        src.execute("migrate", {"uri": f"tcp:127.0.0.1:{port}"})
        frozen_at, thawed_at = self._follow()
        self._hand_over()
        figures = qemu_figures(src.execute("query-migrate"), frozen_at, thawed_at)
        LOG.info("migration %d: %s runs on %s; QEMU: %s", self.mid, self.vm, self.target, figures)
        self.agent._report(self.mid, "thawed", frozen_at=frozen_at, thawed_at=thawed_at, qemu=figures)

    def _follow(self) -> tuple[float, float]:
        """Until the destination's RESUME: (STOP, RESUME) times; reports the STOP as it comes."""
        assert self.dest is not None
        frozen_at: float | None = None
        beat = time.monotonic() + HEARTBEAT
        while True:
            try:
                role, event = self.events.get(timeout=max(0.0, min(beat, self.deadline) - time.monotonic()))
            except queue.Empty:
                role, event = "", {}
            name, status = event.get("event"), event.get("data", {}).get("status")
            if role == "source" and name == "STOP" and frozen_at is None:
                frozen_at = event_time(event)
                self.agent._report(self.mid, "frozen", frozen_at=frozen_at)
            elif name == "MIGRATION" and status in ENDED:
                raise GuestError(f"QEMU's migration {status} (said the {role})")
            elif role == "dest" and name == "MIGRATION" and status == "completed" and self.mode == "cold":
                self.dest.execute("cont")
            elif role == "dest" and name == "RESUME":
                thawed_at = event_time(event)
                if frozen_at is None:
                    # The two QEMUs' events are read on two threads: after a downtime of a
                    # millisecond or two the destination's RESUME may come first.  The guest
                    # runs at the destination: the paths flip now, the STOP's time follows.
                    self.agent._report(self.mid, "frozen")
                    frozen_at = self._late_stop() or thawed_at
                return frozen_at, thawed_at
            if not self.dest.alive():
                raise GuestError("the destination QEMU died")
            now = time.monotonic()
            if now >= self.deadline:
                raise Aborted(f"QEMU's migration did not end within migration.timeout "
                              f"({self.agent.settings.timeout:g} s)")
            if now >= beat:
                self.agent._report(self.mid, "heartbeat")
                beat = now + HEARTBEAT

    def _late_stop(self, wait: float = 0.5) -> float | None:
        """The source's STOP time, if its event comes within ``wait`` s."""
        end = time.monotonic() + wait
        while (left := end - time.monotonic()) > 0:
            try:
                role, event = self.events.get(timeout=left)
            except queue.Empty:
                break
            if role == "source" and event.get("event") == "STOP":
                return event_time(event)
        return None

    def _hand_over(self) -> None:
        """The guest is the destination's from now on, whatever the controller says."""
        assert self.dest is not None
        self.thawed = True
        self.agent.emu.guests[self.vm] = self.dest
        self.agent.emu.placement[self.vm] = self.target
        self.source.on_event = self.dest.on_event = None

    def undo(self) -> None:
        """After a failure or a rollback before RESUME: the guest runs on at its source."""
        if self.thawed:
            return
        src = self.source
        try:
            if self.migrating and src.alive():
                if src.execute("query-migrate").get("status") not in (*ENDED, "completed"):
                    src.execute("migrate_cancel")
                    _wait_status(src, (*ENDED, "completed"))
                if src.execute("query-status")["status"] != "running":
                    src.execute("cont")
        except GuestError:
            LOG.exception("migration %d: could not resume %s at its source", self.mid, self.vm)
        if self.dest is not None:
            self.dest.stop()

    def close(self) -> None:
        self.source.on_event = None
        if self.thawed:
            # The source QEMU, paused for good, goes once the guest's traffic has resumed:
            # taking its tap off the bridge stalls the userspace datapath for some milliseconds.
            time.sleep(TIDY_AFTER)
            self.source.stop()
        elif self.dest is not None:
            self.dest.stop()

    def _event(self, guest: QemuVM, event: dict) -> None:
        self.events.put(("source" if guest is self.source else "dest", event))


def _wait_status(guest: QemuVM, statuses: tuple[str, ...], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while guest.execute("query-migrate").get("status") not in statuses and time.monotonic() < deadline:
        time.sleep(0.02)


def qemu_figures(info: dict, stop: float, resume: float) -> dict[str, Any]:
    """What the migration record keeps of QEMU's query-migrate (times in seconds)."""
    ram = info.get("ram", {})

    def seconds(key: str) -> float | None:
        return None if key not in info else info[key] / 1000

    return {"status": info.get("status"), "total_time": seconds("total-time"), "downtime": seconds("downtime"),
            "setup_time": seconds("setup-time"), "ram_transferred": ram.get("transferred"),
            "ram_total": ram.get("total"), "dirty_passes": ram.get("dirty-sync-count"),
            "stop": stop, "resume": resume, "stop_to_resume": round(resume - stop, 6)}
