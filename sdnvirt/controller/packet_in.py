"""Packet-ins, dispatched by the owner of the flow that sent them (its cookie's kind).

A fabric flow sends LLDP (discovery) and frames from ports that hold no VM
(learning); a tenant's flow sends replies to its health probes; a service's
flow sends connections to a VIP with no backend left (reject).
"""

from __future__ import annotations

import logging
import time
from enum import Enum
from typing import TYPE_CHECKING, Any

from ..events import Claim, Found, Kind
from ..model import Location, Observation
from ..plan.encap import overlay_end
from ..plan.flows import ETH_TYPE_LLDP, Owner, cookie_owner
from . import ofmsg, packets, probes

if TYPE_CHECKING:
    from .core import Controller

LOG = logging.getLogger("sdnvirt.controller")


class Purpose(Enum):
    LEARN = "learn"
    LLDP = "lldp"
    PROBE_REPLY = "probe_reply"
    REJECT = "reject"


def handle(ctl: Controller, msg: Any) -> None:
    session = ctl.session(msg.datapath)
    if session is None:
        return
    started = time.perf_counter()
    purpose = Purpose.LEARN
    dpid = session.dpid
    try:
        in_port = msg.match["in_port"]
        owner = cookie_owner(msg.cookie)[0]
        if owner == Owner.TENANT:
            purpose = Purpose.PROBE_REPLY
            ctl.send_frames(ctl.prober.on_reply(dpid, in_port, msg.match.get("metadata", 0), msg.data))
        elif owner == Owner.SERVICE:
            purpose = Purpose.REJECT
            answer = probes.reject(ctl.model, msg.match.get("metadata", 0), msg.data)
            if answer is not None:
                ctl.packet_out(dpid, answer, in_port)
        elif _ethertype(msg.data) == ETH_TYPE_LLDP:
            purpose = Purpose.LLDP
            _lldp(ctl, dpid, in_port, msg.data)
        else:
            _learn(ctl, dpid, in_port, msg.data)
    except packets.BadFrame as err:
        LOG.debug("switch %016x: %s", dpid, err)
    finally:
        ctl.metrics.packet_in(ofmsg.PACKET_IN_REASONS.get(msg.reason, str(msg.reason)), purpose.value,
                              time.perf_counter() - started)


def _lldp(ctl: Controller, dpid: int, in_port: int, data: bytes) -> None:
    src = ctl.discovery.heard(ctl.fabric, dpid, in_port, data, ctl.settings.lldp_interval, ctl.clock())
    if src is None:
        return
    for end in (src, (dpid, in_port)):
        ctl.unbind_port(*end)
    LOG.info("link %016x:%d -> %016x:%d", src[0], src[1], dpid, in_port)
    ctl.event_hub.publish(Kind.LINK_UP, src_dpid=f"{src[0]:016x}", src_port=src[1], dpid=f"{dpid:016x}", port=in_port)
    ctl.request(topology=True)


def _learn(ctl: Controller, dpid: int, in_port: int, data: bytes) -> None:
    frame = packets.parse_frame(data)
    if frame.tagged:
        raise packets.BadFrame(f"tagged frame on access port {in_port} dropped")
    if ctl.fabric.is_fabric_port(dpid, in_port):
        return
    if overlay_end(ctl.fabric, ctl.model.config, dpid):
        seen = ctl.model.observe(frame.src, frame.sender_ip, Location(dpid, in_port),
                                 lambda loc: ctl.fabric.port_live(loc.dpid, loc.port))
    else:
        seen = Observation(ctl.model.vm_by_mac(frame.src), False, None, "the switch has no VTEP", Claim.NO_OVERLAY)
    if seen.vm is None or not seen.bound or seen.reason == "already there":
        if seen.vm is not None and not seen.bound:
            LOG.warning("frame claiming VM %s on %016x port %d ignored: %s", seen.vm.name, dpid, in_port, seen.reason)
            ctl.event_hub.publish(Kind.VM_CLAIM_IGNORED, vm=seen.vm.name, tenant=seen.vm.tenant, dpid=f"{dpid:016x}",
                                  port=in_port, refused=seen.refused)
        return
    ctl.reinject.append((dpid, in_port, data))
    moved = seen.moved_from
    LOG.info("VM %s (%s) is at %016x port %d%s", seen.vm.name, seen.vm.tenant, dpid, in_port,
             f", moved from {moved}" if moved else "")
    ctl.event_hub.publish(Kind.VM_LOCATED, vm=seen.vm.name, tenant=seen.vm.tenant, dpid=f"{dpid:016x}", port=in_port,
                          how=Found.PROBE if frame.to_controller else Found.LEARNT,
                          from_dpid=None if moved is None else f"{moved.dpid:016x}",
                          from_port=None if moved is None else moved.port)
    ctl.request()


def _ethertype(data: bytes) -> int:
    if len(data) < 14:
        raise packets.BadFrame(f"runt frame of {len(data)} bytes")
    return int.from_bytes(data[12:14], "big")
