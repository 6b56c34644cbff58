"""What a feature is: a declaration of the part of the pipeline it owns, and what it contributes.

Like Antrea's features: each one job of the pipeline (port security, ARP
answers, ...) declares the tables and priorities it writes, the cookie kinds
its flows carry and the meters it adds, and contributes flows, groups and
meters switch by switch.  ``pipeline.plan`` is the union of the features;
``check`` holds each contribution to its declaration.

Incremental planning (``engine.Engine``) caches every contribution with the
inputs it was computed from and computes it again only when they change.  A
feature says what its contributions read through three hooks:

- ``switch_inputs(dpid)``: what ``switch`` reads for ``dpid``;
- ``tenant_inputs(tenant)``: what ``tenant`` reads beyond the ``Tenant``
  footprint itself (which the engine compares on its own): while neither
  changes, the tenant's contribution is not looked at;
- ``parts(tenant)`` (optional): the tenant's contribution split into parts
  that are computed apart (``part``), each with everything it reads, of the
  footprint and of the rest, so that one VM learnt recomputes that VM's
  flows only; ``link_parts(tenant)`` names those that read the fabric's
  links beyond the footprint, the only ones a link change looks at when
  the footprint stayed the same;
- ``fabric_parts()`` (optional): what spans switches whatever the tenants
  (the routes toward one switch), in parts with their inputs, computed
  apart (``fabric_part``) like a tenant's.

A part's inputs may be ``BySwitch``: what it puts on each switch reads only
what is common to the part and that switch's own entry.  When only entries
change, the engine asks ``part_at`` for the switches whose entry changed,
and keeps the rest: a path that moves at one switch costs that switch, not
the ninety others the path crosses.

A hook returns a value compared with ``==`` to the one of the last plan
(cheap to build: objects the model keeps, not flows).  ``None``, the default,
means "not declared": the contribution is computed again on every plan --
correct, only slow, so a new feature is right before it is fast.  Whatever
the hooks return, every contribution is computed again when the fabric's
switches, the controller's settings or the hypervisors change; the links are
not: what a contribution reads of them (a switch's fabric ports; paths and
broadcast come in the ``Tenant``) is an input to declare, as a tenant's
config (its VMs, services, security groups, addresses) is.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Hashable, Mapping
from dataclasses import dataclass
from typing import ClassVar

from ..fabric import Fabric
from ..model import Model
from .encap import Encap
from .flows import Flow, Group, Meter, Owner
from .tables import MeterId
from .tenancy import Tenant


@dataclass(frozen=True)
class Declaration:
    name: str
    owns: Mapping[int, frozenset[int]]      # the priorities it writes, per table
    cookies: frozenset[Owner]               # the owner kinds of its flows
    meters: frozenset[MeterId] = frozenset()    # the meters it adds (and may use)


def declare(name: str, owns: Mapping[int, set[int]], cookies: set[Owner],
            meters: set[MeterId] | None = None) -> Declaration:
    return Declaration(name, {t: frozenset(p) for t, p in owns.items()}, frozenset(cookies), frozenset(meters or ()))


@dataclass(frozen=True)
class BySwitch:
    """A part's inputs, split: ``common`` to all it contributes, and one entry per switch
    (hashable) that what it puts on that switch alone reads (``Feature.part_at``)."""

    common: Hashable
    switches: Mapping[int, Hashable]


@dataclass(frozen=True)
class Context:
    """What one plan is made from."""

    model: Model
    fabric: Fabric
    encap: Encap


class Contribution:
    """What one feature puts on the switches in one plan."""

    def __init__(self) -> None:
        self.flows: defaultdict[int, set[Flow]] = defaultdict(set)
        self.groups: defaultdict[int, dict[int, Group]] = defaultdict(dict)
        self.meters: defaultdict[int, dict[int, Meter]] = defaultdict(dict)

    def add(self, dpid: int, *flows: Flow) -> None:
        self.flows[dpid].update(flows)

    def group(self, dpid: int, group: Group) -> None:
        self.groups[dpid][group.group_id] = group

    def meter(self, dpid: int, meter: Meter) -> None:
        self.meters[dpid][meter.meter_id] = meter


class Feature:
    """One feature in one plan; a subclass overrides the hooks it needs."""

    declaration: ClassVar[Declaration]
    # Whether ``tenant`` or ``parts`` read the tenant's paths (``Tenant.routes``,
    # ``pending_routes``, ``flood``, ``carriers``) or the fabric's links (a switch's
    # fabric ports): then a link change asks them again; if not, only a footprint that
    # changed beyond its paths does.  Undeclared, they do: right before fast.
    reads_paths: ClassVar[bool] = True

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def switch(self, dpid: int, out: Contribution) -> None:
        """What the feature puts on switch ``dpid`` whatever the tenants."""

    def tenant(self, tenant: Tenant, out: Contribution) -> None:
        """What the feature puts on the switches ``tenant`` uses."""
        parts = self.parts(tenant)
        for key in parts or ():
            self.part(tenant, key, out)

    def fabric_parts(self) -> Mapping[Hashable, object]:
        """What the feature puts on the switches whatever the tenants, split in parts
        that span switches (one per destination switch, say), each with what it reads;
        a part whose inputs are ``BySwitch`` is computed again where its entries moved."""
        return {}

    def fabric_part(self, key: Hashable, at: Collection[int] | None, out: Contribution) -> None:
        """One of ``fabric_parts()``, on the switches ``at`` only (None: all of them)."""

    def switch_inputs(self, dpid: int) -> Hashable | None:
        """What ``switch(dpid)`` reads; None: not declared, computed on every plan."""
        return None

    def tenant_inputs(self, tenant: Tenant) -> Hashable | None:
        """What ``tenant(tenant)`` reads beyond ``tenant``; None: not declared."""
        return None

    def parts(self, tenant: Tenant) -> Mapping[Hashable, object] | None:
        """The parts of ``tenant``'s contribution, each with everything it reads
        (a part is computed again when that changes); None: one part, ``tenant``."""
        return None

    def part(self, tenant: Tenant, key: Hashable, out: Contribution) -> None:
        """One of ``parts(tenant)``."""

    def link_parts(self, tenant: Tenant) -> Mapping[Hashable, object] | None:
        """Of ``parts(tenant)``, with their inputs, those that read the fabric's links
        beyond the footprint (a switch's fabric ports): when links alone moved and the
        footprint did not, only these are looked at.  None: not declared, every part."""
        return None

    def part_at(self, tenant: Tenant, key: Hashable, at: Collection[int], out: Contribution) -> None:
        """What ``part`` puts on the switches ``at`` only, for a part whose inputs are
        ``BySwitch``.  This default computes the whole part and keeps those switches':
        right, not faster; a feature whose parts are ``BySwitch`` says how."""
        whole = Contribution()
        self.part(tenant, key, whole)
        for dpid in at:
            out.add(dpid, *whole.flows.get(dpid, ()))
            for group in whole.groups.get(dpid, {}).values():
                out.group(dpid, group)
            for meter in whole.meters.get(dpid, {}).values():
                out.meter(dpid, meter)
