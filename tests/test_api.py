"""The REST API of a real daemon process (no switches needed): auth, status,
health, reload, and what it refuses."""

import copy
import json
import os
import signal
import stat
import subprocess
import sys

import pytest
from fabrics import TWO_TENANTS
from fastapi import HTTPException

from sdnvirt.api.client import ApiError
from sdnvirt.api.errors import apply_change
from sdnvirt.api.token import TokenError, ensure_token, read_token
from sdnvirt.config import load
from sdnvirt.emulation import lab
from sdnvirt.state import ConfigState
from sdnvirt.store import SQLiteStore, Unconfirmed

SERVICE = {"vip": "10.1.0.100", "port": 80, "backends": [{"vm": "web2", "port": 8080, "weight": 2},
                                                          {"vm": "web3", "port": 8080}]}


def tenants_doc():
    doc = copy.deepcopy(TWO_TENANTS)
    doc["tenants"]["blue"]["services"] = {"web": SERVICE}
    return doc


def started(tmp_path_factory, name: str):
    """A daemon of tenants_doc() for a module's tests, stopped after them: a fixture's body."""
    doc = {"controller": {"openflow": {"address": "127.0.0.1", "port": lab.free_port()}}, **tenants_doc()}
    ctl = lab.ControllerProcess(doc, tmp_path_factory.mktemp(name)).start()
    try:
        yield ctl
    finally:
        ctl.stop()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    yield from started(tmp_path_factory, "api")


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
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"controller:\n  openflow: {{address: 127.0.0.1, port: {lab.free_port()}}}\n"
                   f"  api: {{port: {daemon.api_port}}}\n  state_dir: {tmp_path}\n")
    res = subprocess.run([sys.executable, "-m", "sdnvirt", "controller", "--config", str(cfg)],
                         capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert res.returncode == 1
    assert f"cannot listen for the REST API on 127.0.0.1:{daemon.api_port}" in res.stderr


WEB4 = {"mac": "02:00:00:00:01:04", "ip": "10.1.0.14", "host": "leaf2"}


def refused(call, *args):
    with pytest.raises(ApiError) as err:
        call(*args)
    return err.value


def test_vms_are_created_checked_like_the_config_file_replaced_and_deleted(daemon):
    api = daemon.api()
    vm = api.post("/tenants/blue/vms", {"name": "web4", **WEB4})
    assert vm["origin"] == "api" and vm["tenant"] == "blue" and vm["switch"] is None
    err = refused(api.post, "/tenants/blue/vms", {"name": "web4", **WEB4})
    assert err.status == 409
    err = refused(api.post, "/tenants/blue/vms", {"name": "web5", **WEB4, "ip": "10.1.0.15"})
    assert err.status == 422 and err.body["detail"] == [
        {"loc": "tenants.blue.vms.web5.mac", "msg": "MAC 02:00:00:00:01:04 is already used by VM web4"}]
    err = refused(api.post, "/tenants/blue/vms", {"name": "web5", **WEB4, "colour": "red"})
    assert err.status == 422 and err.body["detail"][0]["loc"] == "body.colour"
    assert api.put("/tenants/blue/vms/web4", {**WEB4, "host": "leaf3"})["host"] == "leaf3"
    assert refused(api.put, "/tenants/blue/vms/nope", WEB4).status == 404
    assert refused(api.get, "/tenants/nope/vms").status == 404
    assert {v["name"] for v in api.get("/vms")} == {"web1", "web2", "web3", "web4", "db1", "db2"}
    # web2 is a backend: deleting it would leave the service pointing at nothing.
    err = refused(api.delete, "/tenants/blue/vms/web2")
    assert err.status == 422 and err.body["detail"][0]["loc"] == "tenants.blue.services.web.backends.0.vm"
    api.delete("/tenants/blue/vms/web4")
    assert refused(api.get, "/tenants/blue/vms/web4").status == 404


def test_backends_are_added_drained_undrained_and_removed(daemon):
    api = daemon.api()
    base = "/tenants/blue/services/web/backends"
    added = api.post(base, {"vm": "web1", "port": 8080, "weight": 3})
    assert added["backend"] == "web1:8080" and added["weight"] == 3
    assert refused(api.post, base, {"vm": "web1", "port": 8080}).status == 409
    drained = api.post(f"{base}/web2:8080/drain")
    assert drained["drained"] is True and drained["weight"] == 2 and drained["takes_new_connections"] is False
    assert {b["backend"]: b["drained"] for b in api.get("/health")}["web2:8080"] is True
    assert api.post(f"{base}/web2:8080/undrain")["drained"] is False
    assert api.put(f"{base}/web1:8080", {"vm": "web1", "port": 8080, "weight": 4})["weight"] == 4
    assert refused(api.post, f"{base}/web9:1/drain").status == 404
    api.delete(f"{base}/web1:8080")
    assert [b["backend"] for b in api.get(base)] == ["web2:8080", "web3:8080"]
    # Back to what the file says: the service follows the file again.
    assert api.get("/tenants/blue/services/web")["origin"] == "file"


def test_tenants_and_services_are_created_and_deleted(daemon):
    api = daemon.api()
    green = {"name": "green", "segment": 103, "subnet": "10.3.0.0/24",
             "vms": {"g1": {"mac": "02:00:00:00:03:01", "ip": "10.3.0.11"}}}
    assert api.post("/tenants", green)["origin"] == "api"
    err = refused(api.post, "/tenants", {**green, "name": "green2"})
    assert err.status == 422 and {p["loc"] for p in err.body["detail"]} == {
        "tenants.green2.segment", "tenants.green2.vms.g1", "tenants.green2.vms.g1.mac"}
    svc = api.post("/tenants/green/services", {"name": "dns", "vip": "10.3.0.53", "protocol": "udp", "port": 53,
                                               "backends": [{"vm": "g1", "port": 53}]})
    assert svc["health_check"]["type"] is None and svc["protocol"] == "udp"
    assert [s["name"] for s in api.get("/tenants/green/services")] == ["dns"]
    api.delete("/tenants/green/services/dns")
    api.delete("/tenants/green")
    assert [t["name"] for t in api.get("/tenants")] == ["blue", "red"]
    assert refused(api.delete, "/tenants/green").status == 404


def test_api_changes_survive_kill_9_and_a_changed_file(tmp_path):
    doc = {"controller": {"openflow": {"address": "127.0.0.1", "port": lab.free_port()}}, **tenants_doc()}
    ctl = lab.ControllerProcess(doc, tmp_path).start()
    try:
        api = ctl.api()
        api.post("/tenants/blue/vms", {"name": "web4", **WEB4})
        api.post("/tenants/blue/services/web/backends/web3:8080/drain")
        api.delete("/tenants/red")
        ctl.stop(signal.SIGKILL)
        ctl.start()
        api = ctl.api()
        assert {v["name"] for v in api.get("/vms")} == {"web1", "web2", "web3", "web4"}
        assert {b["backend"]: b["drained"] for b in api.get("/health")} == {"web2:8080": False, "web3:8080": True}
        # The file changes under the API's changes: both count (SIGHUP and POST /v1/reload alike).
        ctl.write_config({**doc, "tenants": {**doc["tenants"], "green": {"segment": 103, "subnet": "10.3.0.0/24"}}})
        ctl.send(signal.SIGHUP)
        assert ctl.wait_event("config_applied", {"source": "file", "tenants": 2, "vms": 4})
        assert [t["name"] for t in api.get("/tenants")] == ["blue", "green"]
        # A file that clashes with them is refused like any bad file.
        clash = copy.deepcopy(doc)
        clash["tenants"]["blue"]["vms"]["web9"] = {**WEB4, "ip": "10.1.0.19"}
        ctl.write_config(clash)
        err = refused(api.post, "/reload")
        assert err.status == 422 and err.body["detail"] == [
            {"loc": "tenants.blue.vms.web4.mac", "msg": "MAC 02:00:00:00:01:04 is already used by VM web9"}]
        assert len(api.get("/vms")) == 4
    finally:
        ctl.stop()


def sdnvirt(daemon, *args, token_file=None, port=None):
    return subprocess.run([sys.executable, "-m", "sdnvirt", *args, "--api", f"http://127.0.0.1:{port or daemon.api_port}",
                           "--token-file", str(token_file or daemon.workdir / "api-token")],
                          capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)


def test_the_cli_shows_tables_for_people_and_json_for_scripts(daemon):
    out = sdnvirt(daemon, "status").stdout
    assert "VMs located 0/5, services 1, backends up 2/2" in out and "SWITCH" in out
    assert json.loads(sdnvirt(daemon, "status", "--json").stdout)["topology"]["switches"] == []
    assert sdnvirt(daemon, "tenants").stdout.split("\n")[1].split() == ["blue", "101", "10.1.0.0/24", "3", "1", "file"]
    assert [v["name"] for v in json.loads(sdnvirt(daemon, "vms", "--json").stdout)] == \
        ["web1", "web2", "web3", "db1", "db2"]
    services = json.loads(sdnvirt(daemon, "services", "--json").stdout)
    assert [b["backend"] for b in services[0]["backends"]] == ["web2:8080", "web3:8080"]
    assert "10.1.0.100:80/tcp" in sdnvirt(daemon, "services").stdout


def test_drain_and_undrain_from_the_cli(daemon):
    res = sdnvirt(daemon, "drain", "blue/web", "web3")
    assert res.returncode == 0 and "web3:8080" in res.stdout and "drained" in res.stdout
    assert {b["backend"]: b["drained"] for b in daemon.api().get("/health")}["web3:8080"] is True
    assert sdnvirt(daemon, "undrain", "blue/web", "web3:8080").returncode == 0
    assert {b["backend"]: b["drained"] for b in daemon.api().get("/health")}["web3:8080"] is False
    res = sdnvirt(daemon, "drain", "blue/web", "db1")
    assert res.returncode == 1 and "has no backend db1" in res.stderr
    res = sdnvirt(daemon, "drain", "green/web", "web3")
    assert res.returncode == 1 and "HTTP 404: no tenant green" in res.stderr


def test_the_cli_says_when_the_daemon_is_not_there_or_the_token_is_wrong(daemon, tmp_path):
    wrong = tmp_path / "token"
    wrong.write_text("not-the-token\n")
    wrong.chmod(0o600)
    res = sdnvirt(daemon, "vms", token_file=wrong)
    assert res.returncode == 1 and "HTTP 401: wrong token" in res.stderr
    res = sdnvirt(daemon, "vms", token_file=tmp_path / "none")
    assert res.returncode == 1 and "cannot read the API token" in res.stderr
    res = sdnvirt(daemon, "services", port=lab.free_port())
    assert res.returncode == 1 and "cannot reach the sdnvirt API" in res.stderr and "Traceback" not in res.stderr


def test_concurrent_changes_are_each_applied_once(daemon):
    from concurrent.futures import ThreadPoolExecutor
    api = daemon.api()
    names = [f"c{i}" for i in range(16)]

    def create(i):
        return api.post("/tenants/red/vms", {"name": names[i], "mac": f"02:00:00:00:09:{i:02x}",
                                             "ip": f"10.1.0.{100 + i}"})["name"]
    with ThreadPoolExecutor(8) as pool:
        assert sorted(pool.map(create, range(16))) == sorted(names)
    assert {v["name"] for v in api.get("/tenants/red/vms")} >= set(names)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda n: api.delete(f"/tenants/red/vms/{n}"), names))
    assert [v["name"] for v in api.get("/tenants/red/vms")] == ["db1", "db2"]


