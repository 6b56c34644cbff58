"""What the benchmarks share: guards against other Mininet runs, the controller's events, the table.

``bench/fabric.py`` and ``bench/lb.py`` import it (they run as scripts, so ``bench/`` is on
``sys.path``).  See bench/README.md, "Sharing the machine with other runs".
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import platform
import re
import statistics
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:    # importing Mininet has a logging side effect the launcher undoes: leave it to them
    from mininet.net import Mininet

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"


def out(line: str = "") -> None:
    print(line, flush=True)


# -- small helpers ----------------------------------------------------------------------

def sh(args: list[str], timeout: float = 10.0, check: bool = True) -> str:
    res = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({res.returncode}): {res.stderr.strip()}")
    return res.stdout


def wait_others_argument(ap, when: str = "before starting") -> None:
    """Every Mininet benchmark's --wait-others (``wait_quiet``'s bound)."""
    ap.add_argument("--wait-others", type=float, default=900, metavar="S",
                    help=f"wait at most S s for other Mininet runs to end {when} (900)")


def median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def p90(xs: list[float]) -> float | None:
    """Nearest-rank 90th percentile."""
    if not xs:
        return None
    s = sorted(xs)
    return s[max(0, math.ceil(0.9 * len(s)) - 1)]


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None



def ensure_no_clash(switch_names: list[str]) -> None:
    """Never take over a bridge someone else (a test run, another benchmark) is using:
    Mininet would delete and re-create a bridge with the same name."""
    existing = set(sh(["ovs-vsctl", "--timeout=5", "list-br"]).split())
    # Mininet creates the links (root-namespace veths named <switch>-ethN) before the
    # bridges: a run that is starting up shows only those.
    links = {line.split()[1].rstrip(":").split("@")[0]
             for line in sh(["ip", "-o", "link", "show"]).splitlines() if len(line.split()) > 1}
    names = set(switch_names)
    clash = sorted((existing & names) | {i for i in links if i in names or i.split("-eth")[0] in names})
    if clash:
        raise RuntimeError(f"{', '.join(clash[:6])}{' ...' if len(clash) > 6 else ''} already exist "
                           "(another run or test using the same topology?); not touching them. "
                           "Retry when they are gone.")


def foreign_mininets() -> list[str]:
    """Mininet node shells (``bash ... -is mininet:NAME``) that are not ours."""
    mine = {os.getpid()}
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        name = next((c.decode() for c in cmd if c.startswith(b"mininet:")), None)
        # A remote controller's shell (c0) holds no bridge or interface, and
        # Mininet sometimes leaves it behind when a run stops.
        if name is not None and ppid not in mine and not re.fullmatch(r"mininet:c\d+", name):
            found.append(name)
    return found


def wait_quiet(timeout: float) -> float:
    """Wait (at most ``timeout`` s) until no other Mininet runs on this machine: another
    run of the same topology would delete our bridges (and we theirs), and on 2 cores
    its load would skew every figure.  Returns the seconds waited; raises if it stays busy."""
    t0 = time.monotonic()
    announced = False
    while True:
        others = foreign_mininets()
        if not others:
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise RuntimeError(f"another Mininet is still running after {timeout:.0f} s "
                               f"({', '.join(sorted(others)[:5])} ...); not starting next to it")
        if not announced:
            out(f"   waiting for another Mininet run to end ({', '.join(sorted(others)[:3])} ...)")
            announced = True
        time.sleep(2)


def our_port_names(net: Mininet) -> set[str]:
    names = set()
    for sw in net.switches:
        names.add(sw.name)
        names.update(str(i) for i in sw.intfList())
    return names


class Disturbed(RuntimeError):
    """Something outside this run touched our bridges while we measured: the figures are void."""


def raise_if_disturbed(guard: "BridgeGuard | None", err: BaseException) -> None:
    """Raise Disturbed instead of ``err`` when our bridges were deleted or replaced meanwhile."""
    if guard is not None and not isinstance(err, Disturbed) and guard.changed():
        raise Disturbed(f"bridges {', '.join(guard.changed())} deleted or replaced ({err})") from err


_HELD = contextlib.ExitStack()


def begin(script: str, workdir_prefix: str) -> tuple[str, Path] | None:
    """What every benchmark does first: root, quiet Mininet, OVS running, SIGTERM ending
    the run through its finally blocks. Returns (UTC stamp, a new work directory), or
    None when not root."""
    import signal
    import tempfile

    from sdnvirt.emulation import lab
    if not lab.is_root():
        out(f"{script} needs root (Mininet, OVS bridges)")
        return None
    from mininet.log import setLogLevel

    from sdnvirt.emulation.lock import fabric_lock
    setLogLevel("warning")
    # Held until the process ends: no test run or `mn -c` between the parts.
    out("   waiting for the machine's fabric lock ...")
    _HELD.enter_context(fabric_lock())
    lab.ensure_ovs()

    def on_term(signum, _frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)
    signal.signal(signal.SIGTERM, on_term)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return stamp, Path(tempfile.mkdtemp(prefix=f"{workdir_prefix}-{stamp}-"))


def bridge_uuids() -> dict[str, str]:
    out_ = sh(["ovs-vsctl", "--timeout=5", "--format=csv", "--no-headings", "--columns=name,_uuid",
               "list", "bridge"])
    return dict(line.split(",", 1) for line in out_.splitlines() if "," in line)


class BridgeGuard:
    """Notices when our bridges are deleted or replaced under us.

    The integration tests and the demo build the same topologies with the same bridge
    names on this shared Open vSwitch.  Mininet deletes any bridge with a name it is about
    to use, fails when one of its interface names exists already, and deletes its bridges
    by name when it stops (also after such a failure): two runs at once wreck each other.
    wait_quiet() and ensure_no_clash() keep us from starting next to another run; this
    catches one that starts while we measure, so that its effect is reported instead of
    measured, and keeps our clean-up off bridges that are no longer ours.
    """

    def __init__(self, names: list[str]):
        self.names = sorted(names)
        now = bridge_uuids()
        self.uuids = {n: now.get(n) for n in self.names}

    def changed(self) -> list[str]:
        now = bridge_uuids()
        return [n for n in self.names if now.get(n) != self.uuids[n]]

    def check(self, ctl=None, after: int = 0) -> None:
        """Raise Disturbed if our bridges were replaced, or if switches left ``ctl`` (after its event ``after``)."""
        bad = self.changed()
        if bad:
            raise Disturbed(f"bridges {', '.join(bad)} were deleted or replaced by someone else")
        if ctl is not None:
            gone = ctl.events("switch_lost", after=after)
            if gone:
                raise Disturbed(f"switches disconnected from the controller meanwhile: "
                                f"{', '.join(e['fields']['dpid'] for e in gone)}")

    def release(self, net: Mininet | None) -> None:
        """Before net.stop(): forget the switches that are no longer ours, and end their links
        from our side only (a veth pair dies with either end), never by the other end's name."""
        if net is None:
            return
        bad = set(self.changed())
        if not bad:
            return
        out(f"   not deleting bridges {', '.join(sorted(bad))}: they are not ours any more")
        keep, left = [], []
        for link in net.links:
            ends = (link.intf1, link.intf2)
            if not any(i.node.name in bad for i in ends):
                keep.append(link)
                continue
            ours = [i for i in ends if i.node.name not in bad]
            for intf in ours:
                node = intf.node
                if node in net.hosts:
                    node.cmd(f"ip link del {intf} 2>/dev/null")
                elif sh(["ovs-vsctl", "--timeout=5", "iface-to-br", str(intf)], check=False).strip() == node.name:
                    sh(["ip", "link", "del", str(intf)], check=False)
            if not ours:
                left.append(f"{link.intf1}<->{link.intf2}")
        net.links = keep
        net.switches = [sw for sw in net.switches if sw.name not in bad]
        if left:
            out(f"   left alone (both ends on bridges that are not ours): {', '.join(left)}")


