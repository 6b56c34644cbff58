"""Health probes and rejects, frame by frame, without a switch."""

import copy

import pytest
from fabrics import TWO_TENANTS, placed_model
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, TCPerror, UDPerror
from scapy.layers.l2 import Ether

from sdnvirt.controller import probes
from sdnvirt.events import Events
from sdnvirt.metrics import Metrics

PROBE_MAC, PROBE_IP = "0a:5d:0a:01:00:fe", "10.1.0.254"


def model_with(check_type, protocol="tcp", **check):
    doc = copy.deepcopy(TWO_TENANTS)
    doc["tenants"]["blue"]["services"] = {"svc": {
        "vip": "10.1.0.100", "protocol": protocol, "port": 80,
        "backends": [{"vm": "web2", "port": 8080}],
        "health_check": {"type": check_type, "interval": 0.2, "timeout": 0.2, "rise": 1, "fall": 1, **check}}}
    return placed_model(doc)


def prober(model):
    changes = []
    return probes.Prober(model, send=None, on_change=lambda: changes.append(1),
                         latency=Metrics().probe_latency, events=Events()), changes


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


def test_an_ack_from_a_connection_an_earlier_probe_left_half_open_is_reset_and_the_syn_sent_again():
    model = model_with("tcp")
    model.health[("blue", "svc", "web2:8080")].up = False
    p, changes = prober(model)
    dpid, port, syn = sent_probe(p)
    stale = Ether(src=syn.dst, dst=syn.src) / IP(src=syn[IP].dst, dst=syn[IP].src) / \
        TCP(sport=syn[TCP].dport, dport=syn[TCP].sport, flags="A", seq=5, ack=777)
    [(_, _, rst), (d, prt, again)] = [(d, prt, Ether(f)) for d, prt, f in p.on_reply(dpid, port, 101, bytes(stale))]
    assert (rst[TCP].flags, rst[TCP].seq, rst[TCP].sport) == ("R", 777, syn[TCP].sport)
    assert (again[TCP].flags, again[TCP].sport, (d, prt)) == ("S", syn[TCP].sport, (dpid, port))
    assert not changes and model.health[("blue", "svc", "web2:8080")].results["failure"] == 0
    [(_, _, _)] = p.on_reply(dpid, port, 101, reply(again, "SA"))
    assert model.health[("blue", "svc", "web2:8080")].up and changes


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


def http_exchange(answer: bytes | None, **check):
    """An http check played to its end: SYN, SYN-ACK, request, the server's
    ACK, then ``answer`` (None: the server closes without one)."""
    model = model_with("http", path="/healthz", **check)
    key = ("blue", "svc", "web2:8080")
    model.health[key].up = answer is None
    p, _ = prober(model)
    dpid, port, syn = sent_probe(p)
    [(_, _, request)] = p.on_reply(dpid, port, 101, reply(syn, "SA"))
    req = Ether(request)
    assert req[TCP].flags == "PA" and req[TCP].seq == syn[TCP].seq + 1 and req[TCP].ack == 8
    assert bytes(req[TCP].payload).startswith(b"GET /healthz HTTP/1.0\r\nHost: 10.1.0.100\r\n")
    assert model.health[key].up is (answer is None), "a SYN-ACK alone decides nothing"
    server = Ether(src=syn.dst, dst=syn.src) / IP(src="10.1.0.12", dst=PROBE_IP) / \
        TCP(sport=8080, dport=syn[TCP].sport, seq=8, ack=req[TCP].seq + len(req[TCP].payload), flags="A")
    assert p.on_reply(dpid, port, 101, bytes(server)) == []        # the request's ACK: wait for data
    if answer is None:
        server[TCP].flags = "FA"
        frames = p.on_reply(dpid, port, 101, bytes(server))
    else:
        server[TCP].flags = "PA"
        frames = p.on_reply(dpid, port, 101, bytes(server / answer))
    return model.health[key], frames, req


