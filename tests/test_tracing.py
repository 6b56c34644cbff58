"""``sdnvirt trace`` on the API's document of fake switches, and the conntrack it traces through."""

import json

import pytest
from fabrics import placed_model
from switches import Switches
from test_services import doc_with

from sdnvirt import status
from sdnvirt.plan.conntrack import EST, NEW, RPL, TRK, Conntrack, state_name
from sdnvirt.tracing import TraceError, describe, destination, trace


@pytest.fixture(scope="module")
def doc():
    """GET /switches/tables of a programmed fabric, through JSON."""
    model = placed_model(doc_with())
    sw = Switches(model)
    sw.reconcile()
    return json.loads(json.dumps(status.tables(model, sw.fab, {d: s.tables for d, s in sw.held.items()})))


def _delivered(result):
    return sorted(e["vm"] for e in result["ends"] if e["what"] == "delivered")


@pytest.mark.parametrize("text,want", [
    ("10.1.0.12", "10.1.0.12/icmp"), ("10.1.0.100:80", "10.1.0.100:80/tcp"), ("10.1.0.5:53/UDP", "10.1.0.5:53/udp"),
])
def test_a_destination_is_an_address_a_port_and_a_protocol(text, want):
    assert str(destination(text)) == want


@pytest.mark.parametrize("text,why", [
    ("10.1.0", "not an IPv4 address"), ("10.1.0.1:0", "from 1 to 65535"), ("10.1.0.1:x", "from 1 to 65535"),
    ("10.1.0.1/sctp", "tcp, udp or icmp"), ("10.1.0.1:80/icmp", "icmp has no port"),
])
def test_a_bad_destination_says_what_is_wrong(text, why):
    with pytest.raises(TraceError, match=why):
        destination(text)


def test_an_allowed_packet_is_delivered_to_its_vm_only(doc):
    result = trace(doc, "blue", "web1", destination("10.1.0.12:22"))
    assert result["arp"]["answer"] == "02:00:00:00:01:02"
    assert _delivered(result) == ["blue/web2"] and len(result["ends"]) == 1
    assert "DELIVERED to blue/web2 at leaf2 port 3" in describe(result)


def test_another_tenants_address_is_never_reached(doc):
    # 10.1.0.13 is web3's in blue; red has no such address: red's VM gets no ARP answer ...
    result = trace(doc, "red", "db1", destination("10.1.0.13"))
    assert result["packet"] is None and result["arp"]["answer"] is None
    assert "never sent" in describe(result)
    # ... and a frame to blue's MAC all the same is dropped.
    result = trace(doc, "red", "db1", destination("10.1.0.13"), mac="02:00:00:00:01:03")
    assert _delivered(result) == [] and [e["what"] for e in result["ends"]] == ["dropped"]


def test_a_packet_to_a_vip_reaches_every_backend_through_the_group_and_conntrack(doc):
    result = trace(doc, "blue", "web1", destination("10.1.0.100:80"))
    assert _delivered(result) == ["blue/web2", "blue/web3"]
    assert {s["what"] for s in result["steps"]} >= {"group", "ct"}
    for end in result["ends"]:
        assert end["packet"]["tcp_dst"] == 8080
    text = describe(result)
    assert "(service blue/web)" in text and "+trk+new" in text and "group:" in text


@pytest.mark.parametrize("tenant,vm,why", [
    ("green", "web1", "no tenant 'green'"), ("red", "web1", "tenant red has no VM 'web1'"),
])
def test_an_unknown_tenant_or_vm_is_refused(doc, tenant, vm, why):
    with pytest.raises(TraceError, match=why):
        trace(doc, tenant, vm, destination("10.1.0.12"))


def test_a_vm_not_located_is_refused(doc):
    unlocated = {**doc, "vms": [{**v, "dpid": None, "switch": None, "port": None} for v in doc["vms"]]}
    with pytest.raises(TraceError, match="not located"):
        trace(unlocated, "blue", "web1", destination("10.1.0.12"))


def test_conntrack_follows_a_connection_both_ways_and_translates_it():
    ct = Conntrack()
    syn = {"eth_type": 0x0800, "ip_proto": 6, "ipv4_src": "10.0.0.1", "tcp_src": 5000,
           "ipv4_dst": "10.0.0.100", "tcp_dst": 80}
    first = dict(syn)
    ct.execute(first, 1, 7, ("dnat", "10.0.0.2", 8080))
    assert first["ct_state"] == TRK | NEW and (first["ipv4_dst"], first["tcp_dst"]) == ("10.0.0.2", 8080)
    again = dict(syn)
    ct.execute(again, 1, 7, ("dnat", "10.0.0.3", 8080))     # another bucket: the committed one wins
    assert again["ct_state"] == TRK | NEW and again["ipv4_dst"] == "10.0.0.2"
    reply = {"eth_type": 0x0800, "ip_proto": 6, "ipv4_src": "10.0.0.2", "tcp_src": 8080,
             "ipv4_dst": "10.0.0.1", "tcp_dst": 5000}
    ct.execute(reply, 0, 7, ("nat",))
    assert state_name(reply["ct_state"]) == "+trk+est+rpl" and reply["ct_state"] == TRK | EST | RPL
    assert (reply["ipv4_src"], reply["tcp_src"], reply["ct_nw_dst"], reply["ct_tp_dst"]) == ("10.0.0.100", 80,
                                                                                           "10.0.0.100", 80)
    other_zone = dict(syn)
    ct.execute(other_zone, 0, 8, ("nat",))
    assert other_zone["ct_state"] == TRK | NEW and other_zone["ipv4_dst"] == "10.0.0.100"
    arp = {"eth_type": 0x0806}
    ct.execute(arp, 0, 7, None)
    assert state_name(arp["ct_state"]) == "+trk+inv"
