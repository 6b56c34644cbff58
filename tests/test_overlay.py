"""The API's changes laid over the config file: what wins, what a file change does."""

import copy

import pytest
from fabrics import TWO_TENANTS

from sdnvirt import config
from sdnvirt.overlay import Changes, effective, lookup
from sdnvirt.state import ConfigState
from sdnvirt.store import SQLiteStore

WEB = {"vip": "10.1.0.100", "port": 80, "backends": [{"vm": "web1", "port": 8080}, {"vm": "web2", "port": 8080}]}
WEB4 = {"mac": "02:00:00:00:01:04", "ip": "10.1.0.14", "host": None, "memory": 512}


def base(**changes):
    doc = copy.deepcopy(TWO_TENANTS)
    doc["tenants"]["blue"]["services"] = {"web": WEB}
    for path, value in changes.items():
        tenant, key = path.split("__")
        doc["tenants"][tenant][key] = value
    return config.parse(doc).model_dump(mode="json")


def test_an_added_vm_and_a_deleted_one_are_entries_over_the_file():
    ch = Changes(base(), {})
    ch.set("vm", "blue/web4", WEB4)
    ch.set("vm", "red/db2", None)
    assert ch.changed == {("vm", "blue/web4"): {"spec": WEB4}, ("vm", "red/db2"): {"deleted": True}}
    doc = ch.doc()
    assert doc["tenants"]["blue"]["vms"]["web4"] == WEB4 and "db2" not in doc["tenants"]["red"]["vms"]
    config.parse(doc)


def test_setting_an_object_back_to_the_files_version_drops_its_entry():
    b = base()
    ch = Changes(b, {})
    ch.set("vm", "blue/web1", {**b["tenants"]["blue"]["vms"]["web1"], "host": "leaf4"})
    assert ("vm", "blue/web1") in ch.entries
    ch.set("vm", "blue/web1", b["tenants"]["blue"]["vms"]["web1"])
    assert ch.entries == {} and ch.changed == {("vm", "blue/web1"): None}
    # Deleting what the file does not have leaves nothing behind either.
    ch.set("vm", "blue/nope", None)
    assert ch.entries == {}


def test_a_drained_backend_stays_drained_when_the_file_changes_its_service():
    ch = Changes(base(), {})
    ch.set("drain", "blue/web/web2:8080", {"drained": True})
    entries = ch.entries
    newer = base(blue__services={"web": {**WEB, "port": 81}})
    svc = effective(newer, entries)["tenants"]["blue"]["services"]["web"]
    assert svc["port"] == 81 and [b["drained"] for b in svc["backends"]] == [False, True]
    # A drain flag whose backend the file removed applies to nothing.
    gone = base(blue__services={"web": {**WEB, "backends": [{"vm": "web1", "port": 8080}]}})
    config.parse(effective(gone, entries))


def test_replacing_a_tenant_deletes_what_the_body_leaves_out_even_from_the_file():
    b = base()
    ch = Changes(b, {})
    blue = copy.deepcopy(b["tenants"]["blue"])
    blue["vms"] = {"web4": WEB4}
    blue["services"] = {}
    ch.put_tenant("blue", blue)
    doc = ch.doc()
    assert set(doc["tenants"]["blue"]["vms"]) == {"web4"} and doc["tenants"]["blue"]["services"] == {}
    assert ("tenant", "blue") not in ch.entries         # its own keys are the file's
    assert ch.entries[("vm", "blue/web1")] == {"deleted": True}


def test_a_deleted_tenant_created_again_does_not_bring_back_the_files_vms():
    b = base()
    ch = Changes(b, {})
    ch.delete_tenant("red")
    assert "red" not in ch.doc()["tenants"] and ch.entries == {("tenant", "red"): {"deleted": True}}
    red = {**{k: v for k, v in b["tenants"]["red"].items() if k != "vms"}, "vms": {}, "services": {}}
    ch.put_tenant("red", red)
    assert ch.doc()["tenants"]["red"]["vms"] == {}
    config.parse(ch.doc())


def test_a_vm_or_service_underneath_its_entry_is_what_the_whole_document_says():
    # Changes answers this for VMs and services without building the document;
    # the whole document, without the object's own entry, is the definition.
    b = base()
    red = {k: v for k, v in b["tenants"]["red"].items() if k not in ("vms", "services")}
    entries = {("tenant", "blue"): {"spec": {**{k: v for k, v in b["tenants"]["blue"].items()
                                               if k not in ("vms", "services")}, "segment": 301}},
               ("tenant", "red"): {"deleted": True},
               ("tenant", "green"): {"spec": {**red, "segment": 302, "subnet": "10.9.0.0/24"}},
               ("vm", "blue/web1"): {"deleted": True}, ("vm", "blue/web4"): {"spec": WEB4},
               ("vm", "red/db1"): {"spec": WEB4}, ("vm", "green/g1"): {"spec": WEB4},
               ("service", "blue/web"): {"deleted": True},
               ("drain", "blue/web/web2:8080"): {"spec": {"drained": True}}}
    ch = Changes(b, entries)
    keys = {(kind, f"{t}/{name}") for t in ("blue", "red", "green", "gone")
            for kind, children in (("vm", "vms"), ("service", "services"))
            for name in [*b["tenants"].get(t, {}).get(children, {}), "web4", "g1", "db1", "web"]}
    for kind, key in sorted(keys):
        rest = {k: v for k, v in entries.items() if k != (kind, key)}
        assert ch._underneath(kind, key) == lookup(effective(b, rest), kind, key), (kind, key)
    # The drained backend shows underneath the deleted service.
    assert ch._underneath("service", "blue/web")["backends"][1] == {"vm": "web2", "port": 8080, "weight": 1,
                                                                     "drained": True}


def test_state_persists_changes_and_refuses_invalid_ones(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("tenants:\n  blue: {segment: 101, subnet: 10.1.0.0/24}\n")
    store = SQLiteStore(tmp_path / "db")
    applied = []
    state = ConfigState(path, config.load(path), store)
    state.apply = applied.append
    state.change(lambda ch: ch.set("vm", "blue/web4", WEB4))
    with pytest.raises(config.ConfigError, match="tenants.blue.vms.web5.mac: MAC 02:00:00:00:01:04 is already used"):
        state.change(lambda ch: ch.set("vm", "blue/web5", {**WEB4, "ip": "10.1.0.15"}))
    assert len(applied) == 1 and set(state.config.tenants["blue"].vms) == {"web4"}
    store.close()
    # A new process, and a file changed meanwhile: both the file and the change count.
    path.write_text("tenants:\n  blue: {segment: 101, subnet: 10.1.0.0/24}\n  red: {segment: 102, subnet: 10.9.0.0/24}\n")
    again = ConfigState(path, config.load(path), SQLiteStore(tmp_path / "db"))
    assert set(again.config.tenants) == {"blue", "red"} and set(again.config.tenants["blue"].vms) == {"web4"}
    assert again.origin("vm", "blue/web4") == "api" and again.origin("tenant", "blue") == "file"
