"""Finding silent VMs: ARP probes for them out of the free ports of a switch.

A switch is probed at its first flows and when a port comes up, again
LOCATE_FIRST later, then at doubling intervals up to locate_interval: a reply
lost while the switch (or the controller) was busy costs a fraction of a
second, not a whole round.
"""

from __future__ import annotations

from ..fabric import Fabric
from ..model import Location, Model
from ..plan.encap import tunnel_port
from . import packets
from .session import SwitchSession

LOCATE_FIRST = 0.25

Frame = tuple[int, int, bytes]


def probes(model: Model, fabric: Fabric, dpid: int, ports: list[int] | None = None,
           lost: bool = True) -> list[Frame]:
    """ARP probes out of the switch's free ports (or of ``ports``) for the VMs
    it should hold that are not located; with ``lost``, also for every VM
    that left its port."""
    sw = fabric.switches.get(dpid)
    if sw is None or not sw.name:
        return []
    tunnel = tunnel_port(sw, model.config.controller.fabric)
    free = [p for p in fabric.edge_ports(dpid)
            if p != tunnel and model.vm_at(Location(dpid, p)) is None and (ports is None or p in ports)]
    # A VM is looked for at its own hypervisor. One that left its port (moved
    # without a migration, or its migration failed) is looked for on any
    # switch where a port or the switch itself has just come up, since a
    # silent VM is found only by asking; not in the steady rounds, where VMs
    # that are simply off would cost every switch a probe per free port forever.
    targets = {str(vm.ip) for vm in model.unlocated() if vm.host == sw.name or (lost and vm.name in model.lost)}
    return [(dpid, port, packets.arp_probe(ip)) for ip in sorted(targets) for port in free]


def soon(session: SwitchSession, now: float) -> None:
    session.locate_due = (now + LOCATE_FIRST, LOCATE_FIRST)


def due(session: SwitchSession, now: float, interval: float) -> bool | None:
    """None if the switch's probes are not due; else whether this round looks
    for lost VMs too (the quick rounds after an event do)."""
    at, step = session.locate_due or (now, interval)
    if now < at:
        return None
    session.locate_due = (now + min(2 * step, interval), min(2 * step, interval))
    return step < interval
