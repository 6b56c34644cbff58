"""Tenant tokens on a real daemon process (no switches needed): every route of
the OpenAPI document called with the admin token, a token of the route's
tenant, another tenant's and none; issuing and revoking tokens."""

import json
import sqlite3
from urllib.parse import quote

import pytest
from fastapi import HTTPException
from test_api import started
from test_cli import sdnvirt

from sdnvirt.api import audit
from sdnvirt.api.access import ELSEWHERE, FILTERED, OPERATOR_ONLY
from sdnvirt.api.client import ApiError
from sdnvirt.api.credentials import ADMIN, Principal
from sdnvirt.api.migrations import get_migration, list_migrations
from sdnvirt.store import SQLiteStore

# Path parameters of the walk: objects of tenant blue that exist, so that a
# refusal cannot hide behind a 404 of the object itself.
EXISTING = {"tenant": "blue", "vm": "web1", "service": "web", "backend": "web2:8080", "group": "web", "mid": "1",
            "token_id": "0123456789ab"}
BLUE = ("blue", "web1", "web2", "web3", '"web"')
RED = ("red", "db1", "db2")


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    yield from started(tmp_path_factory, "api-access")


def issue(daemon, tenant: str) -> str:
    return daemon.api().post("/tokens", {"tenant": tenant, "description": "test"})["token"]


def call(client, method: str, path: str, body=None) -> tuple[int, object]:
    try:
        return 200, client.call(method, path, body)
    except ApiError as err:
        return err.status, err.body


def routes(daemon):
    spec = daemon.api().get("/openapi.json")
    for template, item in spec["paths"].items():
        for method, op in item.items():
            yield method.upper(), template, op["operationId"], "requestBody" in op


def path_of(template: str, gone: bool = False) -> str:
    """``template`` with EXISTING's objects; ``gone``: the last one made absent.

    Deleting for real would take the objects from the routes walked after:
    the callers who may delete are shown to reach the handler by its 404 for
    an object that is not there."""
    last = template.rpartition("{")[2].rstrip("}")
    for key, value in EXISTING.items():
        value = "nosuch" + value[-2:] if gone and key == last else value
        template = template.replace("{" + key + "}", quote(value, safe=":"))
    return template.removeprefix("/v1")


def test_every_route_answers_each_kind_of_token_by_the_rule(daemon):
    admin, blue, red = daemon.api(), daemon.api(issue(daemon, "blue")), daemon.api(issue(daemon, "red"))
    nobody = daemon.api("")
    admin.post("/tenants/blue/security-groups", {"name": "web", "rules": [{"direction": "egress"}]})
    walked = set()
    for method, template, name, has_body in routes(daemon):
        walked.add(name)
        body = {} if has_body else None
        path = path_of(template)
        # A tenant token never reaches delete_tenant (OPERATOR_ONLY): blue itself is safe from it.
        gone = path_of(template, gone=method == "DELETE")
        where = f"{method} {template}"
        assert call(nobody, method, path, body)[0] == 401, where

        # Another tenant's token: blue's objects do not exist for it, the fabric is not its.
        blue_before = admin.get("/tenants/blue")
        code, answer = call(red, method, path, body)
        assert admin.get("/tenants/blue") == blue_before, where
        if "{tenant}" in template:
            assert (code, answer) == (404, {"detail": "no tenant blue"}), where
        elif name in FILTERED:
            # 404: no such migration (there are none without switches: test_a_migration_is_its_tenants)
            assert code in (200, 404) and not any(word in json.dumps(answer) for word in BLUE), (where, answer)
        else:
            assert code == 403, (where, code, answer)

        # The route's own tenant: reaches the handler (its 2xx, 404 of an object, 422 of a body).
        code, answer = call(blue, method, path if name in OPERATOR_ONLY else gone, body)
        if name in OPERATOR_ONLY or ("{tenant}" not in template and name not in FILTERED):
            assert code == 403, (where, code, answer)
        else:
            assert code not in (401, 403) and answer != {"detail": "no tenant blue"}, (where, code, answer)
            if code == 200 and "{tenant}" not in template:
                assert not any(word in json.dumps(answer) for word in RED), (where, answer)

        code, answer = call(admin, method, gone, body)
        assert code not in (401, 403), (where, code, answer)
    assert {"get_vm", "create_service", "drain", "get_topology", "reload", "create_token", "list_events"} <= walked


