"""Health probes and rejects, frame by frame, without a switch."""

import copy

import pytest
from fabrics import TWO_TENANTS, placed_model
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, UDPerror
from scapy.layers.l2 import Ether

from sdnvirt.controller import probes

PROBE_MAC, PROBE_IP = "0a:5d:0a:01:00:fe", "10.1.0.254"


def model_with(check_type, protocol="tcp"):
    doc = copy.deepcopy(TWO_TENANTS)
    doc["tenants"]["blue"]["services"] = {"svc": {
        "vip": "10.1.0.100", "protocol": protocol, "port": 80,
        "backends": [{"vm": "web2", "port": 8080}],
        "health_check": {"type": check_type, "interval": 0.2, "timeout": 0.2, "rise": 1, "fall": 1}}}
    return placed_model(doc)


def prober(model):
    changes = []
    return probes.Prober(model, send=None, on_change=lambda: changes.append(1)), changes


def sent_probe(p, now=100.0):
    [(dpid, port, frame)] = p.tick(now)
    return dpid, port, Ether(frame)


def test_a_tcp_probe_is_a_syn_from_the_probe_address_into_the_backends_port():
    model = model_with("tcp")
    p, _ = prober(model)
    dpid, port, syn = sent_probe(p)
    loc = model.locations["web2"]
    assert (dpid, port) == (loc.dpid, loc.port)
    assert (syn.src, syn[IP].src, syn[IP].dst, syn[TCP].dport, syn[TCP].flags) == \
        (PROBE_MAC, PROBE_IP, "10.1.0.12", 8080, "S")
    assert p.tick(100.05) == []         # one probe in flight at a time, none before the interval


def reply(syn, flags):
    return bytes(Ether(src=syn.dst, dst=syn.src) / IP(src=syn[IP].dst, dst=syn[IP].src) /
                 TCP(sport=syn[TCP].dport, dport=syn[TCP].sport, flags=flags, ack=syn[TCP].seq + 1, seq=7))


def test_syn_ack_is_up_and_is_answered_with_a_reset():
    model = model_with("tcp")
    model.health[("blue", "svc", "web2:8080")].up = False
    p, changes = prober(model)
    dpid, port, syn = sent_probe(p)
    [(d, prt, rst)] = p.on_reply(dpid, port, 101, reply(syn, "SA"))
    assert model.health[("blue", "svc", "web2:8080")].up and changes
    assert Ether(rst)[TCP].flags == "R" and (d, prt) == (dpid, port)


def test_rst_is_down():
    model = model_with("tcp")
    p, changes = prober(model)
    dpid, port, syn = sent_probe(p)
    assert p.on_reply(dpid, port, 101, reply(syn, "RA")) == []
    assert not model.health[("blue", "svc", "web2:8080")].up and changes


def test_no_answer_within_the_timeout_is_down_for_tcp_and_up_for_udp():
    for kind, protocol, up in (("tcp", "tcp", False), ("icmp", "tcp", False), ("udp", "udp", True)):
        model = model_with(kind, protocol)
        model.health[("blue", "svc", "web2:8080")].up = not up
        p, _ = prober(model)
        sent_probe(p, 100.0)
        p.tick(100.25)
        assert model.health[("blue", "svc", "web2:8080")].up is up, kind


def test_icmp_port_unreachable_is_down_for_udp():
    model = model_with("udp", "udp")
    p, _ = prober(model)
    dpid, port, probe = sent_probe(p)
    unreachable = Ether(src=probe.dst, dst=probe.src) / IP(src="10.1.0.12", dst=PROBE_IP) / \
        ICMP(type=3, code=3) / IPerror(bytes(probe[IP])[:20]) / UDPerror(bytes(probe[UDP])[:8])
    p.on_reply(dpid, port, 101, bytes(unreachable))
    assert not model.health[("blue", "svc", "web2:8080")].up


def test_an_echo_reply_is_up_for_icmp():
    model = model_with("icmp")
    model.health[("blue", "svc", "web2:8080")].up = False
    p, _ = prober(model)
    dpid, port, ping = sent_probe(p)
    pong = Ether(src=ping.dst, dst=ping.src) / IP(src="10.1.0.12", dst=PROBE_IP) / \
        ICMP(type=0, id=ping[ICMP].id, seq=ping[ICMP].seq)
    p.on_reply(dpid, port, 101, bytes(pong))
    assert model.health[("blue", "svc", "web2:8080")].up


@pytest.mark.parametrize("where", ["another port", "another tenant", "another address"])
def test_a_reply_from_anywhere_else_changes_nothing(where):
    model = model_with("tcp")
    model.health[("blue", "svc", "web2:8080")].up = False
    p, changes = prober(model)
    dpid, port, syn = sent_probe(p)
    frame = reply(syn, "SA")
    if where == "another port":
        port += 1
    elif where == "another tenant":
        p.on_reply(dpid, port, 102, frame)
        assert not model.health[("blue", "svc", "web2:8080")].up
        return
    else:
        frame = bytes(Ether(src=syn.dst, dst=syn.src) / IP(src="10.1.0.13", dst=PROBE_IP) /
                      TCP(sport=8080, dport=syn[TCP].sport, flags="SA"))
    assert p.on_reply(dpid, port, 101, frame) == []
    assert not model.health[("blue", "svc", "web2:8080")].up and not changes


def test_an_unplugged_backend_is_not_probed():
    model = model_with("tcp")
    model.unbind("web2", "test")
    p, _ = prober(model)
    assert p.tick(100.0) == []


def test_reject_answers_tcp_with_rst_ack_from_the_vip():
    model = model_with("tcp")
    syn = Ether(src="02:00:00:00:01:01", dst="0a:5d:0a:01:00:64") / IP(src="10.1.0.11", dst="10.1.0.100") / \
        TCP(sport=40000, dport=80, flags="S", seq=1000)
    rst = Ether(probes.reject(model, 101, bytes(syn)))
    assert (rst.src, rst.dst, rst[IP].src, rst[IP].dst) == ("0a:5d:0a:01:00:64", "02:00:00:00:01:01",
                                                            "10.1.0.100", "10.1.0.11")
    assert rst[TCP].flags == "RA" and rst[TCP].ack == 1001 and rst[TCP].dport == 40000


def test_reject_answers_udp_with_icmp_port_unreachable():
    model = model_with("udp", "udp")
    dgram = Ether(src="02:00:00:00:01:01", dst="0a:5d:0a:01:00:64") / IP(src="10.1.0.11", dst="10.1.0.100") / \
        UDP(sport=40000, dport=80) / b"hello"
    answer = Ether(probes.reject(model, 101, bytes(dgram)))
    assert (answer[ICMP].type, answer[ICMP].code) == (3, 3)
    assert answer[IPerror].dst == "10.1.0.100" and answer[UDPerror].sport == 40000


def test_reject_ignores_other_tenants_and_unknown_listeners():
    model = model_with("tcp")
    syn = Ether(src="02:00:00:00:02:01") / IP(src="10.1.0.11", dst="10.1.0.100") / TCP(dport=80, flags="S")
    assert probes.reject(model, 102, bytes(syn)) is None
    syn[TCP].dport = 81
    assert probes.reject(model, 101, bytes(syn)) is None
