"""`sdnvirt topo` and the topology files as users run them."""

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from sdnvirt import config
from sdnvirt.emulation import lab, lock
from sdnvirt.emulation.launcher import Emulation

pytestmark = pytest.mark.integration

TOPOLOGIES = Path(__file__).resolve().parents[2] / "sdnvirt" / "emulation" / "topologies"


def _bridges():
    out = subprocess.run(["ovs-vsctl", "list-br"], capture_output=True, text=True, timeout=10).stdout
    return set(out.split())


def test_topo_no_cli_runs_until_sigterm_then_cleans_up(tmp_path):
    lab.ensure_ovs()
    assert "s1" not in _bridges(), "a bridge s1 is left from an earlier run"
    cfg = tmp_path / "one.yaml"
    cfg.write_text("tenants:\n  t:\n    segment: 7\n    subnet: 10.7.0.0/24\n    vms:\n"
                   "      tv1: {mac: '02:00:00:07:00:01', ip: 10.7.0.1, host: s1}\n")
    proc = subprocess.Popen([sys.executable, "-m", "sdnvirt", "topo", "single", "--no-cli", "--config", str(cfg),
                             "--controller-port", str(lab.free_port())],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL)
    try:
        # Bounded, but long enough for `sdnvirt topo` to wait for the fabric lock
        # while another run on the machine holds it.
        deadline = time.monotonic() + 600
        lines = []
        while time.monotonic() < deadline and proc.poll() is None:
            lines.append(proc.stdout.readline())
            if "running; stop with SIGTERM" in lines[-1]:
                break
        assert "s1" in _bridges(), "".join(lines)
        dp = subprocess.run(["ovs-vsctl", "get", "bridge", "s1", "datapath_type", "fail_mode", "protocols"],
                            capture_output=True, text=True).stdout.split()
        assert [v.replace('"', "") for v in dp] == ["netdev", "secure", "[OpenFlow13]"]
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out
        assert "s1" not in _bridges()
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.parametrize("topo,switches", [("single,2", 1), ("leafspine,1,2", 3), ("fattree,2", 5)])
def test_topologies_work_with_plain_mn(topo, switches):
    name = topo.split(",")[0]
    res = subprocess.run(
        ["flock", "-w", "1800", lock.PATH, "timeout", "120",
         "mn", "--custom", str(TOPOLOGIES / f"{name}.py"), "--topo", topo,
         "--switch", "ovs,datapath=user,protocols=OpenFlow13,failMode=standalone", "--controller", "none",
         "--test", "none"], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "*** Adding switches:" in res.stderr
    assert len(res.stderr.split("*** Adding switches:")[1].split("***")[0].split()) == switches


def test_stop_does_not_hang_on_a_node_whose_shell_died():
    lab.ensure_ovs()
    cfg = config.parse({"tenants": {"t": {"segment": 7, "subnet": "10.7.0.0/24", "vms": {
        "tv1": {"mac": "02:00:00:07:00:01", "ip": "10.7.0.1", "host": "s1"},
        "tv2": {"mac": "02:00:00:07:00:02", "ip": "10.7.0.2", "host": "s1"}}}}})
    emu = Emulation(cfg, "single", {}, controller_port=lab.free_port()).start()
    shell = emu.host("tv1").shell
    shell.kill()            # what a stray kill, or a VM "crash", does to a Mininet host
    shell.wait(10)
    stopper = threading.Thread(target=emu.stop, daemon=True)
    stopper.start()
    stopper.join(60)
    assert not stopper.is_alive(), "Emulation.stop() hangs on a dead node shell"
    assert "s1" not in _bridges()
    with lock.fabric_lock(timeout=5):       # and it let go of the machine's fabric lock
        pass
