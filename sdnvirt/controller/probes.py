"""Health probes through the data plane, and rejects for services with no backend.

Probes leave as packet-outs straight into a backend's port, from the tenant's
probe address (an address of the tenant's own subnet that no VM has), and
the replies come back as packet-ins from the forward table, where the
tenant's probe MAC is sent to the controller.  So they work with overlapping
tenant addresses and with no route from the controller host into any tenant
network, like OVN's service monitors.  A reply counts only if it comes from
the backend's own port, in the backend's tenant, from the backend's address.

A reply is matched to its probe by the source port (the ICMP id) and a nonce
the reply must echo: TCP's acknowledgement of our random initial sequence
number (or, for a reset without ACK, its sequence number: the one we last
acknowledged), the echo's sequence number, what an ICMP error quotes (the
TCP sequence number, the UDP datagram's IP id).
In a cluster every instance gets every switch's packet-ins, its own probes'
replies and the others': a reply that echoes another prober's nonce is not
ours, whatever its port (each prober starts at a random one).

An http check is a TCP exchange the controller plays itself: SYN; on the
SYN-ACK one segment with the request; the status line of the first data
segment decides; then a reset.  Nothing is retransmitted: a lost segment
is a timeout, like a lost SYN.
"""

from __future__ import annotations

import ipaddress
import itertools
import logging
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from os_ken.lib.packet import ethernet, icmp, ipv4, packet, tcp, udp

from ..config import virtual_mac
from ..events import Cause, Events
from ..model import Backend, Location, Model, Service
from ..plan.flows import ETH_TYPE_IPV4
from . import backends

LOG = logging.getLogger("sdnvirt.probes")

TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_ACK = 0x01, 0x02, 0x04, 0x08, 0x10
PROBE_PORTS = range(33000, 61000)
STATUS_LINE = re.compile(rb"HTTP/\d\.\d (\d{3})")


@dataclass
class Outstanding:
    key: tuple[str, str, str]       # the backend's health key
    loc: Location
    kind: str
    sent: float
    port: int                       # our source port (or ICMP id) that the reply must echo
    nonce: int                      # tcp, http: our initial sequence number; icmp: echo seq; udp: IP id
    seq: int = 0                    # tcp, http: our next sequence number
    peer: int | None = None         # http: the backend's next sequence number, as we acknowledged it
    asked: bool = False             # http: the request is out