def test_another_tenant_is_answered_as_one_that_does_not_exist(daemon):
    red = daemon.api(issue(daemon, "red"))
    for path in ("/tenants/{}", "/tenants/{}/vms", "/tenants/{}/services/web"):
        assert call(red, "GET", path.format("blue"))[1] == {"detail": "no tenant blue"}
        assert call(daemon.api(), "GET", path.format("gone"))[1] == {"detail": "no tenant gone"}
    assert [t["name"] for t in red.get("/tenants")] == ["red"]
    assert {v["name"] for v in red.get("/vms")} == {"db1", "db2"}


def test_a_change_refused_for_another_tenants_vm_does_not_name_it(daemon):
    """db1 is red's, and its MAC: blue is told they are taken, not by whom."""
    blue = daemon.api(issue(daemon, "blue"))
    for vm in ({"name": "db1", "mac": "02:00:00:00:01:09", "ip": "10.1.0.19"},
               {"name": "web9", "mac": "02:00:00:00:02:01", "ip": "10.1.0.19"}):
        code, answer = call(blue, "POST", "/tenants/blue/vms", vm)
        assert (code, answer) == (422, {"detail": [{"loc": "tenants.blue", "msg": ELSEWHERE}]})
        assert not any(word in json.dumps(answer) for word in RED), answer
    code, answer = call(blue, "POST", "/tenants/blue/vms", {"name": "web9", "mac": "02:00:00:00:01:09",
                                                            "ip": "10.2.0.1"})
    assert code == 422 and answer["detail"] == [{"loc": "tenants.blue.vms.web9.ip",
                                                 "msg": "10.2.0.1 is outside the tenant subnet 10.1.0.0/24"}]
    code, answer = call(daemon.api(), "POST", "/tenants/blue/vms", {"name": "db1", "mac": "02:00:00:00:01:09",
                                                                    "ip": "10.1.0.19"})
    assert code == 422 and "red" in json.dumps(answer)


def test_a_token_is_shown_once_kept_hashed_and_revoked(daemon):
    admin = daemon.api()
    made = admin.post("/tokens", {"tenant": "red", "description": "ci of team red"})
    tid, _, secret = made["token"].partition(".")
    assert tid == made["id"] and len(secret) >= 40 and made["tenant"] == "red"
    listed = [t for t in admin.get("/tokens") if t["id"] == tid]
    assert listed == [{"id": tid, "tenant": "red", "description": "ci of team red", "created": made["created"]}]
    stored = b"".join(str(row).encode() for row in sqlite3.connect(daemon.workdir / "sdnvirt.db").iterdump())
    assert tid.encode() in stored and secret.encode() not in stored

    client = daemon.api(made["token"])
    assert client.get("/tenants/red")["name"] == "red"
    assert call(daemon.api(f"{tid}.{secret[:-1]}x"), "GET", "/tenants/red")[0] == 401
    admin.delete(f"/tokens/{tid}")
    assert call(client, "GET", "/tenants/red")[0] == 401
    assert call(admin, "DELETE", f"/tokens/{tid}")[0] == 404
    assert tid not in {t["id"] for t in admin.get("/tokens")}


def test_a_token_for_a_tenant_that_does_not_exist_is_refused(daemon):
    code, answer = call(daemon.api(), "POST", "/tokens", {"tenant": "gone"})
    assert code == 422 and answer["detail"][0]["loc"] == "tenant"