def test_http_expected_status_is_up_and_the_probe_connection_is_reset():
    health, [(_, _, rst)], req = http_exchange(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert health.up and health.last_reason == "HTTP 200"
    assert Ether(rst)[TCP].flags == "R" and Ether(rst)[TCP].seq == req[TCP].seq + len(req[TCP].payload)


@pytest.mark.parametrize("answer, expect, up, why", [
    (b"HTTP/1.1 503 Service Unavailable\r\n\r\n", None, False, "HTTP 503"),
    (b"HTTP/1.0 204 No Content\r\n\r\n", 204, True, "HTTP 204"),
    (b"SSH-2.0-OpenSSH_9.2\r\n", None, False, "no HTTP status line"),
])
def test_http_status_decides(answer, expect, up, why):
    health, _, _ = http_exchange(answer, **({"expect": expect} if expect else {}))
    assert (health.up, health.last_reason) == (up, why)


def test_http_closed_without_an_answer_is_down():
    health, _, _ = http_exchange(None)
    assert not health.up and health.last_reason == "closed without an answer"


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


@pytest.mark.parametrize("kind, protocol", [("tcp", "tcp"), ("http", "tcp"), ("icmp", "tcp"), ("udp", "udp")])
def test_a_reply_to_another_probers_probe_from_the_same_port_changes_nothing(kind, protocol):
    """In a cluster every instance sees every switch's replies: one to another
    instance's probe, from the port of one of ours, is not an answer to ours."""
    model = model_with(kind, protocol)
    key = ("blue", "svc", "web2:8080")
    model.health[key].up = kind == "udp"
    p, changes = prober(model)
    dpid, port, probe = sent_probe(p)
    if kind in ("tcp", "http"):
        frames = []
        for flags in ("SA", "RA"):
            alien = Ether(reply(probe, flags))
            alien[TCP].ack = probe[TCP].seq + 1000
            frames.append(bytes(alien))
    elif kind == "icmp":
        frames = [bytes(Ether(src=probe.dst, dst=probe.src) / IP(src="10.1.0.12", dst=PROBE_IP) /
                        ICMP(type=0, id=probe[ICMP].id, seq=(probe[ICMP].seq + 1) & 0xFFFF))]
    else:
        quoted = probe[IP].copy()
        quoted.id = (probe[IP].id + 1) & 0xFFFF
        frames = [bytes(Ether(src=probe.dst, dst=probe.src) / IP(src="10.1.0.12", dst=PROBE_IP) /
                        ICMP(type=3, code=3) / IPerror(bytes(quoted)[:20]) / UDPerror(bytes(probe[UDP])[:8]))]
    for frame in frames:
        assert p.on_reply(dpid, port, 101, frame) == []
    assert model.health[key].up is (kind == "udp") and not changes
    assert len(p.outstanding) == 1, "ours is still awaited"


def test_probers_start_at_different_source_ports():
    model = model_with("tcp")
    ports = {sent_probe(prober(model)[0])[2][TCP].sport for _ in range(5)}
    assert len(ports) > 1


def test_a_tcp_probe_refused_by_icmp_port_unreachable_is_down_at_once():
    """iptables -j REJECT (its default: icmp-port-unreachable) answers a SYN with an
    ICMP error quoting our IP header (IP id 0) and 8 bytes of TCP (our ISN among them)."""
    model = model_with("tcp")
    p, changes = prober(model)
    dpid, port, syn = sent_probe(p)
    err = Ether(src=syn.dst, dst=syn.src) / IP(src="10.1.0.12", dst=syn[IP].src) / ICMP(type=3, code=3) / \
        IPerror(bytes(syn[IP])[:20]) / TCPerror(bytes(syn[TCP])[:8])
    p.on_reply(dpid, port, 101, bytes(err))
    assert not p.outstanding and not model.health[("blue", "svc", "web2:8080")].up and changes


def test_an_http_check_reset_without_ack_after_its_request_is_down_at_once():
    """Linux answers a segment with ACK for a connection it no longer has (listener
    closed, accept queue overflow with tcp_abort_on_overflow) with RST, seq = that
    segment's ack, and no ACK flag (tcp_v4_send_reset)."""
    model = model_with("http")
    p, changes = prober(model)
    dpid, port, syn = sent_probe(p)
    synack = Ether(src=syn.dst, dst=syn.src) / IP(src=syn[IP].dst, dst=syn[IP].src) / \
        TCP(sport=syn[TCP].dport, dport=syn[TCP].sport, flags="SA", seq=1000, ack=syn[TCP].seq + 1)
    [(_, _, req)] = p.on_reply(dpid, port, 101, bytes(synack))
    rst = Ether(src=syn.dst, dst=syn.src) / IP(src=syn[IP].dst, dst=syn[IP].src) / \
        TCP(sport=syn[TCP].dport, dport=syn[TCP].sport, flags="R", seq=Ether(req)[TCP].ack)
    p.on_reply(dpid, port, 101, bytes(rst))
    assert not p.outstanding and not model.health[("blue", "svc", "web2:8080")].up and changes
