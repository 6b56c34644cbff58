"""Frames the controller makes and reads: LLDP for links, ARP probes to find VMs."""

from __future__ import annotations

import hmac
import ipaddress
import struct
import time
from dataclasses import dataclass

from os_ken.lib.packet import arp, ethernet, ipv4, lldp, packet, vlan

from ..plan.flows import ETH_TYPE_ARP, ETH_TYPE_LLDP

# Source MAC of everything the controller itself sends: inside sdnvirt's
# reserved 0a:5d: range, and the virtual MAC of 0.0.0.0, which no VIP or
# probe address can be.
CONTROLLER_MAC = "0a:5d:00:00:00:00"
BROADCAST = "ff:ff:ff:ff:ff:ff"


class BadFrame(ValueError):
    """A frame the controller cannot or will not interpret."""


def lldp_frame(dpid: int, port: int, secret: bytes, now: float | None = None) -> bytes:
    """An LLDP frame naming (dpid, port), signed with its send time so that a
    host can neither forge a link nor replay an old frame."""
    chassis = f"dpid:{dpid:016x}".encode()
    port_id = struct.pack("!I", port)
    stamp = f"{time.time() if now is None else now:.6f}".encode()
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet(lldp.LLDP_MAC_NEAREST_BRIDGE, CONTROLLER_MAC, ETH_TYPE_LLDP))
    pkt.add_protocol(lldp.lldp([
        lldp.ChassisID(subtype=lldp.ChassisID.SUB_LOCALLY_ASSIGNED, chassis_id=chassis),
        lldp.PortID(subtype=lldp.PortID.SUB_PORT_COMPONENT, port_id=port_id),
        lldp.TTL(ttl=120),
        lldp.SystemName(system_name=stamp + b" " + _sign(secret, chassis + port_id + stamp)),
        lldp.End(),
    ]))
    pkt.serialize()
    return bytes(pkt.data)


def _sign(secret: bytes, data: bytes) -> bytes:
    return hmac.new(secret, data, "sha256").hexdigest()[:32].encode()


@dataclass(frozen=True)
class Frame:
    """What learning needs from a frame seen on an access port."""

    src: str
    sender_ip: ipaddress.IPv4Address | None
    tagged: bool
    to_controller: bool     # addressed to the controller: an answer to its ARP probe


def parse_lldp(data: bytes, secret: bytes, max_age: float) -> tuple[int, int]:
    """(dpid, port) an LLDP frame was sent from, if this controller sent it
    less than max_age seconds ago."""
    try:
        tlvs = packet.Packet(data).get_protocol(lldp.lldp).tlvs
        chassis, port_id = tlvs[0].chassis_id, tlvs[1].port_id
        stamp, signature = tlvs[3].system_name.split(b" ")
        age = time.time() - float(stamp)
    except Exception as err:   # noqa: BLE001 - any malformed frame is just a bad frame
        raise BadFrame(f"not an sdnvirt LLDP frame: {err}") from None
    if not hmac.compare_digest(signature, _sign(secret, chassis + port_id + stamp)):
        raise BadFrame("LLDP frame not signed by this controller")
    if not 0 <= age <= max_age:
        raise BadFrame(f"LLDP frame replayed ({age:.3f} s old)")
    return int(chassis.decode()[len("dpid:"):], 16), struct.unpack("!I", port_id)[0]


def parse_frame(data: bytes) -> Frame:
    try:
        pkt = packet.Packet(data)
    except Exception as err:   # noqa: BLE001
        raise BadFrame(f"unparsable frame: {err}") from None
    eth = pkt.get_protocol(ethernet.ethernet)
    if eth is None:
        raise BadFrame("no Ethernet header")
    ip = None
    a = pkt.get_protocol(arp.arp)
    if a is not None:
        ip = ipaddress.IPv4Address(a.src_ip)
    else:
        v4 = pkt.get_protocol(ipv4.ipv4)
        if v4 is not None:
            ip = ipaddress.IPv4Address(v4.src)
    if ip is not None and ip.is_unspecified:
        ip = None
    return Frame(eth.src.lower(), ip, pkt.get_protocol(vlan.vlan) is not None, eth.dst.lower() == CONTROLLER_MAC)


def arp_probe(target_ip: str) -> bytes:
    """RFC 5227 ARP probe: asks who has target_ip without revealing any address."""
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet(BROADCAST, CONTROLLER_MAC, ETH_TYPE_ARP))
    pkt.add_protocol(arp.arp(opcode=arp.ARP_REQUEST, src_mac=CONTROLLER_MAC, src_ip="0.0.0.0",
                             dst_mac="00:00:00:00:00:00", dst_ip=target_ip))
    pkt.serialize()
    return bytes(pkt.data)


def gratuitous_arp(mac: str, ip: str) -> bytes:
    """An ARP announcement (RFC 5227): a request from ``mac`` for its own ``ip``, to broadcast."""
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet(BROADCAST, mac, ETH_TYPE_ARP))
    pkt.add_protocol(arp.arp(opcode=arp.ARP_REQUEST, src_mac=mac, src_ip=ip,
                             dst_mac="00:00:00:00:00:00", dst_ip=ip))
    pkt.serialize()
    return bytes(pkt.data)
