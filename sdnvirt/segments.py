"""What a config must hold for its tenants' segments to reach the wire: the encapsulation's rules.

A segment is an 802.1Q VLAN id in vlan mode and a VXLAN VNI in vxlan mode;
either way it names one tenant, and so does the conntrack zone it maps to
(``plan.zones``).  In vxlan mode every hypervisor is a tunnel endpoint
(VTEP) with an underlay address of its own, outside every tenant's subnet,
so that a VM can neither take a VTEP's address nor be confused with one.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from .plan.zones import zone

if TYPE_CHECKING:
    from .config import Config

MAX_VLAN = 4094


def checks(cfg: Config) -> list[tuple[str, str]]:
    """The problems of the tenants' segments and the hypervisors' VTEPs, as (key path, message)."""
    problems = []
    vxlan = cfg.controller.fabric.encapsulation == "vxlan"
    by_segment: dict[int, str] = {}
    by_zone: dict[int, str] = {}
    for tname, tenant in cfg.tenants.items():
        path, seg = f"tenants.{tname}.segment", tenant.segment
        if not vxlan and seg > MAX_VLAN:
            problems.append((path, f"{seg} is not a VLAN id (1..{MAX_VLAN}); VNIs up to 16777215 need "
                             "controller.fabric.encapsulation: vxlan"))
        if seg in by_segment:
            problems.append((path, f"segment {seg} is already used by tenant {by_segment[seg]}"))
        elif zone(seg) in by_zone:
            problems.append((path, f"segment {seg} shares conntrack zone {zone(seg)} (its low 16 bits) with "
                             f"tenant {by_zone[zone(seg)]}: tenants need segments that differ in their low 16 bits"))
        by_segment.setdefault(seg, tname)
        by_zone.setdefault(zone(seg), tname)
    if vxlan:
        problems += _vteps(cfg)
    return problems


def _vteps(cfg: Config) -> list[tuple[str, str]]:
    problems = []
    if not cfg.hypervisors and cfg.tenants:
        problems.append(("hypervisors", "vxlan mode needs each hypervisor listed with its vtep address"))
    seen: dict[ipaddress.IPv4Address, str] = {}
    for name, spec in cfg.hypervisors.items():
        path = f"hypervisors.{name}.vtep"
        if spec.vtep is None:
            problems.append((path, "required in vxlan mode: the hypervisor's tunnel endpoint address"))
            continue
        if spec.vtep in seen:
            problems.append((path, f"{spec.vtep} is already the vtep of {seen[spec.vtep]}"))
        seen.setdefault(spec.vtep, name)
        if spec.vtep.is_multicast or spec.vtep.is_unspecified or spec.vtep.is_loopback:
            problems.append((path, f"{spec.vtep} cannot be a tunnel endpoint (not a unicast address)"))
        problems += ((path, f"{spec.vtep} is inside the subnet {t.subnet} of tenant {tname}: "
                      "VMs could take the tunnel endpoint's address")
                     for tname, t in cfg.tenants.items() if spec.vtep in t.subnet)
    for tname, tenant in cfg.tenants.items():
        for vname, vm in tenant.vms.items():
            if vm.host is not None and vm.host not in cfg.hypervisors:
                problems.append((f"tenants.{tname}.vms.{vname}.host",
                                 f"{vm.host} is not under hypervisors: in vxlan mode a VM's hypervisor needs a vtep"))
    return problems
