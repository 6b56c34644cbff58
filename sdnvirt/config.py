"""The configuration file: its schema, loading and validation.

The schema is a set of pydantic models so that the config file, and later the
REST API, are checked by one definition; every error names the file, the key
path and what is wrong, like ``haproxy -c``.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BeforeValidator, Field, StrictInt, ValidationError, WithJsonSchema

from . import segments
from .schema import Name
from .schema import Strict as _Strict
from .secgroups import SecurityGroupSpec, group_checks

MAX_VNI = (1 << 24) - 1


class ConfigError(Exception):
    """One or more problems in a config, each as ``source: key.path: message``."""

    def __init__(self, source: str, problems: list[tuple[str, str]]):
        self.source = source
        self.problems = problems
        super().__init__("\n".join(
            f"{source}: {path or '(top level)'}: {msg}" for path, msg in problems))


def _mac(value: object) -> str:
    if isinstance(value, int):
        # YAML 1.1 reads an unquoted 52:54:00:12:34:56 as a base-60 number.
        raise ValueError('write the MAC address in quotes, like "02:00:00:00:01:01"')
    if not isinstance(value, str) or not re.fullmatch(r"([0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}", value):
        raise ValueError(f"not a MAC address like 02:00:00:00:01:01: {value!r}")
    if int(value[:2], 16) & 1:
        raise ValueError(f"{value} is a multicast MAC; a VM needs a unicast one")
    return value.lower()


# The pattern tells API clients (in /v1/openapi.json) what _mac accepts.
Mac = Annotated[str, BeforeValidator(_mac),
                WithJsonSchema({"type": "string", "pattern": "^([0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}$"})]


class OpenFlowSettings(_Strict):
    address: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.IPv4Address("0.0.0.0")
    port: Annotated[StrictInt, Field(ge=1, le=65535)] = 6653


class MetricsSettings(_Strict):
    # The Prometheus endpoint (/metrics). Loopback by default: the metrics
    # name tenants, VMs and switches, so opening it to the network is the
    # operator's choice.
    address: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.IPv4Address("127.0.0.1")
    port: Annotated[StrictInt, Field(ge=1, le=65535)] = 9302


class FabricSettings(_Strict):
    # LLDP is sent on every port this often; a link not heard from for
    # link_timeout is taken down (port-status events take it down at once).
    lldp_interval: Annotated[float, Field(gt=0, le=60)] = 1.0
    link_timeout: Annotated[float, Field(gt=0, le=600)] = 3.5
    # After a (re)start, switches that already carry sdnvirt flows are left
    # untouched until the fabric has been quiet this long, so that a restart
    # never removes flows for links or VMs it has not rediscovered yet.
    settle: Annotated[float, Field(ge=0, le=60)] = 1.0
    # Silent VMs are located by ARP probes on their hypervisor's free ports.
    locate_interval: Annotated[float, Field(gt=0, le=3600)] = 5.0
    # Packets per second each switch may send the controller from ports that
    # hold no VM (learning) and, separately, as LLDP from ports not yet known
    # as fabric ports; the excess is dropped in the switch.
    packet_in_rate: Annotated[StrictInt, Field(ge=10, le=1_000_000)] = 1000
    # How a tenant's frames cross between switches (sdnvirt/plan/encap.py):
    # vlan, the segment as an 802.1Q tag on fabric links the controller owns;
    # vxlan, the segment as a VNI in tunnels between the hypervisors' VTEPs
    # over an IP underlay the controller does not touch.
    encapsulation: Literal["vlan", "vxlan"] = "vlan"
    # vxlan: the name of each hypervisor bridge's flow-based VXLAN port
    # (options:remote_ip=flow options:key=flow).
    tunnel_port: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$")] = "vxlan0"
    # incremental: a change recomputes what it touches and only the keys it
    # changed are diffed; full: every reconcile plans the whole fabric afresh
    # and diffs every switch (the fallback the engine is tested against, and
    # the peer of bench/scale_live.py).
    planning: Literal["incremental", "full"] = "incremental"


class ApiSettings(_Strict):
    # The REST API (/v1); loopback only unless an operator opens it up.
    address: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.IPv4Address("127.0.0.1")
    port: Annotated[StrictInt, Field(ge=1, le=65535)] = 9303
    # The bearer token every call needs; generated (mode 0600) at first start.
    # Default: <state_dir>/api-token.
    token_file: str | None = None
    # GET /v1/events serves the last events_kept events (a few hundred bytes each).
    events_kept: Annotated[StrictInt, Field(ge=100, le=1_000_000)] = 10_000
    # GET /v1/audit keeps the last audit_kept changes asked of the API, in the store.
    audit_kept: Annotated[StrictInt, Field(ge=100, le=1_000_000)] = 10_000


class StoreSettings(_Strict):
    # The SQLite database of what the API changed. Default: <state_dir>/sdnvirt.db.
    path: str | None = None


class ClusterSettings(_Strict):
    # Several instances sharing the desired state in etcd, each switch mastered by one of them.
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")]   # unique per instance
    etcd: Annotated[list[Annotated[str, Field(pattern=r"^http://[^/\s:]+(:\d{1,5})?/?$")]], Field(min_length=1)]
    # Seconds: a dead instance's switches move after about this long. etcd counts
    # leases in whole seconds, 2 at least with its default timings.
    lease_ttl: Annotated[float, Field(ge=2.0, le=60.0)] = 2.0


class ControllerSettings(_Strict):
    openflow: OpenFlowSettings = OpenFlowSettings()
    metrics: MetricsSettings = MetricsSettings()
    fabric: FabricSettings = FabricSettings()
    api: ApiSettings = ApiSettings()
    store: StoreSettings = StoreSettings()
    # Set: the store is etcd's (store.path is not used), shared with the other instances.
    cluster: ClusterSettings | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # Where the daemon keeps its state: the API token and the store, unless
    # their own settings say otherwise.
    state_dir: str = "/var/lib/sdnvirt"

    @property
    def token_path(self) -> Path:
        return Path(self.api.token_file or Path(self.state_dir) / "api-token")

    @property
    def store_path(self) -> Path:
        return Path(self.store.path or Path(self.state_dir) / "sdnvirt.db")


class VMSpec(_Strict):
    mac: Mac
    ip: ipaddress.IPv4Address
    # The hypervisor (edge switch name) the topology launcher places the VM on.
    # The controller does not trust it: it learns where the VM really is.
    host: Name | None = None
    # Memory the VM's migration copies (MB): an emulated pre-copy takes
    # memory / migration.copy_rate seconds; a qemu VM's RAM.
    memory: Annotated[StrictInt, Field(ge=1, le=16_777_216)] = 512
    # Security groups (sdnvirt/secgroups.py): with the key, the VM's port
    # allows only what the union of its groups allows; without it, all.
    security_groups: list[Name] | None = None
    # netns: a network namespace (a Mininet host); qemu: a QEMU guest on a tap,
    # live-migrated by QEMU itself (sdnvirt/emulation/qemu.py).
    kind: Literal["netns", "qemu"] = "netns"
    # qemu only: MiB a second the guest rewrites, so that pre-copy has work.
    dirty: Annotated[StrictInt, Field(ge=0, le=1024)] = 0


Port = Annotated[StrictInt, Field(ge=1, le=65535)]


class HealthCheck(_Strict):
    # tcp: SYN-ACK is up, RST or timeout down; udp: an ICMP port unreachable
    # is down, silence is up; icmp: an echo reply is up; http: GET path, the
    # answer's status must be expect.
    type: Literal["tcp", "udp", "icmp", "http"] | None = None   # default: the service's protocol
    interval: Annotated[float, Field(gt=0, le=3600)] = 1.0
    timeout: Annotated[float, Field(gt=0, le=3600)] = 1.0
    rise: Annotated[StrictInt, Field(ge=1, le=100)] = 2
    fall: Annotated[StrictInt, Field(ge=1, le=100)] = 2
    # http only. The request line must fit in the one segment the probe sends.
    path: Annotated[str, Field(pattern=r"^/[\x21-\x7e]{0,200}$")] = "/"
    expect: Annotated[StrictInt, Field(ge=100, le=599)] = 200


class BackendSpec(_Strict):
    vm: Name
    port: Port
    weight: Annotated[StrictInt, Field(ge=0, le=255)] = 1    # 0: takes no new connections
    # Takes no new connections, existing ones finish; unlike weight 0 it keeps
    # the weight for when it is undrained (what `sdnvirt drain` sets).
    drained: bool = False


class ServiceSpec(_Strict):
    vip: ipaddress.IPv4Address
    protocol: Literal["tcp", "udp"] = "tcp"
    port: Port
    backends: list[BackendSpec] = []
    health_check: HealthCheck = HealthCheck()
    # With no healthy backend: reject answers at once (TCP RST, ICMP port
    # unreachable), drop stays silent.
    on_empty: Literal["reject", "drop"] = "reject"
    # A backend about to migrate takes no new connection from the moment its
    # migration is accepted until it is restored at its target.
    drain_on_migration: bool = False


class TenantSpec(_Strict):
    # vlan mode: the 802.1Q VLAN id (1..4094); vxlan mode: the VNI.
    segment: Annotated[StrictInt, Field(ge=1, le=MAX_VNI)]
    subnet: ipaddress.IPv4Network
    vms: dict[Name, VMSpec] = {}
    services: dict[Name, ServiceSpec] = {}
    security_groups: dict[Name, SecurityGroupSpec] = {}
    # Where health probes come from: an address of the tenant no VM uses
    # (default: the subnet's last usable address).
    service_address: ipaddress.IPv4Address | None = None

    @property
    def probe_ip(self) -> ipaddress.IPv4Address:
        return self.service_address or self.subnet.broadcast_address - 1


class EmulationSettings(_Strict):
    # 'user' is the OVS userspace datapath (netdev); 'kernel' needs the
    # openvswitch kernel module.
    datapath: Literal["user", "kernel"] = "user"
    # How QEMU guests run: tcg (emulated, works everywhere) or kvm (needs a
    # usable /dev/kvm; nested virtualisation often has none that works).
    accel: Literal["tcg", "kvm"] = "tcg"


class MigrationSettings(_Strict):
    # The emulated data transfer (the hypervisor agent): pre-copy takes
    # memory / copy_rate seconds while the VM runs; then the VM is frozen for
    # stop_and_copy seconds while its interface moves (live mode). Cold mode
    # freezes it for the whole copy.
    copy_rate: Annotated[float, Field(gt=0, le=1_000_000)] = 1000.0     # MB/s
    stop_and_copy: Annotated[float, Field(ge=0, le=60)] = 0.1
    # A migration not finished this long after it was accepted is rolled back.
    timeout: Annotated[float, Field(gt=0, le=3600)] = 30.0
    # ... and so is one whose agent has been silent this long.
    agent_timeout: Annotated[float, Field(gt=0, le=600)] = 3.0
    # Capacity of a hypervisor not listed under `hypervisors`.
    max_vms: Annotated[StrictInt, Field(ge=0, le=100_000)] = 16


class HypervisorSpec(_Strict):
    # Migrations into this hypervisor are refused once it holds (or is
    # receiving) this many VMs. Default: migration.max_vms.
    max_vms: Annotated[StrictInt, Field(ge=0, le=100_000)] | None = None
    # vxlan mode: the hypervisor's tunnel endpoint address on the underlay.
    vtep: ipaddress.IPv4Address | None = None


class Config(_Strict):
    controller: ControllerSettings = ControllerSettings()
    emulation: EmulationSettings = EmulationSettings()
    migration: MigrationSettings = MigrationSettings()
    # By switch name (the name of its LOCAL port).
    hypervisors: dict[Name, HypervisorSpec] = {}
    tenants: dict[Name, TenantSpec] = {}

    def capacity(self, hypervisor: str) -> int:
        """How many VMs the hypervisor may hold."""
        spec = self.hypervisors.get(hypervisor)
        return self.migration.max_vms if spec is None or spec.max_vms is None else spec.max_vms


def _cross_checks(cfg: Config) -> list[tuple[str, str]]:
    """What one key alone cannot say: uniqueness and containment rules."""
    problems = []
    fabric = cfg.controller.fabric
    if fabric.link_timeout <= fabric.lldp_interval:
        problems.append(("controller.fabric.link_timeout",
                         f"must be longer than lldp_interval ({fabric.lldp_interval})"))
    problems += segments.checks(cfg)
    macs: dict[str, str] = {}
    vm_names: dict[str, str] = {}
    for tname, tenant in cfg.tenants.items():
        base = f"tenants.{tname}"
        ips: dict[ipaddress.IPv4Address, str] = {}
        for vname, vm in tenant.vms.items():
            path = f"{base}.vms.{vname}"
            if vname in vm_names:
                problems.append((path, f"VM name {vname} is already used in tenant {vm_names[vname]}"))
            vm_names.setdefault(vname, tname)
            if vm.mac in macs:
                problems.append((f"{path}.mac", f"MAC {vm.mac} is already used by VM {macs[vm.mac]}"))
            macs.setdefault(vm.mac, vname)
            if vm.ip not in tenant.subnet:
                problems.append((f"{path}.ip", f"{vm.ip} is outside the tenant subnet {tenant.subnet}"))
            elif vm.ip in (tenant.subnet.network_address, tenant.subnet.broadcast_address):
                problems.append((f"{path}.ip", f"{vm.ip} is the network or broadcast address of {tenant.subnet}"))
            if vm.ip in ips:
                problems.append((f"{path}.ip", f"{vm.ip} is already used by VM {ips[vm.ip]} of this tenant"))
            ips.setdefault(vm.ip, vname)
            if vm.dirty and vm.kind != "qemu":
                problems.append((f"{path}.dirty", "applies to kind qemu only"))
            for prefix in (VIRTUAL_MAC_PREFIX, *((LABEL_MAC_PREFIX,) if fabric.encapsulation == "vlan" else ())):
                if vm.mac.startswith(prefix):
                    problems.append((f"{path}.mac", f"MACs starting with {prefix} are sdnvirt's own"))
        problems += _service_checks(base, tenant, ips)
        problems += group_checks(base, tenant.security_groups,
                                 {vname: vm.security_groups for vname, vm in tenant.vms.items()})
    return problems


# Addresses the switches answer for (VIPs, the probe address) get the MAC
# 0a:5d:<the four bytes of the IPv4 address>: unique in a tenant, stable.
VIRTUAL_MAC_PREFIX = "0a:5d:"
# Frames crossing a vlan fabric are addressed to their destination's switch and
# port as 0e:<switch label>:<port> (plan.encap.label_mac).
LABEL_MAC_PREFIX = "0e:"


def virtual_mac(ip: ipaddress.IPv4Address) -> str:
    return VIRTUAL_MAC_PREFIX + ":".join(f"{b:02x}" for b in ip.packed)


def _in_subnet(path: str, ip, tenant: TenantSpec, taken: dict) -> list[tuple[str, str]]:
    if ip not in tenant.subnet:
        return [(path, f"{ip} is outside the tenant subnet {tenant.subnet}")]
    if ip in (tenant.subnet.network_address, tenant.subnet.broadcast_address):
        return [(path, f"{ip} is the network or broadcast address of {tenant.subnet}")]
    if ip in taken:
        return [(path, f"{ip} is already used by {taken[ip]} in this tenant")]
    return []


def _service_checks(base: str, tenant: TenantSpec, vm_ips: dict) -> list[tuple[str, str]]:
    problems = []
    taken = {ip: f"VM {name}" for ip, name in vm_ips.items()}
    problems += _in_subnet(f"{base}.service_address", tenant.probe_ip, tenant, taken)
    taken[tenant.probe_ip] = "the service address"
    listeners: dict[tuple, str] = {}
    for sname, svc in tenant.services.items():
        path = f"{base}.services.{sname}"
        vip_owner = taken.get(svc.vip)
        if vip_owner is None or not vip_owner.startswith("service "):
            problems += _in_subnet(f"{path}.vip", svc.vip, tenant, taken)
            taken.setdefault(svc.vip, f"service {sname}")
        listener = (svc.vip, svc.protocol, svc.port)
        if listener in listeners:
            problems.append((path, f"{svc.vip} {svc.protocol}/{svc.port} is already service {listeners[listener]}"))
        listeners.setdefault(listener, sname)
        seen = set()
        for i, backend in enumerate(svc.backends):
            if backend.vm not in tenant.vms:
                problems.append((f"{path}.backends.{i}.vm", f"{backend.vm} is not a VM of this tenant"))
            if (backend.vm, backend.port) in seen:
                problems.append((f"{path}.backends.{i}", f"{backend.vm}:{backend.port} is listed twice"))
            seen.add((backend.vm, backend.port))
        hc = svc.health_check
        if hc.timeout > hc.interval:
            problems.append((f"{path}.health_check.timeout", f"must not exceed interval ({hc.interval})"))
        allowed = (svc.protocol, "icmp", *(("http",) if svc.protocol == "tcp" else ()))
        if hc.type not in (None, *allowed):
            problems.append((f"{path}.health_check.type", f"a {svc.protocol} service is checked by "
                             f"{' or '.join(allowed)}, not {hc.type}"))
        if hc.type != "http":
            # Compared with the defaults, not with what was written: the API
            # store writes every field back.
            for key in ("path", "expect"):
                if getattr(hc, key) != HealthCheck.model_fields[key].default:
                    problems.append((f"{path}.health_check.{key}", "applies to type http only"))
    return problems


def _path(loc: tuple) -> str:
    return ".".join(str(part) for part in loc)


def parse(data: object, source: str = "<config>") -> Config:
    """Validate an already-decoded document; raise ConfigError listing every problem."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, [("", f"the config must be a mapping, not {type(data).__name__}")])
    try:
        cfg = Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(source, [(_path(e["loc"]), e["msg"]) for e in err.errors()]) from None
    problems = _cross_checks(cfg)
    if problems:
        raise ConfigError(source, problems)
    return cfg


def load(path: str | Path) -> Config:
    """Read and validate a YAML config file."""
    source = str(path)
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise ConfigError(source, [("", f"cannot read: {err.strerror}")]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(source, [("", f"not valid YAML: {where}{getattr(err, 'problem', err)}")]) from None
    return parse(data, source)
