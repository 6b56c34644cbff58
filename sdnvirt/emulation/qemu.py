"""QEMU guests on a hypervisor's switch: the driver of ``kind: qemu`` VMs.

A guest is one QEMU process booting the project's image (``guest``), its
network a tap device that is a port of its hypervisor's OVS bridge.  QEMU
runs in the machine's namespace (its migration stream goes over loopback);
where the hypervisor has its own namespace and Open vSwitch (VXLAN mode), the
tap moves there once QEMU holds it, as a tap keeps its file across the move.  The
driver speaks QMP to it through QEMU's own Python library (``qemu.qmp``) on
a unix socket, on an asyncio loop of its own thread; QMP events are handed
to ``on_event`` as they arrive, with QEMU's own timestamp, so that a
migration can react to the source's STOP within a millisecond.

Two traps of this machine are handled here: KVM is not usable under nested
virtualisation (``emulation.accel: tcg`` is the default), and OVS's
userspace datapath reads a tap with plain AF_PACKET, so a guest that leaves
its TCP checksums to an offload sends them unfinished: virtio-net's
``csum=off`` makes the guest compute them.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path

from qemu.qmp import ConnectError, EventListener, QMPClient, QMPError

from ..config import Config
from .guest import Image, ImageError, build
from .vmports import NAMING, Bridge

LOG = logging.getLogger("sdnvirt.qemu")

QEMU = "qemu-system-x86_64"
BOOT_TIMEOUT = 10.0     # seconds for QEMU to open its QMP socket


class GuestError(RuntimeError):
    """A QEMU guest could not be started or driven."""


@dataclass(frozen=True)
class GuestSpec:
    name: str
    mac: str
    address: str        # address/prefix
    memory: int         # MiB
    dirty: int = 0      # MiB a second the guest rewrites (pre-copy's work)


def command_line(spec: GuestSpec, image: Image, tap: str, qmp: Path, console: Path, accel: str = "tcg",
                 incoming: str | None = None) -> list[str]:
    """QEMU's arguments for a guest; ``incoming`` (tcp:HOST:PORT) makes it a migration's destination,
    which must be started with the same devices as its source."""
    append = (f"console=ttyS0 quiet panic=-1 sdnvirt.name={spec.name} sdnvirt.ip={spec.address}"
              f" sdnvirt.dirty={spec.dirty}")
    cmd = [QEMU, "-name", f"guest={spec.name}", "-nodefaults", "-no-user-config", "-no-reboot",
           "-accel", accel, "-m", str(spec.memory), "-display", "none",
           "-kernel", str(image.kernel), "-initrd", str(image.initrd), "-append", append,
           "-netdev", f"tap,id=net0,ifname={tap},script=no,downscript=no",
           # csum=off: see the module's docstring. romfile=: no iPXE, the kernel boots directly.
           "-device", f"virtio-net-pci,netdev=net0,mac={spec.mac},csum=off,romfile=",
           "-qmp", f"unix:{qmp},server=on,wait=off",
           "-serial", f"file:{console}"]
    if incoming:
        cmd += ["-incoming", incoming]
    return cmd


class Monitor:
    """A QMP connection on an event loop of its own thread; ``on_event(event)`` is called on
    that thread for every event (keep it short)."""

    def __init__(self, path: Path, name: str, on_event: Callable[[dict], None], timeout: float = BOOT_TIMEOUT):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=f"sdnvirt-qmp-{name}", daemon=True)
        self.thread.start()
        self.client = QMPClient(name)
        self.client.register_listener(_Callback(on_event))
        try:
            self._run(self.client.connect(str(path)), timeout)
        except BaseException:
            self.close()
            raise

    def execute(self, cmd: str, args: dict | None = None, timeout: float = 10.0):
        """The command's return value; GuestError if QEMU refused it or did not answer."""
        try:
            return self._run(self.client.execute(cmd, args), timeout)
        except (QMPError, FutureTimeout, OSError) as err:
            raise GuestError(f"QMP {cmd}: {type(err).__name__}: {err}") from err

    def close(self) -> None:
        if self.loop.is_running():
            try:
                self._run(self.client.disconnect(), 5.0)
            except (QMPError, FutureTimeout, OSError, EOFError) as err:
                # EOFError: QEMU is gone (killed, or quit), which is what closing is for.
                LOG.debug("QMP disconnect: %s", err)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5.0)

    def _run(self, coro, timeout: float):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