def test_a_daemon_whose_file_clashes_with_the_stored_changes_does_not_start(tmp_path):
    doc = {"controller": {"openflow": {"address": "127.0.0.1", "port": lab.free_port()}}, **tenants_doc()}
    ctl = lab.ControllerProcess(doc, tmp_path).start()
    try:
        ctl.api().post("/tenants/blue/vms", {"name": "web4", **WEB4})
    finally:
        ctl.stop()
    clash = copy.deepcopy(doc)
    clash["tenants"]["red"]["vms"]["db9"] = {**WEB4, "ip": "10.1.0.19"}
    ctl.write_config(clash)
    try:
        with pytest.raises(RuntimeError, match="controller exited with 1") as err:
            ctl.start()
    finally:
        ctl.stop()
    assert "do not fit together" in str(err.value)
    assert "tenants.red.vms.db9.mac: MAC 02:00:00:00:01:04 is already used by VM web4" in str(err.value)
    # --check-config tells before any start or reload, and counts the API's VM in.
    check = [sys.executable, "-m", "sdnvirt", "controller", "--check-config", str(ctl.config_path)]
    res = subprocess.run(check, capture_output=True, text=True, timeout=30)
    assert res.returncode == 1 and "does not fit the changes made through the API" in res.stderr, res
    assert "tenants.red.vms.db9.mac: MAC 02:00:00:00:01:04 is already used by VM web4" in res.stderr
    ctl.write_config(doc)
    res = subprocess.run(check, capture_output=True, text=True, timeout=30)
    vms = sum(len(t["vms"]) for t in doc["tenants"].values()) + 1
    assert res.returncode == 0 and f"{vms} VMs, with 1 change made through the API" in res.stdout, res


