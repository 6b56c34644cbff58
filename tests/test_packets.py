"""Frames the controller makes and reads, and what it refuses to believe."""

import ipaddress

import pytest

from sdnvirt.controller import packets

SECRET = b"0123456789abcdef"


def test_lldp_round_trip():
    frame = packets.lldp_frame(0x101, 7, SECRET)
    assert packets.parse_lldp(frame, SECRET, max_age=1.0) == (0x101, 7)


def test_lldp_from_another_controller_is_refused():
    frame = packets.lldp_frame(0x101, 7, b"another secret!!")
    with pytest.raises(packets.BadFrame, match="not signed"):
        packets.parse_lldp(frame, SECRET, max_age=1.0)


def test_lldp_with_a_forged_port_is_refused():
    frame = bytearray(packets.lldp_frame(0x101, 7, SECRET))
    i = frame.index(bytes([0, 0, 0, 7]))
    frame[i + 3] = 8
    with pytest.raises(packets.BadFrame, match="not signed"):
        packets.parse_lldp(bytes(frame), SECRET, max_age=1.0)


def test_replayed_lldp_is_refused():
    import time
    frame = packets.lldp_frame(0x101, 7, SECRET, now=time.time() - 5)
    with pytest.raises(packets.BadFrame, match="replayed"):
        packets.parse_lldp(frame, SECRET, max_age=1.0)


@pytest.mark.parametrize("junk", [b"", b"\x01" * 13, b"\xff" * 60, bytes(range(256))])
def test_junk_is_a_bad_frame_not_a_crash(junk):
    with pytest.raises(packets.BadFrame):
        packets.parse_lldp(junk, SECRET, max_age=1.0)
    try:
        packets.parse_frame(junk)
    except packets.BadFrame:
        pass


def test_arp_probe_reveals_no_address_and_parses_back():
    frame = packets.parse_frame(packets.arp_probe("10.1.0.12"))
    assert frame.src == packets.CONTROLLER_MAC
    assert frame.sender_ip is None          # 0.0.0.0: an RFC 5227 probe
    assert not frame.tagged


def test_arp_reply_gives_the_sender_ip():
    from scapy.layers.l2 import ARP, Ether
    data = bytes(Ether(src="02:00:00:00:01:01", dst="ff:ff:ff:ff:ff:ff") /
                 ARP(op=2, hwsrc="02:00:00:00:01:01", psrc="10.1.0.11"))
    frame = packets.parse_frame(data)
    assert (frame.src, frame.sender_ip) == ("02:00:00:00:01:01", ipaddress.IPv4Address("10.1.0.11"))


def test_tagged_frame_is_marked():
    from scapy.layers.inet import IP
    from scapy.layers.l2 import Dot1Q, Ether
    data = bytes(Ether(src="02:00:00:00:01:01") / Dot1Q(vlan=102) / IP(src="10.1.0.11"))
    assert packets.parse_frame(data).tagged
