"""The hypervisor agent of an emulation: it moves VMs between switches when the controller says so.

It runs inside the ``sdnvirt topo`` process (the daemon never imports
Mininet) and talks to the controller only through the REST API: it carries
out the migrations it asks for itself (the Mininet CLI's ``migrate``), polls
``GET /v1/migrations`` every 0.5 s for those asked for elsewhere
(``sdnvirt migrate``), and reports each step with
``POST /v1/migrations/{id}/events``, which also tells it whether the
controller has rolled the migration back.

For each migration (see ``sdnvirt/migration.py`` for the controller's side):

1. preparation: a veth pair is made with pyroute2; one end goes into the
   VM's network namespace, down, the other onto the target OVS bridge;
   reported as ``plugged`` with its OpenFlow port, and the agent waits until
   the controller has pre-installed the VM's flows there (phase
   ``data_transfer``);
2. data transfer, live mode: an emulated pre-copy of ``memory / copy_rate``
   seconds while the VM runs (heartbeats meanwhile), then stop-and-copy:
   every process of the VM gets SIGSTOP (``frozen``), its interface is
   deleted, the new one takes its name, MAC and IP, and once
   ``migration.stop_and_copy`` seconds have passed it comes up and the
   processes get SIGCONT (``thawed``); the old port leaves the source
   bridge ``TIDY_AFTER`` seconds later.  Cold mode: the VM is frozen and
   disconnected for the whole copy instead.
3. If the controller rolls the migration back, the agent unplugs the target
   port, or, if the VM was already moved, moves it back to its source.

The interface mechanics (pyroute2 and ``mnexec``, never the Mininet host's
shell) are in ``vmports``.
"""

from __future__ import annotations

import logging
import subprocess
import threading
import time

from ..api.client import ApiError, Client
from ..config import Config
from .vmports import Port, VMPorts, remove_plugged

LOG = logging.getLogger("sdnvirt.agent")

DISCOVER = 0.5      # seconds between looks for migrations asked for elsewhere (sdnvirt migrate)
POLL = 0.1          # seconds between looks at one migration's state while waiting for it
HEARTBEAT = 0.5     # seconds between words to the controller while copying
TIDY_AFTER = 0.5    # seconds after the thaw before the source's old port is removed

class Aborted(Exception):
    """The migration ended on the controller's side (rolled back), or the agent was killed."""


