"""Security groups through the REST API of a real daemon (no switches needed): CRUD, membership through
the VM, the config file's validation with the key at fault named, kept in the store across a restart."""

import copy
import signal

import pytest
from fabrics import TWO_TENANTS
from test_api import refused

from sdnvirt.emulation import lab

BASE = "/tenants/blue/security-groups"
WEB = {"rules": [{"direction": "ingress", "protocol": "tcp", "port": "8000-8099", "remote_group": "admin"},
                 {"direction": "egress"}]}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    doc = {"controller": {"openflow": {"address": "127.0.0.1", "port": lab.free_port()}},
           **copy.deepcopy(TWO_TENANTS)}
    doc["tenants"]["blue"]["security_groups"] = {"admin": {"rules": [{"direction": "egress"}]}}
    ctl = lab.ControllerProcess(doc, tmp_path_factory.mktemp("api-sg")).start()
    try:
        yield ctl
    finally:
        ctl.stop()


def test_a_group_is_created_joined_through_its_vms_replaced_and_deleted(daemon):
    api = daemon.api()
    created = api.post(BASE, {"name": "web", **WEB})
    assert created["origin"] == "api" and created["members"] == [] and created["rules"][0]["port"] == "8000-8099"
    assert refused(api.post, BASE, {"name": "web", **WEB}).status == 409
    vm = api.get("/tenants/blue/vms/web2")
    body = {k: vm[k] for k in ("mac", "ip", "host", "memory")}
    assert api.put("/tenants/blue/vms/web2", {**body, "security_groups": ["web"]})["security_groups"] == ["web"]
    assert api.get(f"{BASE}/web")["members"] == ["web2"]
    assert [g["name"] for g in api.get(BASE)] == ["admin", "web"]
    replaced = api.put(f"{BASE}/web", {"rules": [{"direction": "ingress", "protocol": "icmp"}]})
    assert replaced["rules"] == [{"direction": "ingress", "protocol": "icmp", "port": None, "remote_ip": None,
                                  "remote_group": None}]
    # A VM still lists it: deleting it would leave web2 naming nothing.
    err = refused(api.delete, f"{BASE}/web")
    assert err.status == 422 and err.body["detail"][0]["loc"] == "tenants.blue.vms.web2.security_groups.0"
    api.put("/tenants/blue/vms/web2", body)
    api.delete(f"{BASE}/web")
    assert refused(api.get, f"{BASE}/web").status == 404
    assert refused(api.get, "/tenants/nope/security-groups").status == 404


@pytest.mark.parametrize("rule, loc", [
    ({"direction": "ingress", "remote_group": "nope"}, "tenants.blue.security_groups.bad.rules.0.remote_group"),
    ({"direction": "ingress", "protocol": "tcp", "port": "90-80"}, "body.rules.0.port"),
    ({"direction": "ingress", "protocol": "sctp"}, "body.rules.0.protocol"),
    ({"direction": "sideways"}, "body.rules.0.direction"),
    ({"direction": "ingress", "protocol": "icmp", "port": 7}, "body.rules.0"),
])
def test_a_bad_rule_is_refused_with_its_key(daemon, rule, loc):
    err = refused(daemon.api().post, BASE, {"name": "bad", "rules": [rule]})
    assert err.status == 422 and [p["loc"] for p in err.body["detail"]] == [loc], err.body


def test_a_vm_naming_an_unknown_group_is_refused_with_its_key(daemon):
    api = daemon.api()
    vm = api.get("/tenants/blue/vms/web1")
    err = refused(api.put, "/tenants/blue/vms/web1", {**{k: vm[k] for k in ("mac", "ip", "host", "memory")},
                                                       "security_groups": ["nope"]})
    assert err.status == 422 and err.body["detail"][0]["loc"] == "tenants.blue.vms.web1.security_groups.0"


def test_groups_the_api_made_survive_a_restart(daemon):
    api = daemon.api()
    api.post(BASE, {"name": "kept", **WEB})
    daemon.stop(signal.SIGKILL)
    daemon.start()
    assert daemon.api().get(f"{BASE}/kept")["origin"] == "api"
    daemon.api().delete(f"{BASE}/kept")