def test_a_change_another_process_commits_to_the_store_reaches_the_daemon(tmp_path):
    doc = {"controller": {"openflow": {"address": "127.0.0.1", "port": lab.free_port()}}, **tenants_doc()}
    ctl = lab.ControllerProcess(doc, tmp_path).start()
    try:
        other = ConfigState(ctl.config_path, load(ctl.config_path), SQLiteStore(tmp_path / "sdnvirt.db"))
        other.change(lambda ch: ch.set("vm", "blue/web4", WEB4))
        api = ctl.api()
        assert lab.wait_for(lambda: "web4" in {v["name"] for v in api.get("/tenants/blue/vms")}, 10)
        # The daemon's own changes go on from there: no overwrite, and the other writer's VM stays.
        api.post("/tenants/blue/vms", {"name": "web5", **WEB4, "mac": "02:00:00:00:01:05", "ip": "10.1.0.15"})
        assert {"web4", "web5"} <= {v["name"] for v in api.get("/tenants/blue/vms")}
    finally:
        ctl.stop()


def test_a_daemon_keeps_the_api_changes_of_a_store_written_before_revisions(tmp_path):
    from test_store_sqlite import old_store

    old_store(tmp_path / "sdnvirt.db", {("vm", "blue/web4"): {"spec": WEB4},
                                        ("drain", "blue/web/web3:8080"): {"spec": {"drained": True}}})
    doc = {"controller": {"openflow": {"address": "127.0.0.1", "port": lab.free_port()}}, **tenants_doc()}
    ctl = lab.ControllerProcess(doc, tmp_path).start()
    try:
        api = ctl.api()
        assert "web4" in {v["name"] for v in api.get("/tenants/blue/vms")}
        assert {b["backend"]: b["drained"] for b in api.get("/health")} == {"web2:8080": False, "web3:8080": True}
    finally:
        ctl.stop()


