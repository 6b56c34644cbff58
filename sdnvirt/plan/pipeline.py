"""The pipeline: model + fabric -> the flows, groups and meters every switch should hold.

A plan is the union of the features' contributions.  Pure; docs/pipeline.md
describes the same tables in prose and must be kept true to the features.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from ..fabric import Fabric
from ..model import Model
from .check import check, distinct_keys
from .encap import ENCAPS, Encap, Wires
from .feature import Context, Contribution, Feature
from .features.arp import ArpAnswers
from .features.defaults import Defaults
from .features.discovery import Discovery
from .features.load_balancer import LoadBalancer
from .features.port_security import PortSecurity
from .features.preinstall import MigrationPreinstall
from .features.security_groups import SecurityGroups
from .features.switching import TenantSwitching
from .flows import Flow, Group, Meter
from .tables import TABLES, Table, TableSpec
from .tenancy import tenants

FEATURES: tuple[type[Feature], ...] = (
    Defaults, Discovery, PortSecurity, ArpAnswers, TenantSwitching, LoadBalancer, MigrationPreinstall,
    SecurityGroups)


@dataclass
class Plan:
    flows: dict[int, set[Flow]]
    groups: dict[int, dict[int, Group]]
    meters: dict[int, dict[int, Meter]]
    wires: Wires         # where the switches' outputs lead, to order a reconcile's changes


def plan(model: Model, fabric: Fabric, checked: bool = False,
         features: Sequence[type[Feature]] = FEATURES) -> Plan:
    """The complete desired flows, groups and meters of every switch the fabric knows.

    ``checked``: hold every feature's contribution to its declaration, and
    make sure no two flows of a switch share a key (``check``).  The tests
    plan so; the controller does not, because checking costs as much again
    as planning.
    """
    encap = ENCAPS[model.config.controller.fabric.encapsulation](fabric, model.config)
    ctx = Context(model, fabric, encap)
    scopes = tenants(model, encap, encap.ends())
    result = Plan({dpid: set() for dpid in fabric.switches}, {dpid: {} for dpid in fabric.switches},
                  {dpid: {} for dpid in fabric.switches}, encap.wires())
    specs = tables_with(encap)
    for cls in features:
        feature = cls(ctx)
        out = Contribution()
        for dpid in fabric.switches:
            feature.switch(dpid, out)
        for key in feature.fabric_parts():
            feature.fabric_part(key, None, out)
        for tenant in scopes:
            feature.tenant(tenant, out)
        if checked:
            check(cls.declaration, out, specs)
        for dpid, flows in out.flows.items():
            result.flows[dpid] |= flows
        for dpid, groups in out.groups.items():
            result.groups[dpid].update(groups)
        for dpid, meters in out.meters.items():
            result.meters[dpid].update(meters)
    if checked:
        distinct_keys(result.flows)
    return result


def tables_with(encap: Encap) -> Mapping[int, TableSpec]:
    """The tables' specs, with the fields the encapsulation's fabric ingress matches."""
    ingress = TABLES[Table.INGRESS]
    return {**TABLES, Table.INGRESS: replace(ingress, fields=ingress.fields | encap.ingress_fields)}
