"""Security groups: the rules a VM's port enforces, in the config's words and resolved.

A group is a list of rules, each allowing one direction (ingress: to the
VM, egress: from it) of one protocol, to a range of ports, with a remote end
that is a prefix (``remote_ip``) or the current members of a group of the
same tenant (``remote_group``), or anything.  A VM that lists groups
(``security_groups``, even an empty list) allows only what the union of
their rules allows, both ways, and the replies of what it allowed
(stateful, as Neutron and OVN do); a VM without the key allows everything
inside its tenant.  ``plan/features/security_groups.py`` puts the rules in
the switches.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import Field, StrictInt, StrictStr, field_validator, model_validator

from .schema import Name, Strict

PROTOCOLS = {"tcp": 6, "udp": 17, "icmp": 1}
ANYWHERE = ipaddress.IPv4Network("0.0.0.0/0")


def port_range(value: int | str) -> tuple[int, int]:
    """80 or "80" -> (80, 80); "8000-8099" -> (8000, 8099)."""
    lo, _, hi = str(value).partition("-")
    try:
        first, last = int(lo), int(hi or lo)
    except ValueError:
        raise ValueError(f"not a port or a port range like 8000-8099: {value!r}") from None
    if not 1 <= first <= last <= 65535:
        raise ValueError(f"{value!r}: ports are 1 to 65535, the first of a range not above the last")
    return first, last


class RuleSpec(Strict):
    direction: Literal["ingress", "egress"]
    protocol: Literal["tcp", "udp", "icmp", "any"] = "any"
    # One port (80) or a range ("8000-8099"), tcp and udp only; default: all.
    port: StrictInt | StrictStr | None = None
    # The other end: a prefix, or the VMs of a group of the tenant; default: anything.
    remote_ip: ipaddress.IPv4Network | None = None
    remote_group: Name | None = None

    @field_validator("port")
    @classmethod
    def _range(cls, value: int | str | None) -> int | str | None:
        if value is not None:
            port_range(value)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> RuleSpec:
        if self.port is not None and self.protocol not in ("tcp", "udp"):
            raise ValueError(f"port applies to tcp and udp rules only, not to protocol {self.protocol}")
        if self.remote_ip is not None and self.remote_group is not None:
            raise ValueError("a rule has remote_ip or remote_group, not both")
        return self


class SecurityGroupSpec(Strict):
    rules: Annotated[list[RuleSpec], Field(max_length=10_000)] = []
    description: Annotated[str, Field(max_length=200)] = ""


def group_checks(base: str, groups: Mapping[str, SecurityGroupSpec],
                 members: Mapping[str, Sequence[str] | None]) -> list[tuple[str, str]]:
    """The groups a tenant's VMs (``members``: VM -> its groups) and rules name exist."""
    problems = []
    for vname, listed in members.items():
        for i, gname in enumerate(listed or ()):
            if gname not in groups:
                problems.append((f"{base}.vms.{vname}.security_groups.{i}", f"{gname} is not a security group "
                                 "of this tenant"))
    for gname, group in groups.items():
        for i, rule in enumerate(group.rules):
            if rule.remote_group is not None and rule.remote_group not in groups:
                problems.append((f"{base}.security_groups.{gname}.rules.{i}.remote_group",
                                 f"{rule.remote_group} is not a security group of this tenant"))
    return problems


@dataclass(frozen=True, order=True)
class Rule:
    """One rule resolved: a remote group has become its members' addresses."""

    direction: str
    proto: int | None                   # IP protocol; None: any
    ports: tuple[int, int] | None       # tcp/udp destination ports; None: all
    remotes: tuple[ipaddress.IPv4Network, ...]


def resolve(groups: Mapping[str, SecurityGroupSpec], addresses: Mapping[str, Sequence[ipaddress.IPv4Address]],
            names: Sequence[str]) -> list[Rule]:
    """The rules of the union of groups ``names``, each once.

    ``addresses``: group -> the addresses of the VMs in it now, so that a VM
    joining a group changes what the group's peers allow."""
    rules = set()
    for gname in names:
        for spec in groups[gname].rules:
            if spec.remote_group is not None:
                remotes = tuple(ipaddress.IPv4Network(ip) for ip in sorted(addresses.get(spec.remote_group, ())))
            else:
                remotes = (spec.remote_ip or ANYWHERE,)
            rules.add(Rule(spec.direction, None if spec.protocol == "any" else PROTOCOLS[spec.protocol],
                           None if spec.port is None else port_range(spec.port), remotes))
    return sorted(rules)