def test_a_migration_is_its_tenants():
    record = {"id": 1, "tenant": "blue", "vm": "web1"}

    class Controller:
        def migration_records(self):
            return [record, {**record, "id": 2, "tenant": "red"}]

        def migration_record(self, mid):
            return record if mid == 1 else None
    assert get_migration(1, Controller(), Principal("0123456789ab", "blue")) == record
    assert [r["id"] for r in list_migrations(Controller(), Principal("0123456789ab", "red"))] == [2]
    assert len(list_migrations(Controller(), ADMIN)) == 2
    with pytest.raises(HTTPException) as err:
        get_migration(1, Controller(), Principal("0123456789ab", "red"))
    assert err.value.status_code == 403


def test_every_change_is_audited_with_the_tokens_id_never_the_token(daemon):
    admin = daemon.api()
    before = admin.get("/audit?limit=1")
    cursor = before[-1]["id"] if before else 0
    made = admin.post("/tokens", {"tenant": "blue"})
    blue = daemon.api(made["token"])
    blue.post("/tenants/blue/services/web/backends/web3:8080/drain")
    blue.post("/tenants/blue/services/web/backends/web3:8080/undrain")
    call(blue, "POST", "/reload")
    call(daemon.api("wrong"), "DELETE", "/tenants/blue")
    call(admin, "POST", "/migrations/1/events", {"event": "heartbeat"})
    blue.get("/tenants/blue")
    trail = admin.get(f"/audit?after={cursor}")
    assert [(r["token"], r["tenant"], r["method"], r["path"], r["status"]) for r in trail] == [
        ("admin", None, "POST", "/v1/tokens", 201),
        (made["id"], "blue", "POST", "/v1/tenants/blue/services/web/backends/web3:8080/drain", 200),
        (made["id"], "blue", "POST", "/v1/tenants/blue/services/web/backends/web3:8080/undrain", 200),
        (made["id"], "blue", "POST", "/v1/reload", 403)]
    assert [r["id"] for r in trail] == list(range(cursor + 1, cursor + 5))
    assert made["token"].partition(".")[2] not in json.dumps(admin.get("/audit?limit=1000"))
    assert call(blue, "GET", "/audit")[0] == 403


def test_the_trail_keeps_the_last_records_only(tmp_path):
    store = SQLiteStore(tmp_path / "store.db")
    who = Principal("0123456789ab", "blue")
    for n in range(7):
        audit.record(store, 5, who, "DELETE", f"/v1/tenants/blue/vms/vm{n}", 204)
    assert [r["path"][-3:] for r in audit.records(store, None, 100)] == ["vm2", "vm3", "vm4", "vm5", "vm6"]
    assert [r["id"] for r in audit.records(store, 3, 2)] == [4, 5]
    audit.prune(store, 2)
    assert [r["id"] for r in audit.records(store, None, 100)] == [6, 7]


def test_the_operator_issues_lists_and_revokes_tokens_with_the_cli(daemon, tmp_path):
    where = ["--api", f"http://127.0.0.1:{daemon.api_port}"]
    admin = [*where, "--token-file", str(daemon.workdir / "api-token")]
    made = sdnvirt("token", "create", "--tenant", "red", "--description", "team red", *admin)
    assert made.returncode == 0 and "shown this once" in made.stderr, made.stderr
    token_file = tmp_path / "red.token"
    token_file.write_text(made.stdout)
    token_file.chmod(0o600)
    tid = made.stdout.strip().partition(".")[0]
    assert tid in sdnvirt("token", "list", *admin).stdout
    tenants = sdnvirt("tenants", "--json", *where, "--token-file", str(token_file))
    assert [t["name"] for t in json.loads(tenants.stdout)] == ["red"], tenants.stderr
    refused = sdnvirt("token", "list", *where, "--token-file", str(token_file))
    assert refused.returncode == 1 and "HTTP 403" in refused.stderr
    assert sdnvirt("token", "revoke", tid, *admin).returncode == 0
    assert sdnvirt("tenants", *where, "--token-file", str(token_file)).returncode == 1
    trail = json.loads(sdnvirt("audit", "--json", "--limit", "2", *admin).stdout)
    assert [(r["method"], r["path"], r["status"]) for r in trail] == [
        ("POST", "/v1/tokens", 201), ("DELETE", f"/v1/tokens/{tid}", 204)]