class Prober:
    def __init__(self, model: Model, send, on_change, latency, events: Events):
        """``send(dpid, port, frame)`` puts a frame out of a switch port;
        ``on_change()`` is called when a backend went up or down (it must not block);
        ``latency`` is the histogram of answered probes' round trips (labels tenant, service);
        ``events`` hears of every backend going up or down."""
        self.model = model
        self.send = send
        self.on_change = on_change
        self.latency = latency
        self.events = events
        self.due: dict[tuple[str, str, str], float] = {}
        self.outstanding: dict[int, Outstanding] = {}
        start = random.randrange(len(PROBE_PORTS))
        self._ports = itertools.cycle((*PROBE_PORTS[start:], *PROBE_PORTS[:start]))
        # Whether probes can go out of this switch: in a cluster only its master's
        # can, and a probe that never left must not count as unanswered.
        self.may_probe: Callable[[int], bool] = lambda dpid: True

    # -- sending -----------------------------------------------------------
    def tick(self, now: float) -> list[tuple[int, int, bytes]]:
        """Time out old probes and build the ones that are due: frames to send."""
        changed = False
        for token, out in list(self.outstanding.items()):
            svc, backend = self._find(out.key)
            timeout = svc.health_check.timeout if svc else 0
            if now - out.sent >= timeout:
                del self.outstanding[token]
                if svc is not None:
                    # udp: silence means nobody said the port is closed.
                    ok = out.kind == "udp"
                    changed |= self._record(svc, backend, ok, "no reply" if not ok else "no port unreachable",
                                            Cause.NO_ANSWER)
        frames = []
        live = set()
        for svc in self.model.services():
            for backend in svc.backends:
                key = svc.health_key(backend)
                live.add(key)
                loc = self.model.locations.get(backend.vm.name)
                if loc is None or not self.may_probe(loc.dpid):
                    continue        # unplugged: down already (Model.unbind), or not found yet; another's to probe
                if now < self.due.get(key, 0) or any(o.key == key for o in self.outstanding.values()):
                    continue
                self.due[key] = now + svc.health_check.interval
                frames.append(self._probe(svc, backend, loc, now))
        self.due = {k: v for k, v in self.due.items() if k in live}
        if changed:
            self.on_change()
        return frames

    def _probe(self, svc: Service, backend: Backend, loc: Location, now: float) -> tuple[int, int, bytes]:
        kind = svc.health_check.type or svc.protocol
        token = next(self._ports)
        while token in self.outstanding:
            token = next(self._ports)
        nonce = random.getrandbits(32 if kind in ("tcp", "http") else 16)
        self.outstanding[token] = Outstanding(svc.health_key(backend), loc, kind, now, token, nonce,
                                              (nonce + 1) & 0xFFFFFFFF)
        return loc.dpid, loc.port, self._frame(svc, backend, kind, token, nonce)

    def _frame(self, svc: Service, backend: Backend, kind: str, token: int, nonce: int) -> bytes:
        tenant = self.model.tenant(svc.tenant)
        src_ip, dst_ip = str(tenant.probe_ip), str(backend.vm.ip)
        pkt = packet.Packet()
        pkt.add_protocol(ethernet.ethernet(backend.vm.mac, virtual_mac(tenant.probe_ip), ETH_TYPE_IPV4))
        if kind in ("tcp", "http"):
            pkt.add_protocol(ipv4.ipv4(src=src_ip, dst=dst_ip, proto=6))
            pkt.add_protocol(tcp.tcp(src_port=token, dst_port=backend.port, seq=nonce,
                                     bits=TCP_SYN, window_size=65535))
        elif kind == "udp":
            pkt.add_protocol(ipv4.ipv4(src=src_ip, dst=dst_ip, proto=17, identification=nonce))
            pkt.add_protocol(udp.udp(src_port=token, dst_port=backend.port))
            pkt.add_protocol(b"sdnvirt health probe")
        else:
            pkt.add_protocol(ipv4.ipv4(src=src_ip, dst=dst_ip, proto=1))
            pkt.add_protocol(icmp.icmp(icmp.ICMP_ECHO_REQUEST, data=icmp.echo(id_=token, seq=nonce)))
        pkt.serialize()
        return bytes(pkt.data)

    # -- replies ---------------------------------------------------------------
    def on_reply(self, dpid: int, in_port: int, segment: int, data: bytes) -> list[tuple[int, int, bytes]]:
        """A frame sent to a probe address; returns frames to send back (an RST
        that closes a half-open probe connection)."""
        pkt = packet.Packet(data)
        ip = pkt.get_protocol(ipv4.ipv4)
        if ip is None:
            return []
        token, echoed, ok, reason, cause, answer = None, None, False, "", Cause.ANSWERED, []
        t = pkt.get_protocol(tcp.tcp)
        ic = pkt.get_protocol(icmp.icmp)
        if t is not None:
            token, echoed = t.dst_port, t.ack if t.bits & TCP_ACK else None
            ok = bool(t.bits & TCP_SYN and t.bits & TCP_ACK)
            reason = "SYN-ACK" if ok else "RST" if t.bits & TCP_RST else f"TCP flags {t.bits:#x}"
            cause = Cause.REFUSED if t.bits & TCP_RST else Cause.WRONG_ANSWER
        elif ic is not None and ic.type == icmp.ICMP_ECHO_REPLY:
            token, echoed, ok, reason = ic.data.id, ic.data.seq, True, "echo reply"
        elif ic is not None and ic.type == icmp.ICMP_DEST_UNREACH:
            inner = ic.data.data
            ihl = (inner[0] & 0x0F) * 4 if inner else 0
            if ihl >= 20 and len(inner) >= ihl + 8:
                # Our IP header and the first 8 bytes of our segment or datagram: the source port,
                # and the nonce: a TCP segment's sequence number (as acknowledging it would), an IP id.
                token = int.from_bytes(inner[ihl:ihl + 2], "big")
                echoed = ((int.from_bytes(inner[ihl + 4:ihl + 8], "big") + 1) & 0xFFFFFFFF if inner[9] == 6
                          else int.from_bytes(inner[4:6], "big"))
            ok, reason, cause = False, f"ICMP unreachable code {ic.code}", Cause.REFUSED
        out = self.outstanding.get(token) if token is not None else None
        if out is None:
            return []
        stale = t is not None and out.kind in ("tcp", "http") and not out.asked and not t.bits & (TCP_SYN | TCP_RST)
        if t is not None and echoed is None and t.bits & TCP_RST and out.peer is not None and t.seq == out.peer:
            # A reset without ACK (Linux's answer to a segment of a connection it no longer
            # has) carries as its sequence number the acknowledgement we sent.
            echoed = out.seq
        if not stale and not _echoes(out, echoed):
            LOG.debug("a reply to port %d that is not this prober's (another instance's probe?): ignored", token)
            return []
        svc, backend = self._find(out.key)
        if (svc is None or out.loc != Location(dpid, in_port) or segment != svc.segment
                or ipaddress.IPv4Address(ip.src) != backend.vm.ip):
            LOG.warning("probe reply for %s ignored: it came from the wrong place", out.key)
            return []
        if stale:
            # An ACK to our SYN: the backend still holds a connection from this
            # port, an earlier probe's left half-open (its controller died before
            # the reset). Reset it as TCP does in SYN-SENT (RFC 793:
            # <SEQ=SEG.ACK><CTL=RST>) and send the SYN again: no verdict yet.
            LOG.info("probe of %s from port %d met an earlier probe's connection: reset, asked again", out.key, token)
            out.nonce = random.getrandbits(32)
            out.seq = (out.nonce + 1) & 0xFFFFFFFF
            return [(dpid, in_port, self._segment(pkt, t, t.ack, TCP_RST)),
                    (dpid, in_port, self._frame(svc, backend, out.kind, token, out.nonce))]
        if out.kind == "http":
            verdict, frames = self._http(out, svc, pkt, t)
            answer = [(dpid, in_port, frame) for frame in frames]
            if verdict is None:
                return answer       # the exchange goes on
            ok, reason, cause = verdict
        elif t is not None and ok:
            answer = [(dpid, in_port, self._segment(pkt, t, out.seq, TCP_RST))]
        del self.outstanding[token]
        latency = time.monotonic() - out.sent
        self.latency.labels(svc.tenant, svc.name).observe(latency)
        if self._record(svc, backend, ok, reason, cause, latency):
            self.on_change()
        return answer

    def _http(self, out: Outstanding, svc: Service, pkt, t) -> tuple[tuple[bool, str, Cause] | None, list[bytes]]:
        """One segment of an http check: (verdict or None while it goes on, frames to send)."""
        if t is None:
            return (False, "not TCP", Cause.WRONG_ANSWER), []
        if t.bits & TCP_RST:
            return (False, "RST", Cause.REFUSED), []
        payload = pkt.protocols[-1] if isinstance(pkt.protocols[-1], (bytes, bytearray)) else b""
        if not out.asked and t.bits & TCP_SYN and t.bits & TCP_ACK:
            hc = svc.health_check
            request = (f"GET {hc.path} HTTP/1.0\r\nHost: {svc.vip}\r\n"
                       f"User-Agent: sdnvirt-health-check\r\n\r\n").encode()
            frame = self._segment(pkt, t, out.seq, TCP_ACK | TCP_PSH, request, ack=t.seq + 1)
            out.seq, out.asked, out.peer = (out.seq + len(request)) & 0xFFFFFFFF, True, (t.seq + 1) & 0xFFFFFFFF
            return None, [frame]
        if out.asked and payload:
            rst = [self._segment(pkt, t, out.seq, TCP_RST)]
            m = STATUS_LINE.match(payload)
            if m is None:
                return (False, "no HTTP status line", Cause.WRONG_ANSWER), rst
            status = int(m.group(1))
            return (status == svc.health_check.expect, f"HTTP {status}", Cause.WRONG_ANSWER), rst
        if t.bits & TCP_FIN:
            return (False, "closed without an answer", Cause.WRONG_ANSWER), [self._segment(pkt, t, out.seq, TCP_RST)]
        return None, []             # an ACK of the request: the answer follows

    @staticmethod
    def _segment(pkt, t, seq: int, bits: int, data: bytes = b"", ack: int = 0) -> bytes:
        """A TCP segment back to the sender of ``pkt``, on the probe's connection."""
        eth, ip = pkt.get_protocol(ethernet.ethernet), pkt.get_protocol(ipv4.ipv4)
        out = packet.Packet()
        out.add_protocol(ethernet.ethernet(eth.src, eth.dst, ETH_TYPE_IPV4))
        out.add_protocol(ipv4.ipv4(src=ip.dst, dst=ip.src, proto=6))
        out.add_protocol(tcp.tcp(src_port=t.dst_port, dst_port=t.src_port, seq=seq, ack=ack & 0xFFFFFFFF,
                                 bits=bits, window_size=65535))
        if data:
            out.add_protocol(data)
        out.serialize()
        return bytes(out.data)

    def _find(self, key) -> tuple[Service | None, Backend | None]:
        for svc in self.model.services():
            for backend in svc.backends:
                if svc.health_key(backend) == key:
                    return svc, backend
        return None, None

    def _record(self, svc: Service, backend: Backend, ok: bool, reason: str, failure: Cause,
                latency: float | None = None) -> bool:
        """Count a probe's result; ``failure``: what it was if not ``ok``."""
        health = self.model.health[svc.health_key(backend)]
        if not health.record(ok, reason, latency):
            return False
        backends.changed(self.events, self.model, svc, backend, Cause.ANSWERED if ok else failure)
        return True


