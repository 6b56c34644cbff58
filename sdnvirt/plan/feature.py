"""What a feature is: a declaration of the part of the pipeline it owns, and what it contributes.

Like Antrea's features: each one job of the pipeline (port security, ARP
answers, ...) declares the tables and priorities it writes, the cookie kinds
its flows carry and the meters it adds, and contributes flows, groups and
meters switch by switch.  ``pipeline.plan`` is the union of the features;
``check`` holds each contribution to its declaration.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
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

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def switch(self, dpid: int, out: Contribution) -> None:
        """What the feature puts on switch ``dpid`` whatever the tenants."""

    def tenant(self, tenant: Tenant, out: Contribution) -> None:
        """What the feature puts on the switches ``tenant`` uses."""
