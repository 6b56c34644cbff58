"""The sdnvirt command as a user runs it: config checks and refusals."""

import subprocess
import sys
from pathlib import Path

from sdnvirt.emulation.lab import free_port

EXAMPLES = Path(__file__).parent.parent / "deploy" / "examples"


def sdnvirt(*args, timeout=30):
    return subprocess.run([sys.executable, "-m", "sdnvirt", *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def test_check_config_accepts_the_shipped_examples():
    for example in sorted(EXAMPLES.glob("*.yaml")):
        res = sdnvirt("controller", "--check-config", str(example))
        assert res.returncode == 0, res.stderr
        assert "configuration is valid" in res.stdout


def test_check_config_names_file_key_and_problem(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("tenants:\n  blue:\n    segment: 101\n    subnet: 10.1.0.0/24\n    colour: blue\n")
    res = sdnvirt("controller", "--check-config", str(bad))
    assert res.returncode == 1
    assert f"{bad}: tenants.blue.colour: Extra inputs are not permitted" in res.stderr


def test_the_daemon_refuses_to_start_on_a_bad_config(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("controller:\n  openflow: {port: 70000}\n")
    res = sdnvirt("controller", "--config", str(bad))
    assert res.returncode == 1
    assert "controller.openflow.port" in res.stderr


def test_a_missing_config_file_is_a_clear_error(tmp_path):
    res = sdnvirt("controller", "--config", str(tmp_path / "nope.yaml"))
    assert res.returncode == 1 and "cannot read" in res.stderr


def test_the_daemon_does_not_load_mininet():
    code = "import sys, sdnvirt.cli, sdnvirt.controller.app; sys.exit('mininet' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_sigterm_stops_the_daemon_cleanly(tmp_path):
    import signal
    import socket
    import time
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = tmp_path / "c.yaml"
    # Its own API port and state: never the system's 9303 and /var/lib/sdnvirt.
    cfg.write_text(f"controller:\n  openflow: {{address: 127.0.0.1, port: {port}}}\n"
                   f"  api: {{port: {free_port()}}}\n  metrics: {{port: {free_port()}}}\n  state_dir: {tmp_path}\n")
    proc = subprocess.Popen([sys.executable, "-m", "sdnvirt", "controller", "--config", str(cfg)],
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert "SIGTERM: stopping" in proc.stderr.read()
    finally:
        proc.kill()


def test_check_config_refuses_a_store_it_cannot_read_and_leaves_it_alone(tmp_path):
    store = tmp_path / "sdnvirt.db"
    store.write_bytes(b"not a database\n")
    cfg = tmp_path / "sdnvirt.yaml"
    cfg.write_text(f"controller:\n  store: {{path: {store}}}\ntenants: {{}}\n")
    res = sdnvirt("controller", "--check-config", str(cfg))
    assert res.returncode == 1 and f"cannot read the store {store}" in res.stderr, res
    assert store.read_bytes() == b"not a database\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sdnvirt.db", "sdnvirt.yaml"]


def test_check_config_reads_a_store_of_the_old_layout_without_upgrading_it(tmp_path):
    from test_store_sqlite import old_store

    store = tmp_path / "sdnvirt.db"
    old_store(store)
    before = store.read_bytes()
    cfg = tmp_path / "sdnvirt.yaml"
    cfg.write_text(f"controller:\n  store: {{path: {store}}}\n"
                   "tenants:\n  blue: {segment: 101, subnet: 10.1.0.0/24}\n  red: {segment: 102, subnet: 10.2.0.0/24}\n")
    res = sdnvirt("controller", "--check-config", str(cfg))
    assert res.returncode == 0 and "with 3 changes made through the API" in res.stdout, res
    assert store.read_bytes() == before
