"""The REST API of a real daemon process (no switches needed): auth, status,
health, reload, and what it refuses."""

import copy
import os
import stat

import pytest
from fabrics import TWO_TENANTS

from sdnvirt.api.client import ApiError
from sdnvirt.api.token import TokenError, ensure_token, read_token
from sdnvirt.emulation import lab

SERVICE = {"vip": "10.1.0.100", "port": 80, "backends": [{"vm": "web2", "port": 8080, "weight": 2},
                                                          {"vm": "web3", "port": 8080}]}


def tenants_doc():
    doc = copy.deepcopy(TWO_TENANTS)
    doc["tenants"]["blue"]["services"] = {"web": SERVICE}
    return doc


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    doc = {"controller": {"openflow": {"address": "127.0.0.1", "port": lab.free_port()}}, **tenants_doc()}
    ctl = lab.ControllerProcess(doc, tmp_path_factory.mktemp("api")).start()
    try:
        yield ctl
    finally:
        ctl.stop()


def test_every_call_needs_the_token(daemon):
    for token in ("", "wrong-token"):
        for method, path in (("GET", "/status"), ("GET", "/openapi.json"), ("POST", "/reload"),
                             ("GET", "/topology"), ("GET", "/health")):
            with pytest.raises(ApiError) as err:
                daemon.api(token).call(method, path)
            assert err.value.status == 401, (method, path)
            assert isinstance(err.value.body["detail"], str)
    assert daemon.api().get("/status")["vms"] == 5


def test_the_token_file_is_private_and_kept_across_restarts(daemon):
    path = daemon.workdir / "api-token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ensure_token(path) == read_token(path)


def test_a_token_file_others_can_read_is_refused(tmp_path):
    path = tmp_path / "token"
    first = ensure_token(path)
    assert ensure_token(path) == first and len(first) >= 32
    os.chmod(path, 0o644)
    with pytest.raises(TokenError, match="readable by others"):
        ensure_token(path)


def test_status_topology_and_backend_health(daemon):
    api = daemon.api()
    status = api.get("/status")
    assert status["version"] and status["services"] == 1 and status["backends"] == 2
    assert status["vms_located"] == 0 and status["switches"] == 0
    assert {vm["name"] for vm in api.get("/topology")["vms"]} == {"web1", "web2", "web3", "db1", "db2"}
    health = {b["backend"]: b for b in api.get("/health")}
    assert set(health) == {"web2:8080", "web3:8080"}
    # Not plugged in anywhere yet: healthy until probed, but no new connections.
    assert health["web2:8080"]["weight"] == 2 and health["web2:8080"]["takes_new_connections"] is False


def test_reload_says_whether_the_file_was_valid(daemon):
    good = daemon.config_path.read_text()
    try:
        daemon.config_path.write_text(good.replace("segment: 102", "segment: 101"))
        with pytest.raises(ApiError) as err:
            daemon.api().post("/reload")
        assert err.value.status == 422
        assert {"loc": "tenants.red.segment", "msg": "segment 101 is already used by tenant blue"} \
            in err.value.body["detail"]
        daemon.config_path.write_text(good.replace("weight: 2", "weight: 3"))
        assert daemon.api().post("/reload") == {"tenants": 2, "vms": 5}
        assert {b["backend"]: b["weight"] for b in daemon.api().get("/health")}["web2:8080"] == 3
    finally:
        daemon.config_path.write_text(good)
        daemon.api().post("/reload")


def test_unknown_paths_and_methods_are_4xx_with_json(daemon):
    for method, path, code in (("GET", "/nope", 404), ("DELETE", "/status", 405)):
        with pytest.raises(ApiError) as err:
            daemon.api().call(method, path)
        assert err.value.status == code and "detail" in err.value.body


def test_the_daemon_will_not_start_when_the_api_port_is_taken(daemon, tmp_path):
    import subprocess
    import sys
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"controller:\n  openflow: {{address: 127.0.0.1, port: {lab.free_port()}}}\n"
                   f"  api: {{port: {daemon.api_port}}}\n  state_dir: {tmp_path}\n")
    res = subprocess.run([sys.executable, "-m", "sdnvirt", "controller", "--config", str(cfg)],
                         capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert res.returncode == 1
    assert f"cannot listen for the REST API on 127.0.0.1:{daemon.api_port}" in res.stderr