class Run:
    """One controller daemon and one emulation, as sdnvirt_fabric() started them."""

    def __init__(self, ctl, emu, res: dict):
        self.ctl, self.emu, self.res = ctl, emu, res
        self.guard: BridgeGuard | None = None
        self.cursor = 0         # the controller's newest event when the emulation started


@contextlib.contextmanager
def sdnvirt_fabric(doc: dict, cfg, topo: tuple[str, dict], workdir: Path, wait_others: float):
    """The controller daemon with ``doc`` and the emulation of ``topo``, started once the
    machine is quiet, connected, and always stopped (leaving bridges that are no longer ours
    alone); a failure caused by another run becomes Disturbed.  Yields a Run whose ``res``
    already says how long we waited."""
    from sdnvirt.emulation import lab, launcher
    name, params = topo
    workdir.mkdir(parents=True)
    ctl = lab.ControllerProcess(doc, workdir)
    emu = launcher.Emulation(cfg, name, params, controller_port=ctl.port)
    run = Run(ctl, emu, {"waited_for_other_runs_s": wait_quiet(wait_others)})
    ensure_no_clash(list(emu.build_topo().switches()))
    try:
        ctl.start()
        run.cursor = ctl.cursor()
        emu.start()
        run.guard = BridgeGuard(list(emu.topo.switches()))
        launcher.wait_connected(emu.net, timeout=30)
        yield run
    except Exception as err:
        raise_if_disturbed(run.guard, err)
        raise
    finally:
        if run.guard is not None:
            run.guard.release(emu.net)
        emu.stop()
        ctl.stop()