class _Callback(EventListener):
    """Hands each event over as it is read, instead of queueing it for an async reader."""

    def __init__(self, on_event: Callable[[dict], None]):
        super().__init__()
        self.on_event = on_event

    def accept(self, event) -> bool:
        self.on_event(dict(event))
        return False


def event_time(event: dict) -> float:
    """When QEMU emitted an event (wall clock, seconds)."""
    stamp = event["timestamp"]
    return stamp["seconds"] + stamp["microseconds"] / 1e6


class QemuVM:
    """One QEMU process and its tap on ``switch``; ``start()`` it, ``stop()`` it."""

    def __init__(self, spec: GuestSpec, image: Image, switch: str, accel: str = "tcg",
                 incoming: str | None = None, bridge_of: Callable[[str], Bridge] = Bridge):
        """``bridge_of``: a switch's Bridge (vmports.Bridge.of with the emulation's net);
        by default a bridge of the machine's Open vSwitch."""
        self.spec, self.image, self.switch, self.accel, self.incoming = spec, image, switch, accel, incoming
        self.bridge_of = bridge_of
        self.dir = Path(tempfile.mkdtemp(prefix=f"sdnvirt-{spec.name}-"))
        self.tap: str | None = None
        self.ofport: int | None = None
        self.proc: subprocess.Popen | None = None
        self.monitor: Monitor | None = None
        self.on_event: Callable[[QemuVM, dict], None] | None = None

    @property
    def console(self) -> Path:
        """The guest's serial console, for people."""
        return self.dir / "console.log"

    def start(self) -> QemuVM:
        try:
            self._make_tap()
            assert self.tap is not None
            qmp = self.dir / "qmp.sock"
            cmd = command_line(self.spec, self.image, self.tap, qmp, self.console, self.accel, self.incoming)
            with open(self.dir / "qemu.log", "wb") as out:
                self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
            self.monitor = self._connect(qmp)
            # Onto the bridge only now, its carrier up since QEMU holds it: the
            # switch reports the port once, up. (The controller takes a migration's
            # target port coming up for the VM's arrival.)
            with self.bridge_of(self.switch) as bridge:
                if bridge.pid is not None:
                    _move_into(self.tap, bridge)
                bridge.vsctl("add-port", self.switch, self.tap)
                self.ofport = bridge.ofport(self.tap)
                _wait_link_up(self.tap, bridge)
        except BaseException:
            self.stop()
            raise
        LOG.info("guest %s: QEMU pid %d, tap %s (port %d) on %s%s", self.spec.name, self.proc.pid, self.tap,
                 self.ofport, self.switch, " awaiting migration" if self.incoming else "")
        return self

    def _connect(self, qmp: Path) -> Monitor:
        """QMP, once QEMU listens: its socket file exists from bind(), before listen()."""
        assert self.proc is not None
        deadline = time.monotonic() + BOOT_TIMEOUT
        while True:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise GuestError(f"QEMU for {self.spec.name} did not start: {self._log_tail()}")
            if qmp.exists():
                try:
                    return Monitor(qmp, self.spec.name, self._event)
                except ConnectError as err:
                    LOG.debug("QMP of %s not ready: %s", self.spec.name, err)
            time.sleep(0.02)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def execute(self, cmd: str, args: dict | None = None, timeout: float = 10.0):
        if self.monitor is None:
            raise GuestError(f"guest {self.spec.name} has no QMP connection")
        return self.monitor.execute(cmd, args, timeout)

    def kill(self) -> None:
        """Dead at once, like a crashed QEMU; stop() still cleans up."""
        if self.alive():
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(5)

    def stop(self) -> None:
        """QEMU ended and its tap removed; safe to call more than once."""
        if self.monitor is not None:
            self.monitor.close()
            self.monitor = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(5)
            self.proc = None
        self.unplug()
        shutil.rmtree(self.dir, ignore_errors=True)

    def unplug(self) -> None:
        """The tap off its bridge and gone (the guest loses its network)."""
        if self.tap is not None:
            with self.bridge_of(self.switch) as bridge:
                bridge.remove(self.tap)
                if bridge.pid is not None:
                    # Still in this namespace if start() failed before moving it.
                    with Bridge(self.switch) as here:
                        for index in here.ipr.link_lookup(ifname=self.tap):
                            here.ipr.link("del", index=index)
            self.tap = None

    def _make_tap(self) -> None:
        with Bridge(self.switch) as here, self.bridge_of(self.switch) as bridge:
            with NAMING:
                # Free where the tap is made and where it ends up.
                self.tap = bridge.free_port_name(here)
                subprocess.run(["ip", "tuntap", "add", "dev", self.tap, "mode", "tap"], check=True,
                               capture_output=True, timeout=10)
            here.ipr.link("set", index=here.ipr.link_lookup(ifname=self.tap)[0], state="up")

    def _event(self, event: dict) -> None:
        if self.on_event is not None:
            self.on_event(self, event)

    def _log_tail(self) -> str:
        try:
            return (self.dir / "qemu.log").read_text()[-1000:] or "(no output)"
        except OSError:
            return "(no log)"



