"""Conntrack zones: the one place that turns a tenant's segment, or a VM, into a zone.

A zone is 16 bits (ovs-actions(7), "ct"), a segment up to 24 (a VXLAN VNI).
The load balancer tracks a tenant's connections in one zone per tenant; the
configuration refuses two tenants whose segments map to the same zone.

Security groups track each guarded VM's connections in a zone of its own,
as OVN gives each logical port one: a packet between two VMs is tracked
once at the sender's port and once at the receiver's, and a connection to a
VIP once before its translation (the client's zone, where it names the VIP)
and once after (the backend's, where it names the backend).  In one zone
per tenant those two entries of one connection would collide whenever two
hypervisors share a conntrack table (an emulation, or two VMs on one
hypervisor).
"""

from __future__ import annotations

import zlib
from collections.abc import Collection, Iterable

ZONE_BITS = 16
_ZONES = 1 << ZONE_BITS


def zone(segment: int) -> int:
    """The conntrack zone of a tenant's connections."""
    return segment & (_ZONES - 1)


def vm_zones(names: Iterable[str], taken: Collection[int]) -> dict[str, int]:
    """A zone per VM, stable while the VMs and the ``taken`` zones (the tenants') stay.

    From its name's hash, the next free one on a collision, names in order;
    zone 0 (the untracked default) is never given."""
    zones: dict[str, int] = {}
    used = set(taken) | {0}
    for name in sorted(names):
        z = zlib.crc32(name.encode()) % _ZONES
        while z in used:
            z = (z + 1) % _ZONES
        used.add(z)
        zones[name] = z
    return zones
