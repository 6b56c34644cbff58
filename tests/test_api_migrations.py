"""The migration endpoints of a real daemon process with no switches: what they refuse."""

import json
import subprocess
import sys

import pytest
from fabrics import TWO_TENANTS

from sdnvirt.api.client import ApiError
from sdnvirt.emulation import lab


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    doc = {"controller": {"openflow": {"address": "127.0.0.1", "port": lab.free_port()}}, **TWO_TENANTS}
    ctl = lab.ControllerProcess(doc, tmp_path_factory.mktemp("api-migrations")).start()
    try:
        client = ctl.api()
        client.token_file = ctl.workdir / "api-token"
        yield client
    finally:
        ctl.stop()


@pytest.mark.parametrize("body, status, says", [
    ({"vm": "web1", "target": "leaf2"}, 409, "not located"),
    ({"vm": "nobody", "target": "leaf2"}, 409, "no VM named nobody"),
    ({"vm": "web1", "target": "leaf2", "mode": "warm"}, 422, "mode"),
    ({"vm": "web1"}, 422, "target"),
])
def test_requests_that_cannot_be_carried_out_are_refused(api, body, status, says):
    with pytest.raises(ApiError) as err:
        api.post("/migrations", body)
    assert err.value.status == status and says in str(err.value)
    assert api.get("/migrations") == []


def test_unknown_migrations_and_events(api):
    for call in (lambda: api.get("/migrations/7"),
                 lambda: api.post("/migrations/7/events", {"event": "heartbeat"})):
        with pytest.raises(ApiError) as err:
            call()
        assert err.value.status == 404
    with pytest.raises(ApiError) as err:
        api.post("/migrations/7/events", {"event": "teleported"})
    assert err.value.status == 422


def _cli(api, *args):
    token = api.token_file
    return subprocess.run([sys.executable, "-m", "sdnvirt", *args, "--api", api.url, "--token-file", str(token)],
                          capture_output=True, text=True, timeout=30)


def test_the_cli_commands_are_clients_of_the_api(api):
    res = _cli(api, "migrate", "web1", "--to", "leaf2")
    assert res.returncode == 1 and "HTTP 409" in res.stderr and "not located" in res.stderr
    res = _cli(api, "migrations", "--json")
    assert res.returncode == 0 and json.loads(res.stdout) == []
    res = _cli(api, "migrations")
    assert res.returncode == 0 and res.stdout.split()[:3] == ["ID", "VM", "MODE"]
