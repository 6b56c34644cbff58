"""GET /v1/events of a real daemon process with no switches: cursors, kinds, long polls, the CLI."""

import json
import subprocess
import sys
import threading
import time

import pytest
from test_api import started

from sdnvirt.api.client import ApiError


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    yield from started(tmp_path_factory, "api-events")


def test_config_changes_are_events_after_the_cursor(daemon):
    api = daemon.api()
    cursor = api.events()["last"]
    api.post("/reload")
    api.post("/tenants/blue/services/web/backends/web3:8080/drain")
    good = daemon.config_path.read_text()
    try:
        daemon.config_path.write_text(good.replace("segment: 102", "segment: 101"))
        with pytest.raises(ApiError):
            api.post("/reload")
    finally:
        daemon.config_path.write_text(good)
        api.post("/tenants/blue/services/web/backends/web3:8080/undrain")
    page = api.events(cursor)
    assert not page["missed"] and page["last"] == page["events"][-1]["id"]
    assert [(e["kind"], e["fields"].get("source")) for e in page["events"]] == [
        ("config_applied", "file"), ("config_applied", "api"), ("config_reload_failed", None),
        ("config_applied", "api")]
    assert page["events"][0]["fields"] == {"source": "file", "tenants": 2, "vms": 5}
    assert "tenants.red.segment" in page["events"][2]["fields"]["error"]
    ids = [e["id"] for e in page["events"]]
    assert ids == sorted(ids) and ids[0] > cursor
    assert all(abs(e["time"] - time.time()) < 60 for e in page["events"])
    only = api.events(cursor, kinds=["config_reload_failed"])
    assert [e["id"] for e in only["events"]] == [ids[2]] and only["last"] == page["last"]


def test_a_long_poll_returns_when_an_event_comes(daemon):
    api = daemon.api()
    cursor = api.events()["last"]
    started = time.monotonic()
    assert api.events(cursor, wait=0.3)["events"] == []
    assert time.monotonic() - started >= 0.3
    threading.Timer(0.3, lambda: api.post("/reload")).start()
    started = time.monotonic()
    page = api.events(cursor, kinds=["config_applied"], wait=20)
    assert [e["kind"] for e in page["events"]] == ["config_applied"] and time.monotonic() - started < 10


def test_a_cursor_older_than_what_the_daemon_keeps_is_told_it_missed_some(daemon):
    api = daemon.api()
    api.post("/reload")
    page = api.events(1)
    assert page["missed"] and page["events"] and page["events"][0]["id"] == page["oldest"]
    assert not api.events(page["last"])["missed"]


def test_what_it_refuses(daemon):
    for query in ("kind=nonsense", "after=-1", "wait=-1"):
        with pytest.raises(ApiError) as err:
            daemon.api().get(f"/events?{query}")
        assert err.value.status == 422, query
    with pytest.raises(ApiError) as err:
        daemon.api("wrong-token").events()
    assert err.value.status == 401


def test_the_cli_prints_json_lines(daemon):
    api = daemon.api()
    cursor = api.events()["last"]
    api.post("/reload")
    res = subprocess.run([sys.executable, "-m", "sdnvirt", "events", "--after", str(cursor), "--kind",
                          "config_applied", "--api", api.url, "--token-file", str(daemon.workdir / "api-token")],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    events = [json.loads(line) for line in res.stdout.splitlines()]
    assert [e["kind"] for e in events] == ["config_applied"] and events[0]["id"] > cursor


def test_the_lab_waits_on_events_and_reads_metrics(daemon):
    cursor = daemon.cursor()
    threading.Timer(0.3, lambda: daemon.api().post("/reload")).start()
    hit = daemon.wait_event("config_applied", lambda f: f["source"] == "file", after=cursor, timeout=10)
    assert hit and hit["id"] > cursor
    assert daemon.events("config_applied", {"source": "file"}, after=cursor) == [hit]
    assert daemon.wait_event("config_applied", {"source": "api"}, after=hit["id"], timeout=0.3) is None
    with pytest.raises(RuntimeError, match="gone"):
        daemon.events(after=1)
    assert daemon.metric("sdnvirt_handler_errors_total", handler="api") == 0
    with pytest.raises(KeyError):
        daemon.metric("sdnvirt_no_such_metric")