class Agent:
    def __init__(self, emu, client: Client, config: Config):
        self.emu = emu
        self.client = client
        self.settings = config.migration
        self.memory = {name: vm.memory for t in config.tenants.values() for name, vm in t.vms.items()}
        self.prefix = {name: t.subnet.prefixlen for t in config.tenants.values() for name in t.vms}
        self.workers: dict[int, threading.Thread] = {}
        self.plugged: set[tuple[str, str]] = set()      # (switch, interface) this agent made
        self.stopping = threading.Event()
        self.dead = threading.Event()
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None

    # -- life cycle ----------------------------------------------------------
    def start(self) -> Agent:
        self.thread = threading.Thread(target=self._poll, name="sdnvirt-agent", daemon=True)
        self.thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop looking for work, let running migrations end (bounded), remove leftover ports."""
        self.stopping.set()
        deadline = time.monotonic() + timeout
        for worker in list(self.workers.values()) + ([self.thread] if self.thread else []):
            worker.join(max(0.0, deadline - time.monotonic()))
        if self.emu.net is not None:
            remove_plugged(self.emu, self.plugged)

    def kill(self) -> None:
        """Stop dead, like a crashed agent: no word to the controller, nothing undone."""
        self.dead.set()
        self.stopping.set()

    # -- requests --------------------------------------------------------------
    def request(self, vm: str, target: str, mode: str = "live") -> dict:
        """Ask the controller for a migration (the Mininet CLI's ``migrate``) and
        carry it out.  Raises ApiError when it is refused."""
        rec = self.client.post("/migrations", {"vm": vm, "target": target, "mode": mode})
        self._take(rec)
        return rec

    def wait(self, mid: int, timeout: float) -> dict:
        """The record of migration ``mid`` once it has ended (or as it is after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            rec = self.client.get(f"/migrations/{mid}")
            if rec["outcome"] is not None or time.monotonic() >= deadline:
                return rec
            time.sleep(POLL)

    def _poll(self) -> None:
        while not self.stopping.wait(DISCOVER):
            try:
                records = self.client.get("/migrations")
            except ApiError as err:
                LOG.debug("cannot list migrations: %s", err)
                continue
            for rec in records:
                if (rec["outcome"] is None and rec["phase"] == "preparation" and rec["target_port"] is None
                        and rec["vm"] in self.emu.placement):
                    self._take(rec)

    def _take(self, rec: dict) -> None:
        with self.lock:
            if rec["id"] in self.workers or self.stopping.is_set():
                return
            worker = threading.Thread(target=self._run, args=(rec,), name=f"sdnvirt-migration-{rec['id']}",
                                      daemon=True)
            self.workers[rec["id"]] = worker
        worker.start()

    # -- one migration -----------------------------------------------------------
    def _run(self, rec: dict) -> None:
        # Imported here: qemu_migration builds on this module.
        from .qemu_migration import QemuMove
        move: Move | QemuMove | None = None
        try:
            move = QemuMove(self, rec) if rec["vm"] in self.emu.guests else Move(self, rec)
            move.run()
        except Aborted as why:
            LOG.warning("migration %d of %s: %s", rec["id"], rec["vm"], why)
            if move is not None and not self.dead.is_set():
                move.undo()
        except Exception as err:    # noqa: BLE001 - report any failure, then undo
            LOG.exception("migration %d of %s failed", rec["id"], rec["vm"])
            if not self.dead.is_set():
                try:
                    self._report(rec["id"], "aborted", reason=f"{type(err).__name__}: {err}")
                except (Aborted, ApiError):
                    pass        # rolled back, as asked; or the controller is gone and will time it out
                if move is not None:
                    move.undo()
        finally:
            if move is not None:
                move.close()

    def _report(self, mid: int, event: str, **fields) -> dict:
        if self.dead.is_set():
            raise Aborted("the agent was killed")
        rec = self.client.post(f"/migrations/{mid}/events", {"event": event, **fields})
        if rec["outcome"] not in (None, "ok"):
            raise Aborted(f"the controller ended it: {rec['outcome']}: {rec['reason']}")
        return rec


class Move:
    """One VM's migration, step by step (see the module docstring)."""

    def __init__(self, agent: Agent, rec: dict):
        self.agent, self.rec, self.mid = agent, rec, rec["id"]
        self.vm, self.mode = rec["vm"], rec["mode"]
        self.source = agent.emu.placement[self.vm]
        self.target = rec["target"]
        self.ports = VMPorts(agent.emu, self.vm, agent.prefix[self.vm], agent.plugged)
        self.new: Port | None = None
        self.moved = False
        self.deadline = time.monotonic() + agent.settings.timeout

    def run(self) -> None:
        a, s = self.agent, self.agent.settings
        self.new = self.ports.plug(self.target, f"mig{self.mid}")
        a._report(self.mid, "plugged", port=self.new.ofport)
        self._wait_phase("data_transfer")
        copy = a.memory[self.vm] / s.copy_rate
        if self.mode == "live":
            self._copy(copy)
            self._stop_and_move(s.stop_and_copy)
        else:
            self._stop_and_move(copy)

    def _stop_and_move(self, pause: float) -> None:
        assert self.new is not None, "run() plugged it"
        frozen_at = time.time()
        with self.ports.frozen():
            self.agent._report(self.mid, "frozen", frozen_at=frozen_at)
            self.ports.swap(self.new)
            self.moved = True
            self._copy(frozen_at + pause - time.time())
            self.ports.up()
        thawed_at = time.time()
        LOG.info("migration %d: %s moved to %s, frozen %.1f ms", self.mid, self.vm, self.target,
                 (thawed_at - frozen_at) * 1000)
        self.agent._report(self.mid, "thawed", frozen_at=frozen_at, thawed_at=thawed_at)
        # The source's old port goes once the VM's traffic has resumed: taking
        # a port off a bridge stalls the userspace datapath, which every bridge
        # of the emulation shares, for some milliseconds.
        time.sleep(TIDY_AFTER)
        try:
            self.ports.tidy()
        except (OSError, subprocess.SubprocessError) as err:
            # The migration is done: a port left over on the source bridge is
            # not a reason to move the VM back.
            LOG.warning("migration %d: the old port of %s stays on its bridge: %s", self.mid, self.vm, err)

    def undo(self) -> None:
        """After a rollback: the VM belongs at its source."""
        try:
            if self.moved:
                # A move cut short while the VM was frozen left its old port on the
                # source bridge: it goes first, or the new port could not take its name.
                self.ports.tidy()
                back = self.ports.plug(self.source, f"mig{self.mid}b")
                with self.ports.frozen():
                    self.ports.swap(back)
                    self.ports.up()
                self.ports.tidy()
                # Learning finds it at its new port on the source from its own frame.
                self.ports.announce()
            elif self.new is not None:
                self.ports.unplug(self.new)
        except Exception:    # noqa: BLE001
            LOG.exception("migration %d: could not undo the move of %s", self.mid, self.vm)

    def close(self) -> None:
        self.ports.close()

    def _copy(self, seconds: float) -> None:
        """An emulated copy: time passes, the controller hears from us (and we learn
        whether it rolled the migration back: _report raises Aborted then)."""
        end = time.monotonic() + seconds
        while end - time.monotonic() > HEARTBEAT:
            time.sleep(HEARTBEAT)
            self.agent._report(self.mid, "heartbeat")
        time.sleep(max(0.0, end - time.monotonic()))

    def _wait_phase(self, phase: str) -> None:
        wait_phase(self.agent, self.mid, phase, self.deadline)


def wait_phase(agent: Agent, mid: int, phase: str, deadline: float) -> None:
    """Heartbeats until the controller has taken migration ``mid`` to ``phase``."""
    while agent._report(mid, "heartbeat")["phase"] != phase:
        if time.monotonic() > deadline:
            raise Aborted(f"the controller did not reach {phase} in time")
        time.sleep(POLL)