def measured(results: dict, fn) -> list[str]:
    """Run ``fn()``, which fills ``results``; an interruption or a failure is reported and
    listed, not raised, so that what was measured is still written.  Returns the errors
    (also in results["errors"]), with the run's duration and final git state."""
    errors = []
    t0 = time.monotonic()
    try:
        fn()
    except KeyboardInterrupt:
        errors.append("interrupted")
        out("interrupted; cleaned up")
    except Exception as err:  # noqa: BLE001 - report what was measured so far
        errors.append(f"{type(err).__name__}: {err}")
        out(f"FAILED: {type(err).__name__}: {err}")
    results["errors"] = errors
    results["git_end"] = git_state()
    results["duration_s"] = time.monotonic() - t0
    return errors


def report(results: dict, errors: list[str], name: str, stamp: str, suffix: str, workdir: Path,
           table, peer: str = "peer", plot=None) -> int:
    """The end of a benchmark: the plot (``plot`` = (png path, draw function)), the table
    (``table(results)`` -> rows), bench/results/<name>-<stamp><suffix>.json; the exit code."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    if plot is not None:
        png, draw = plot
        try:
            draw(png)
            results["plot"] = str(png.relative_to(BENCH_DIR.parent))
        except Exception as err:  # noqa: BLE001
            errors.append(f"plot: {type(err).__name__}: {err}")
            out(f"plot failed: {type(err).__name__}: {err}")
    rows = table(results)
    out("")
    results["table"] = print_table(rows, peer) if rows else ""
    path = RESULTS_DIR / f"{name}-{stamp}{suffix}.json"
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    out(f"\nresults: {path.relative_to(BENCH_DIR.parent)}"
        + (f", plot: {results['plot']}" if "plot" in results else "") + f"  (controller log in {workdir})")
    return 1 if errors else 0


def attempts(what: str, fn, tries: int = 3):
    """Run ``fn`` again (after waiting for quiet) when another run disturbed it."""
    void = []
    for i in range(tries):
        try:
            res = fn(i)
        except Disturbed as err:
            void.append(str(err))
            out(f"   {what}: DISTURBED ({err}); measuring again")
            continue
        res["void_attempts"] = void
        return res
    raise RuntimeError(f"{what}: disturbed {tries} times: {void}")



# -- the controller's events ------------------------------------------------------------

def flow_changes(reconciled: dict) -> int:
    """Flows a ``reconciled`` event added, modified and deleted."""
    f = reconciled["fields"]
    return f["flow_add"] + f["flow_modify"] + f["flow_delete"]


def fabric_programmed(ctl, switches: int, vms: int, timeout: float) -> dict | None:
    """The first reconcile after which every one of ``switches`` switches held its flows
    and all ``vms`` VMs were located (the "fabric programmed" log line), planned after
    the last switch, link and VM found before it: a reconcile still being pushed when
    the last of them came counts them as located but does not hold their flows yet.
    None after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    after = 0
    while (left := deadline - time.monotonic()) > 0:
        prog = ctl.wait_event("reconciled", lambda f: f["programmed"] and f["fabric_switches"] == switches
                              and f["vms_located"] == f["vms"] == vms, after=after, timeout=left)
        if prog is None:
            return None
        found = ctl.events(("switch_connected", "link_up", "vm_located"), after=prog["fields"]["planned_after"])
        if not any(e["id"] < prog["id"] for e in found):
            return prog
        after = prog["id"]
    return None


def wait_reconcile_quiet(ctl, quiet: float, timeout: float) -> bool:
    """Wait until the controller has reconciled nothing for ``quiet`` s (at most ``timeout`` s)."""
    deadline = time.monotonic() + timeout
    after = ctl.cursor()
    while True:
        window = min(quiet, deadline - time.monotonic())
        if window <= 0:
            return False
        hit = ctl.wait_event("reconciled", after=after, timeout=window)
        if hit is None:
            return window >= quiet
        after = hit["id"]


def fmt(v, unit="", digits=3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{digits}f}{unit}"
    return f"{v}{unit}"



def print_table(rows: list[list[str]], peer: str = "peer") -> str:
    head = ["measurement", "sdnvirt", peer, "ratio", "target", "met"]
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    text = "\n".join([line(head), line(["-" * w for w in widths])] + [line(r) for r in rows])
    out(text)
    return text


def machine() -> dict:
    ovs = sh(["ovs-vswitchd", "--version"], check=False).splitlines()
    return {"nproc": os.cpu_count(), "ovs": ovs[0] if ovs else None, "kernel": platform.release(),
            "python": platform.python_version(), "datapath": "userspace (netdev)",
            "git_start": git_state(), "loadavg_start": os.getloadavg()}


def git_state() -> str:
    """The commit and the tracked files changed in the working tree (others edit it meanwhile)."""
    repo = str(BENCH_DIR.parent)
    commit = sh(["git", "-C", repo, "rev-parse", "--short", "HEAD"], check=False).strip()
    dirty = sh(["git", "-C", repo, "status", "--porcelain", "--untracked-files=no"], check=False).split()
    changed = [f for f in dirty if "/" in f or "." in f]
    return commit + (f" + uncommitted changes in {', '.join(changed)}" if changed else "")
