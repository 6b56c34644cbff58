"""Load-balanced services: their config, and the flows and groups planned for them."""

import copy
from collections import Counter

import pytest
from fabrics import TWO_TENANTS, leafspine, placed_model

from sdnvirt import config
from sdnvirt.config import ConfigError, virtual_mac
from sdnvirt.plan.features.load_balancer import MAGLEV_SLOTS
from sdnvirt.plan.owners import service_cookie
from sdnvirt.plan.pipeline import plan
from sdnvirt.plan.tables import MeterId, Table

WEB = {"vip": "10.1.0.100", "protocol": "tcp", "port": 80,
       "backends": [{"vm": "web2", "port": 8080, "weight": 2}, {"vm": "web3", "port": 8080}],
       "health_check": {"type": "tcp", "interval": 0.2, "timeout": 0.2, "rise": 2, "fall": 2}}


def doc_with(services_blue=None, services_red=None, **blue_extra):
    doc = copy.deepcopy(TWO_TENANTS)
    doc["tenants"]["blue"]["services"] = services_blue if services_blue is not None else {"web": WEB}
    if services_red is not None:
        doc["tenants"]["red"]["services"] = services_red
    doc["tenants"]["blue"].update(blue_extra)
    return doc


def problems(doc):
    with pytest.raises(ConfigError) as err:
        config.parse(doc, "f.yaml")
    return str(err.value)


# -- config -------------------------------------------------------------------------

def test_a_service_config_loads_with_defaults():
    cfg = config.parse(doc_with({"dns": {"vip": "10.1.0.53", "protocol": "udp", "port": 53,
                                         "backends": [{"vm": "web1", "port": 53}]}}))
    svc = cfg.tenants["blue"].services["dns"]
    assert svc.on_empty == "reject" and svc.backends[0].weight == 1 and svc.health_check.rise == 2
    assert str(cfg.tenants["blue"].probe_ip) == "10.1.0.254"


@pytest.mark.parametrize("change,where,what", [
    ({"vip": "10.2.0.1"}, "tenants.blue.services.web.vip", "outside the tenant subnet"),
    ({"vip": "10.1.0.12"}, "tenants.blue.services.web.vip", "already used by VM web2"),
    ({"vip": "10.1.0.254"}, "tenants.blue.services.web.vip", "the service address"),
    ({"backends": [{"vm": "db1", "port": 80}]}, "tenants.blue.services.web.backends.0.vm", "not a VM of this tenant"),
    ({"backends": [{"vm": "web2", "port": 80}, {"vm": "web2", "port": 80}]}, "tenants.blue.services.web.backends.1",
     "listed twice"),
    ({"health_check": {"interval": 0.1, "timeout": 0.5}}, "tenants.blue.services.web.health_check.timeout",
     "must not exceed interval"),
    ({"health_check": {"type": "udp"}}, "tenants.blue.services.web.health_check.type", "not udp"),
    ({"protocol": "udp", "health_check": {"type": "http"}}, "tenants.blue.services.web.health_check.type",
     "checked by udp or icmp, not http"),
    ({"health_check": {"type": "tcp", "path": "/x"}}, "tenants.blue.services.web.health_check.path",
     "applies to type http only"),
    ({"health_check": {"type": "http", "path": "no-slash"}}, "tenants.blue.services.web.health_check.path",
     "should match pattern"),
    ({"port": 0}, "tenants.blue.services.web.port", "greater than or equal to 1"),
    ({"protocol": "sctp"}, "tenants.blue.services.web.protocol", "'tcp' or 'udp'"),
    ({"on_empty": "blackhole"}, "tenants.blue.services.web.on_empty", "'reject' or 'drop'"),
    ({"backends": [{"vm": "web2", "port": 80, "weight": -1}]}, "tenants.blue.services.web.backends.0.weight",
     "greater than or equal to 0"),
])
def test_bad_services_are_rejected_with_their_key_path(change, where, what):
    msg = problems(doc_with({"web": {**WEB, **change}}))
    assert f"f.yaml: {where}:" in msg and what in msg, msg


def test_two_services_cannot_listen_on_the_same_vip_and_port():
    msg = problems(doc_with({"a": WEB, "b": WEB}))
    assert "tenants.blue.services.b" in msg and "is already service a" in msg


def test_the_same_vip_on_another_port_is_another_service():
    config.parse(doc_with({"a": WEB, "b": {**WEB, "port": 443}}))


