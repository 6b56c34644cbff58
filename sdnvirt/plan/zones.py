"""Conntrack zones: the one place that turns a tenant's segment into a zone.

A zone is 16 bits (ovs-actions(7), "ct"), a segment up to 24 (a VXLAN VNI).
One zone per tenant, shared by every feature that tracks its connections
(the load balancer's NAT, security groups), as OVN shares a logical port's
zone between its ACLs and its load balancers; the configuration refuses two
tenants whose segments map to the same zone.
"""

from __future__ import annotations

ZONE_BITS = 16


def zone(segment: int) -> int:
    """The conntrack zone of a tenant's connections."""
    return segment & ((1 << ZONE_BITS) - 1)