def _move_into(tap: str, bridge: Bridge) -> None:
    """The tap into the bridge's namespace, up there (a move takes it down)."""
    with Bridge(bridge.switch) as here:
        here.ipr.link("set", index=here.ipr.link_lookup(ifname=tap)[0], net_ns_pid=bridge.pid)
    bridge.ipr.link("set", index=bridge.ipr.link_lookup(ifname=tap)[0], state="up")


def _wait_link_up(name: str, bridge: Bridge, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while bridge.vsctl("get", "Interface", name, "link_state", check=False).strip() != "up":
        if time.monotonic() > deadline:
            raise GuestError(f"{name}'s link did not come up in {timeout:g} s")
        time.sleep(0.02)


def guest_specs(config: Config) -> dict[str, GuestSpec]:
    """The config's qemu VMs as guests, by name."""
    return {name: GuestSpec(name, vm.mac, f"{vm.ip}/{tenant.subnet.prefixlen}", vm.memory, vm.dirty)
            for tenant in config.tenants.values() for name, vm in tenant.vms.items() if vm.kind == "qemu"}


def image_cache(config: Config) -> Path:
    return Path(config.controller.state_dir) / "images"


def cannot_boot(config: Config) -> str | None:
    """Why no QEMU guest can boot here (None if one can): QEMU or the image's packages missing."""
    if shutil.which(QEMU) is None:
        return f"{QEMU} is missing: install qemu-system-x86 (scripts/setup.sh does)"
    try:
        build(image_cache(config))
    except ImageError as err:
        return str(err)
    return None


def start_guests(config: Config, placement: dict[str, str],
                 bridge_of: Callable[[str], Bridge] = Bridge) -> dict[str, QemuVM]:
    """Every qemu VM of the config started on its switch (all stopped again if one fails).
    They boot in the background; a guest announces itself with a gratuitous ARP once its
    network is up, which is when the controller locates it."""
    specs = guest_specs(config)
    if not specs:
        return {}
    image = build(image_cache(config))
    guests: dict[str, QemuVM] = {}
    try:
        for name, spec in sorted(specs.items()):
            guests[name] = QemuVM(spec, image, placement[name], config.emulation.accel,
                                  bridge_of=bridge_of).start()
    except BaseException:
        for guest in guests.values():
            guest.stop()
        raise
    return guests
