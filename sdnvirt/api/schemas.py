"""Response bodies, so that /v1/openapi.json describes what each call returns.

Request bodies are the config schema's own models (``sdnvirt.config``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

from ..config import Name, ServiceSpec, TenantSpec, VMSpec
from ..events import Kind
from ..secgroups import SecurityGroupSpec

Origin = Literal["file", "api"]     # the config file's version, or one the API made


class Problem(BaseModel):
    loc: str        # key path, like the config file's errors: tenants.blue.vms.web1.ip
    msg: str


class Error(BaseModel):
    detail: str | list[Problem]


class SwitchMaster(BaseModel):
    master: str             # the instance whose claim it is
    generation_id: int      # the claim's etcd revision, sent with the master's role request


class ClusterStatus(BaseModel):
    name: str               # this instance
    members: list[str]      # live instances
    leader: str | None
    fenced: bool            # this instance writes to no switch: its etcd lease may have expired
    switches: dict[str, SwitchMaster]       # by dpid: every claimed switch
    roles: dict[str, str]   # by dpid: this instance's role at each switch connected to it


class Status(BaseModel):
    version: str
    uptime_s: float
    config_file: str
    store: str
    switches: int
    links: int
    vms: int
    vms_located: int
    services: int
    backends: int
    backends_up: int
    cluster: ClusterStatus | None = None    # none: one instance, the embedded store


class Reloaded(BaseModel):
    tenants: int
    vms: int


class PortRef(BaseModel):
    switch: str
    dpid: str
    port: int


class Port(BaseModel):
    port: int
    up: bool
    peer: PortRef | None    # the port at the other end of a fabric link
    vm: str | None          # the VM plugged in here


class Switch(BaseModel):
    dpid: str
    name: str
    flows: int | None       # None until its flows were read
    ports: list[Port]


class Link(BaseModel):
    a: PortRef
    b: PortRef


class VMLocation(BaseModel):
    tenant: str
    name: str
    mac: str
    ip: str
    switch: str | None      # None: not located yet
    dpid: str | None = None
    port: int | None


class Topology(BaseModel):
    switches: list[Switch]
    links: list[Link]
    vms: list[VMLocation]


class FlowEntry(BaseModel):
    table: int
    priority: int
    match: dict[str, Any]       # OXM field -> value, or [value, mask]
    instructions: list[Any]     # sdnvirt.plan.flows' instructions, tuples as arrays
    cookie: str                 # hex
    owner: str                  # what the cookie names: "vm blue/web1", "service blue/web", "fabric"...


class GroupEntry(BaseModel):
    group_id: int
    buckets: list[list[Any]]    # each bucket's actions


class MeterEntry(BaseModel):
    meter_id: int
    rate: int                   # packets per second
    burst: int


class Vtep(BaseModel):
    address: str                # on the underlay
    port: int | None            # the switch's tunnel port; None while it has none that is up


class SwitchTables(BaseModel):
    dpid: str
    name: str
    read: bool                  # False until the controller has read what it holds
    vtep: Vtep | None = None    # vxlan mode: the hypervisor's tunnel endpoint
    flows: list[FlowEntry]
    groups: list[GroupEntry]
    meters: list[MeterEntry]


class LinkEnd(BaseModel):
    dpid: str
    port: int


class DpidLink(BaseModel):
    a: LinkEnd
    b: LinkEnd


class Segment(BaseModel):
    name: str
    segment: int


class FabricTables(BaseModel):
    switches: list[SwitchTables]
    links: list[DpidLink]
    tenants: list[Segment]
    vms: list[VMLocation]


class BackendHealth(BaseModel):
    tenant: str
    service: str
    backend: str            # vm:port
    vm: str
    port: int
    weight: int
    drained: bool
    up: bool
    takes_new_connections: bool
    last_check: str         # what the last probe (or event) said
    last_latency_ms: float | None
    checks: dict[str, int]  # success / failure counts
    connections: int = 0
    packets_to_backend: int = 0
    bytes_to_backend: int = 0
    packets_from_backend: int = 0
    bytes_from_backend: int = 0


# -- bodies of POST (create): the config's own models, plus the new object's name

class NewTenant(TenantSpec):
    name: Name


class NewVM(VMSpec):
    name: Name


class NewService(ServiceSpec):
    name: Name


class NewSecurityGroup(SecurityGroupSpec):
    name: Name


# -- objects as the API shows them: the config's models, plus name and origin

class Tenant(TenantSpec):
    name: str
    origin: Origin


class VM(VMSpec):
    tenant: str
    name: str
    origin: Origin
    switch: str | None      # where it is now (None: not located)
    port: int | None


class Service(ServiceSpec):
    tenant: str
    name: str
    origin: Origin


class SecurityGroup(SecurityGroupSpec):
    tenant: str
    name: str
    origin: Origin
    members: list[str]      # the tenant's VMs that list it (set through each VM)


class Event(BaseModel):
    """``sdnvirt.events``: what happened, when (wall-clock seconds), with its fields."""

    id: int
    time: float
    kind: Kind
    fields: dict[str, bool | int | float | str | None]


class EventsPage(BaseModel):
    events: list[Event]
    last: int       # the newest id of any kind: the cursor for the next call
    oldest: int     # the oldest id the daemon still holds
    missed: bool    # events after the cursor are gone: re-read the state
