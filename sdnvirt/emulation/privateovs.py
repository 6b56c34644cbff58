"""A hypervisor's own Open vSwitch: an ovsdb-server and an ovs-vswitchd of its own,
running in the hypervisor's network namespace.

Why not bridges of the machine's one ovs-vswitchd: the userspace datapath
routes tunnel packets with the routing table of the namespace vswitchd runs
in, and in the root namespace the kernel owns every VTEP address, so a
tunnel to another hypervisor's VTEP is delivered locally and dropped (see
issue 12).  With one vswitchd per namespace each hypervisor has its own
tunnel stack and routes, as each hypervisor of a datacenter owns its Open
vSwitch.  One costs about 18 MiB of memory.

Everything of one instance lives in ``RUN_ROOT/<name>``: its database, its
sockets, its pidfiles and its logs.  The OVS tools reach it through
``OVS_RUNDIR`` (see ``env``), the way they reach the system's instance through
the default one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

RUN_ROOT = Path(os.environ.get("SDNVIRT_OVS_RUNROOT", "/run/sdnvirt/ovs"))
SCHEMA = Path("/usr/share/openvswitch/vswitch.ovsschema")
DAEMONS = ("ovs-vswitchd", "ovsdb-server")     # stopped in this order


class PrivateOVSError(RuntimeError):
    pass


class PrivateOVS:
    """The Open vSwitch of hypervisor ``name``, run in the network namespace
    of process ``pid`` (a Mininet node's shell)."""

    def __init__(self, name: str, pid: int):
        self.name, self.pid = name, pid
        self.rundir = RUN_ROOT / name
        self.env = {**os.environ, "OVS_RUNDIR": str(self.rundir), "OVS_DBDIR": str(self.rundir),
                    "OVS_LOGDIR": str(self.rundir)}

    def start(self, timeout: float = 15.0) -> PrivateOVS:
        if self.rundir.exists():
            raise PrivateOVSError(f"{self.rundir} exists: another emulation runs, or sweep() was not called")
        self.rundir.mkdir(parents=True)
        db, sock = self.rundir / "conf.db", self.rundir / "db.sock"
        self._run(["ovsdb-tool", "create", str(db), str(SCHEMA)])
        self._in_ns(["ovsdb-server", str(db), f"--remote=punix:{sock}", "--detach", "--no-chdir",
                     f"--pidfile={self.rundir}/ovsdb-server.pid", f"--log-file={self.rundir}/ovsdb-server.log",
                     "-vconsole:off"])
        self.vsctl("--no-wait", "init")
        self._in_ns(["ovs-vswitchd", f"unix:{sock}", "--detach", "--no-chdir",
                     f"--pidfile={self.rundir}/ovs-vswitchd.pid", f"--log-file={self.rundir}/ovs-vswitchd.log",
                     "-vconsole:off"])
        deadline = time.monotonic() + timeout
        while subprocess.run(["ovs-appctl", "--timeout=2", "version"], env=self.env,
                             capture_output=True).returncode != 0:
            if time.monotonic() > deadline:
                raise PrivateOVSError(f"{self.name}: ovs-vswitchd did not answer within {timeout:g} s "
                                      f"(see {self.rundir}/ovs-vswitchd.log)")
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        _stop(self.rundir)

    def vsctl(self, *args: str) -> str:
        return self._run(["ovs-vsctl", "--timeout=10", *args])

    def ofctl(self, *args: str) -> str:
        return self._run(["ovs-ofctl", "-O", "OpenFlow13", *args])

    def appctl(self, *args: str) -> str:
        return self._run(["ovs-appctl", "--timeout=10", *args])

    def _in_ns(self, cmd: list[str]) -> str:
        # --detach returns once the daemon is up; the daemon stays in the namespace.
        return self._run(["mnexec", "-a", str(self.pid), *cmd])

    def _run(self, cmd: list[str]) -> str:
        res = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=30)
        if res.returncode != 0:
            raise PrivateOVSError(f"{self.name}: {' '.join(cmd)} failed: {res.stderr.strip()}")
        return res.stdout


def sweep() -> list[str]:
    """Stop the private Open vSwitches an earlier run left (only ours: those
    under RUN_ROOT) and remove their directories; the names swept.

    Call it under the fabric lock, before building a fabric."""
    if not RUN_ROOT.is_dir():
        return []
    swept = sorted(p.name for p in RUN_ROOT.iterdir() if p.is_dir())
    for name in swept:
        _stop(RUN_ROOT / name)
    return swept


def _stop(rundir: Path, timeout: float = 5.0) -> None:
    for daemon in DAEMONS:
        pid = _our_pid(rundir, daemon)
        if pid is None:
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    shutil.rmtree(rundir, ignore_errors=True)


def _our_pid(rundir: Path, daemon: str) -> int | None:
    """The pid in the daemon's pidfile, if that process is still the daemon of
    ``rundir`` (a pid of a run long gone may belong to anything now)."""
    try:
        pid = int((rundir / f"{daemon}.pid").read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    ours = Path(cmdline[0].decode(errors="replace")).name == daemon and \
        any(str(rundir).encode() in arg for arg in cmdline)
    return pid if ours else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (our child that nobody reaped) is gone for our purposes.
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return False
