"""`sdnvirt topo` and the topology files as users run them."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sdnvirt.emulation import lab

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


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
        deadline = time.monotonic() + 60
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
        ["timeout", "120", "mn", "--custom", str(REPO / "topologies" / f"{name}.py"), "--topo", topo,
         "--switch", "ovs,datapath=user,protocols=OpenFlow13,failMode=standalone", "--controller", "none",
         "--test", "none"], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "*** Adding switches:" in res.stderr
    assert len(res.stderr.split("*** Adding switches:")[1].split("***")[0].split()) == switches
