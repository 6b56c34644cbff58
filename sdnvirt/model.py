"""Desired state: the validated config plus what the controller has learnt.

Everything that changes the network is a change here followed by the same
plan-and-reconcile step; nothing in this module knows about OpenFlow.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from .config import Config, HealthCheck, TenantSpec, virtual_mac
from .events import Claim
from .lb.health import Health


@dataclass(frozen=True, order=True)
class Location:
    """An access port: the switch (hypervisor) and the port a VM is plugged into."""

    dpid: int
    port: int


class Places(dict[str, Location]):
    """Where each VM is, by name, indexed the other way too: which VMs a port and a
    switch hold.  Learning asks that of every frame and every free port; a scan of
    ten thousand VMs each time would follow the datacenter, not the change."""

    def __init__(self, places: Mapping[str, Location] | None = None) -> None:
        super().__init__()
        # Insertion-ordered sets: learning never puts two VMs on a port, trusted binds might.
        self._at: dict[Location, dict[str, None]] = {}
        self._on: dict[int, dict[Location, None]] = {}
        for name, loc in (places or {}).items():
            self[name] = loc

    def at(self, loc: Location) -> str | None:
        """The (first) VM at ``loc``."""
        return next(iter(self._at.get(loc, ())), None)

    def on(self, dpid: int) -> dict[int, str]:
        """The VMs of a switch, by port."""
        return {loc.port: name for loc in self._on.get(dpid, ()) if (name := self.at(loc)) is not None}

    def __setitem__(self, name: str, loc: Location) -> None:
        if name in self:
            self._forget(name, self[name])
        super().__setitem__(name, loc)
        self._at.setdefault(loc, {})[name] = None
        self._on.setdefault(loc.dpid, {})[loc] = None

    def __delitem__(self, name: str) -> None:
        loc = self[name]
        super().__delitem__(name)
        self._forget(name, loc)

    def pop(self, name: str, *default: Location | None) -> Location | None:  # type: ignore[override]
        if name in self:
            loc = self[name]
            del self[name]
            return loc
        if default:
            return default[0]
        raise KeyError(name)

    def clear(self) -> None:
        super().clear()
        self._at.clear()
        self._on.clear()

    def _forget(self, name: str, loc: Location) -> None:
        held = self._at.get(loc, {})
        held.pop(name, None)
        if not held:
            self._at.pop(loc, None)
            ports = self._on.get(loc.dpid, {})
            ports.pop(loc, None)
            if not ports:
                self._on.pop(loc.dpid, None)

    def update(self, other: Mapping[str, Location] | None = None, /, **more: Location) -> None:  # type: ignore[override]
        for name, loc in {**(other or {}), **more}.items():
            self[name] = loc

    def setdefault(self, name: str, default: Location) -> Location:
        if name not in self:
            self[name] = default
        return self[name]

    def popitem(self) -> tuple[str, Location]:
        name = next(reversed(self))
        loc = self[name]
        del self[name]
        return name, loc


@dataclass(frozen=True)
class VM:
    name: str
    tenant: str
    segment: int
    mac: str
    ip: ipaddress.IPv4Address
    host: str | None
    # Its security groups; None: the VM is open inside its tenant.
    groups: tuple[str, ...] | None = None
    # VMs key the plan's dicts, ten thousand of them per plan: hashed once.
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash((self.name, self.tenant, self.segment, self.mac, self.ip, self.host,
                                                 self.groups)))

    def __hash__(self) -> int:
        return self._hash

    @property
    def guarded(self) -> bool:
        return self.groups is not None


@dataclass(frozen=True)
class Backend:
    vm: VM
    port: int
    weight: int
    drained: bool = False

    @property
    def key(self) -> str:
        return f"{self.vm.name}:{self.port}"


@dataclass(frozen=True)
class Service:
    tenant: str
    name: str
    segment: int
    vip: ipaddress.IPv4Address
    protocol: str
    port: int
    backends: tuple[Backend, ...]
    health_check: HealthCheck
    on_empty: str
    drain_on_migration: bool = False

    @property
    def vip_mac(self) -> str:
        return virtual_mac(self.vip)

    @property
    def ip_proto(self) -> int:
        return {"tcp": 6, "udp": 17}[self.protocol]

    def health_key(self, backend: Backend) -> tuple[str, str, str]:
        return (self.tenant, self.name, backend.key)


@dataclass(frozen=True)
class Observation:
    """What the model made of a frame seen at an access port."""

    vm: VM | None
    bound: bool      # the VM is now (or already was) at this location
    moved_from: Location | None
    reason: str
    refused: Claim | None = None     # why a frame naming a known VM did not move it


class Moves(Protocol):
    """The VMs being migrated, as the migration records say (``sdnvirt.migration.Migrations``)."""

    def migrating(self) -> set[str]:
        """The VMs that only their migration may move."""

    def pending(self) -> dict[str, Location]:
        """The target ports where VMs' flows are pre-installed while forwarding
        still points at where the VMs are."""

    def draining(self) -> set[str]:
        """The VMs a migration drained as backends."""


class _NoMoves:
    def migrating(self) -> set[str]:
        return set()

    def pending(self) -> dict[str, Location]:
        return {}

    def draining(self) -> set[str]:
        return set()


class Model:
    def __init__(self, config: Config):
        self.locations = Places()
        self.moves: Moves = _NoMoves()
        # VMs that left their port and have not been seen since: a silent one
        # may come back anywhere, so a switch where something just came up is
        # probed for them too.
        self.lost: set[str] = set()
        self.set_config(config)

    @property
    def migrating(self) -> set[str]:
        return self.moves.migrating()

    @property
    def pending(self) -> dict[str, Location]:
        return self.moves.pending()

    @property
    def draining(self) -> set[str]:
        return self.moves.draining()

    def set_config(self, config: Config) -> None:
        """Adopt a new config, keeping what was learnt about VMs that still exist unchanged."""
        before, kept = getattr(self, "config", None), getattr(self, "_vms_of", {})
        self.config = config
        # A tenant whose config is the same keeps its VMs (the objects): an API change to
        # one tenant costs that tenant, and the planner sees the others' VMs unchanged at once.
        self._vms_of: dict[str, dict[str, VM]] = {
            tname: kept[tname] if before is not None and tname in kept and before.tenants.get(tname) == tenant else {
                vname: VM(vname, tname, tenant.segment, vm.mac, vm.ip, vm.host,
                          None if vm.security_groups is None else tuple(vm.security_groups))
                for vname, vm in sorted(tenant.vms.items())}
            for tname, tenant in sorted(config.tenants.items())
        }
        self._vms = {vname: vm for vms in self._vms_of.values() for vname, vm in vms.items()}
        self._by_mac = {vm.mac: vm for vm in self._vms.values()}
        for name in self.locations.keys() - self._vms.keys():
            del self.locations[name]
        self.lost &= self._vms.keys()
        self._services = [
            Service(tname, sname, tenant.segment, svc.vip, svc.protocol, svc.port,
                    tuple(Backend(self._vms[b.vm], b.port, b.weight, b.drained) for b in svc.backends),
                    svc.health_check, svc.on_empty, svc.drain_on_migration)
            for tname, tenant in sorted(config.tenants.items())
            for sname, svc in sorted(tenant.services.items())
        ]
        old = getattr(self, "health", {})
        self.health: dict[tuple[str, str, str], Health] = {}
        for svc in self._services:
            hc = svc.health_check
            for b in svc.backends:
                key = svc.health_key(b)
                kept = old.get(key)
                if kept is not None:
                    kept.rise, kept.fall = hc.rise, hc.fall
                self.health[key] = kept or Health(hc.rise, hc.fall)

    # -- queries -------------------------------------------------------------
    def vms(self) -> Iterator[VM]:
        return iter(self._vms.values())

    def vm(self, name: str) -> VM | None:
        return self._vms.get(name)

    def vm_by_mac(self, mac: str) -> VM | None:
        return self._by_mac.get(mac.lower())

    def vm_at(self, loc: Location) -> VM | None:
        """The VM at a port, or about to arrive there by a migration."""
        name = self.locations.at(loc) or next((n for n, where in self.pending.items() if where == loc), None)
        return None if name is None else self._vms[name]

    def unlocated(self) -> list[VM]:
        return [vm for vm in self._vms.values() if vm.name not in self.locations]

    def services(self) -> list[Service]:
        return list(self._services)

    def tenant(self, name: str) -> TenantSpec:
        return self.config.tenants[name]

    def usable(self, svc: Service, backend: Backend) -> bool:
        """May take new connections: not drained (by weight, by the operator or by
        its migration), healthy, and plugged in somewhere."""
        drained = backend.drained or (svc.drain_on_migration and backend.vm.name in self.draining)
        return (backend.weight > 0 and not drained and self.health[svc.health_key(backend)].up
                and backend.vm.name in self.locations)

    # -- learning ------------------------------------------------------------
    def observe(self, mac: str, ip: ipaddress.IPv4Address | None, loc: Location,
                port_live: Callable[[Location], bool]) -> Observation:
        """Decide whether a frame from ``mac`` (sender ``ip`` if it carried one) at ``loc``
        tells where a VM is.

        Learning must never let a port take over another VM's identity: a VM
        that is still plugged in and up somewhere is not moved by a frame
        claiming its MAC elsewhere, and a port that holds one VM does not
        take a second.  Deliberate moves go through a migration instead.
        """
        vm = self.vm_by_mac(mac)
        if vm is None:
            return Observation(None, False, None, "undeclared MAC")
        if ip is not None and ip != vm.ip:
            return Observation(vm, False, None, f"sender IP {ip} is not {vm.ip}", Claim.WRONG_IP)
        holder = self.vm_at(loc)
        if holder is not None and holder.name != vm.name:
            return Observation(vm, False, None, f"port already holds VM {holder.name}", Claim.PORT_TAKEN)
        old = self.locations.get(vm.name)
        if old == loc:
            return Observation(vm, True, None, "already there")
        if vm.name in self.migrating:
            return Observation(vm, False, None, "VM is migrating: only its migration moves it", Claim.MIGRATING)
        if old is not None and port_live(old):
            return Observation(vm, False, None, f"VM is still up at {old}", Claim.STILL_UP)
        self.locations[vm.name] = loc
        self.lost.discard(vm.name)
        return Observation(vm, True, old, "learnt")

    def unbind(self, vm_name: str, reason: str) -> list[tuple[Service, Backend]]:
        """The VM left its port: forget where it was, and take its backends
        down at once; returns the backends that went down."""
        if self.locations.pop(vm_name, None) is not None:
            self.lost.add(vm_name)
        return self.backends_down(vm_name, reason)

    def backends_down(self, vm_name: str, reason: str) -> list[tuple[Service, Backend]]:
        """Take the VM's backends down at once (probes bring them back)."""
        down = []
        for svc in self._services:
            for b in svc.backends:
                if b.vm.name == vm_name and self.health[svc.health_key(b)].force_down(reason):
                    down.append((svc, b))
        return down

    def bind(self, vm_name: str, loc: Location) -> None:
        """Record where a VM is, from a source the controller trusts (its own flows, an agent)."""
        if vm_name not in self._vms:
            raise KeyError(vm_name)
        self.locations[vm_name] = loc
        self.lost.discard(vm_name)