def test_what_the_switches_hold_and_the_trace_commands_refusals(daemon):
    doc = daemon.api().get("/switches/tables")
    assert doc["switches"] == [] and doc["links"] == []
    assert doc["tenants"] == [{"name": "blue", "segment": 101}, {"name": "red", "segment": 102}]
    assert all(vm["dpid"] is None for vm in doc["vms"])
    for args, why in ((("--tenant", "green", "--to", "10.1.0.12"), "no tenant 'green' (tenants: blue, red)"),
                      (("--tenant", "blue", "--to", "10.1.0.12"), "VM web1 is not located"),
                      (("--tenant", "blue", "--to", "10.1.0.300:80"), "bad destination '10.1.0.300:80': '10.1.0.300' is not an IPv4 address")):
        res = sdnvirt(daemon, "trace", "--from", "web1", *args)
        assert res.returncode == 1 and f"sdnvirt trace: {why}" in res.stderr, res.stderr
    res = sdnvirt(daemon, "trace", "--tenant", "blue", "--from", "web1", "--to", "10.1.0.12", port=lab.free_port())
    assert res.returncode == 1 and "cannot reach the sdnvirt API" in res.stderr


def test_a_change_the_store_did_not_confirm_is_a_503_that_says_it_may_still_take_effect():
    class Unsure:
        def change(self, edit):
            raise Unconfirmed("no member answered")

    with pytest.raises(HTTPException) as err:
        apply_change(Unsure(), lambda changes: None)
    assert err.value.status_code == 503 and "may still take effect" in err.value.detail, err.value.detail