def test_the_same_vip_in_two_tenants_is_fine():
    red = {"web": {**WEB, "backends": [{"vm": "db2", "port": 8080}]}}
    config.parse(doc_with(services_red=red))


def test_the_service_address_may_be_set_and_must_be_free():
    assert "already used by VM web1" in problems(doc_with(service_address="10.1.0.11"))
    cfg = config.parse(doc_with(service_address="10.1.0.250"))
    assert str(cfg.tenants["blue"].probe_ip) == "10.1.0.250"


def test_vm_macs_cannot_take_sdnvirt_virtual_macs():
    doc = doc_with()
    doc["tenants"]["blue"]["vms"]["web1"]["mac"] = virtual_mac(config.parse(TWO_TENANTS).tenants["blue"].subnet[5])
    assert "sdnvirt's own" in problems(doc)


# -- plan ---------------------------------------------------------------------------

def planned(doc=None, health=None):
    model = placed_model(doc or doc_with())
    for key, up in (health or {}).items():
        model.health[key].up = up
    return model, plan(model, leafspine())


def bucket_target(bucket):
    """The backend (ip, port) of a bucket: its one action is ct(commit, nat(dst=ip:port))."""
    [(_, _, _, _, (_, ip, port))] = bucket
    return ip, port


def groups_of(p, dpid):
    return p.groups[dpid]


def test_new_connections_to_a_vip_go_to_a_maglev_group_shared_by_weight():
    model, p = planned()
    [group] = groups_of(p, 0x101).values()
    assert len(group.buckets) == MAGLEV_SLOTS
    share = Counter(bucket_target(b)[0] for b in group.buckets)
    assert abs(share["10.1.0.12"] / MAGLEV_SLOTS - 2 / 3) < 0.02
    for bucket in group.buckets:
        # One action: commit with the translation; table 4 then sets the MAC.
        [(verb, commit, zone, table, nat)] = bucket
        assert (verb, commit, zone, table) == ("ct", 1, 101, Table.LB)
        assert nat in (("dnat", "10.1.0.12", 8080), ("dnat", "10.1.0.13", 8080))


def test_the_service_is_on_every_switch_where_its_tenant_has_a_vm_and_nowhere_else():
    model, p = planned()
    blue_switches = {loc.dpid for n, loc in model.locations.items() if model.vm(n).tenant == "blue"}
    for dpid, flows in p.flows.items():
        has = any(f.cookie == service_cookie(model.services()[0]) for f in flows)
        assert has == (dpid in blue_switches), hex(dpid)
        assert bool(p.groups[dpid]) == (dpid in blue_switches)


def test_with_a_group_every_packet_to_the_vip_takes_one_conntrack_pass_through_it():
    model, p = planned()
    [group] = groups_of(p, 0x101).values()
    [listener] = [f for f in p.flows[0x101] if f.table == Table.SERVICES and f.priority == 100]
    assert listener.instructions == (("apply", (("group", group.group_id),)),)
    assert not [f for f in p.flows[0x101] if f.table == Table.LB and f.priority == 100]


def test_a_down_backend_gets_no_new_connections():
    model, p = planned(health={("blue", "web", "web2:8080"): False})
    [group] = groups_of(p, 0x101).values()
    assert {bucket_target(b)[0] for b in group.buckets} == {"10.1.0.13"}


def test_a_drained_backend_gets_no_new_connections_but_keeps_its_own():
    doc = doc_with({"web": {**WEB, "backends": [{"vm": "web2", "port": 8080, "weight": 0},
                                               {"vm": "web3", "port": 8080}]}})
    model, p = planned(doc)
    [group] = groups_of(p, 0x101).values()
    assert {bucket_target(b)[0] for b in group.buckets} == {"10.1.0.13"}
    ongoing = [f for f in p.flows[0x101] if f.table == Table.LB and f.priority == 90]
    assert {f.match_dict["ipv4_dst"] for f in ongoing} == {"10.1.0.12", "10.1.0.13"}


@pytest.mark.parametrize("on_empty", ["reject", "drop"])
def test_with_no_backend_left_on_empty_decides(on_empty):
    doc = doc_with({"web": {**WEB, "on_empty": on_empty}})
    model, p = planned(doc, {("blue", "web", "web2:8080"): False, ("blue", "web", "web3:8080"): False})
    assert p.groups[0x101] == {}
    [new] = [f for f in p.flows[0x101] if f.table == Table.LB and f.priority == 100]
    if on_empty == "reject":
        assert new.instructions[0] == ("meter", MeterId.SERVICE)
        assert new.instructions[1][1][0][0] == "controller"
    else:
        assert new.instructions == ()