def _echoes(out: Outstanding, echoed: int | None) -> bool:
    """Whether a reply echoes ``out``'s nonce: for TCP, acknowledges no more
    and no less than what the probe sent (its SYN, and an http check's request)."""
    if echoed is None:
        return False
    if out.kind in ("tcp", "http"):
        return 0 < (echoed - out.nonce) & 0xFFFFFFFF <= (out.seq - out.nonce) & 0xFFFFFFFF
    return echoed == out.nonce


def reject(model: Model, segment: int, data: bytes) -> bytes | None:
    """The answer to a connection for a service with no backend: TCP RST or ICMP port unreachable."""
    pkt = packet.Packet(data)
    eth, ip = pkt.get_protocol(ethernet.ethernet), pkt.get_protocol(ipv4.ipv4)
    if eth is None or ip is None:
        return None
    t, u = pkt.get_protocol(tcp.tcp), pkt.get_protocol(udp.udp)
    port = t.dst_port if t else u.dst_port if u else None
    svc = next((s for s in model.services() if s.segment == segment and str(s.vip) == ip.dst
                and s.port == port and s.ip_proto == ip.proto), None)
    if svc is None or svc.on_empty != "reject":
        return None
    out = packet.Packet()
    out.add_protocol(ethernet.ethernet(eth.src, svc.vip_mac, ETH_TYPE_IPV4))
    if t is not None:
        out.add_protocol(ipv4.ipv4(src=ip.dst, dst=ip.src, proto=6))
        out.add_protocol(tcp.tcp(src_port=t.dst_port, dst_port=t.src_port, seq=0,
                                 ack=(t.seq + 1) & 0xFFFFFFFF, bits=TCP_RST | TCP_ACK))
    else:
        # RFC 792: the IP header and the first 8 bytes of the datagram.
        original = data[14:14 + ip.header_length * 4 + 8]
        out.add_protocol(ipv4.ipv4(src=ip.dst, dst=ip.src, proto=1))
        out.add_protocol(icmp.icmp(icmp.ICMP_DEST_UNREACH, icmp.ICMP_PORT_UNREACH_CODE,
                                   data=icmp.dest_unreach(data=original)))
    out.serialize()
    return bytes(out.data)