def test_an_unplugged_backend_is_out_of_the_group_at_once():
    model, p = planned()
    del model.locations["web3"]
    p = plan(model, leafspine())
    [group] = p.groups[0x101].values()
    assert {bucket_target(b)[0] for b in group.buckets} == {"10.1.0.12"}


def test_a_backend_on_a_disconnected_switch_takes_no_new_connections():
    model = placed_model(doc_with())
    fab = leafspine()
    fab.remove_switch(0x102)            # web2's leaf
    [group] = plan(model, fab).groups[0x101].values()
    assert {bucket_target(b)[0] for b in group.buckets} == {"10.1.0.13"}
    assert model.backends_down("web2", "its switch disconnected")
    assert not model.health[("blue", "web", "web2:8080")].up


def test_the_vip_and_the_probe_address_are_answered_by_arp():
    model, p = planned()
    answers = {f.match_dict["arp_tpa"]: f for f in p.flows[0x101] if f.table == Table.ARP
               and f.match_dict.get("metadata") == 101}
    assert {"10.1.0.100", "10.1.0.254"} <= set(answers)
    assert ("set", "eth_src", virtual_mac(model.services()[0].vip)) in answers["10.1.0.100"].instructions[0][1]


def test_the_same_vip_in_two_tenants_is_two_services():
    red = {"web": {**WEB, "backends": [{"vm": "db2", "port": 8080}]}}
    model, p = planned(doc_with(services_red=red))
    groups = p.groups[0x101]
    assert len(groups) == 2
    targets = {frozenset(bucket_target(b)[0] for b in g.buckets) for g in groups.values()}
    assert targets == {frozenset({"10.1.0.12", "10.1.0.13"}), frozenset({"10.1.0.12"})}
    vips = [f for f in p.flows[0x101] if f.table == Table.SERVICES and f.priority == 100]
    assert sorted(f.match_dict["metadata"] for f in vips) == [101, 102]


def test_replies_are_translated_back_only_from_backend_addresses_and_once():
    model, p = planned()
    unnat = [f for f in p.flows[0x101] if f.table == Table.UNNAT and f.priority == 100]
    assert {(f.match_dict["ipv4_src"], f.match_dict["tcp_src"]) for f in unnat} == \
        {("10.1.0.12", 8080), ("10.1.0.13", 8080)}
    for f in unnat:
        assert f.match_dict["ct_state"] == (0x00, 0x20)      # only packets not tracked yet


def test_the_plan_is_stable_across_runs():
    assert planned()[1] == planned()[1]


# -- what the user sees ----------------------------------------------------------------

def test_the_snapshot_shows_backend_health_and_where_vms_are():
    from sdnvirt import status
    model, p = planned(health={("blue", "web", "web2:8080"): False})
    model.health[("blue", "web", "web3:8080")].record(True, "SYN-ACK", 0.0012)
    doc = status.snapshot(model, leafspine(), {0x101: 42})
    [svc] = doc["services"]
    by_vm = {b["vm"]: b for b in svc["backends"]}
    assert by_vm["web2"]["up"] is False and by_vm["web2"]["takes_new_connections"] is False
    assert by_vm["web3"]["last_check"] == "SYN-ACK" and by_vm["web3"]["last_latency_ms"] == 1.2
    assert {v["name"]: v["switch"] for v in doc["vms"]}["web1"] == "leaf1"
    assert len(doc["switches"]) == 6 and doc["switches"][0]["flows"] == 42


def test_the_topology_names_each_links_ends_and_each_vms_port():
    from sdnvirt import status
    model, _ = planned()
    topo = status.topology(model, leafspine(), {})
    assert len(topo["links"]) == 8
    leaf1 = next(s for s in topo["switches"] if s["name"] == "leaf1")
    ports = {p["port"]: p for p in leaf1["ports"]}
    assert ports[1]["peer"] == {"switch": "spine1", "dpid": f"{0x201:016x}", "port": 1}
    on_leaf1 = {vm["name"] for vm in topo["vms"] if vm["switch"] == "leaf1"}
    assert on_leaf1 and {p["vm"] for p in leaf1["ports"]} - {None} == on_leaf1
