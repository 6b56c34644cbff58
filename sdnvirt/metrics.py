"""Prometheus metrics of the daemon, on a registry of its own.

Two kinds, kept apart on purpose:

- events, counted where they happen (``Metrics``): OpenFlow messages sent
  and refused, packet-ins, reconcile runs, config reloads, probe latencies;
- state the daemon already holds (switches, tenants, VMs and where they
  are, backend health, what the switches counted), read at scrape time
  on the controller's loop by ``StateCollector``: no second copy that could
  drift from the truth.

Labels name configured or discovered objects only (dpid, switch, table,
tenant, VM, service, backend), never anything taken from a packet, so the
number of series is bounded by the config and the fabric.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from typing import cast

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
    disable_created_metrics,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from . import __version__
from .counters import Totals
from .events import Handler
from .fabric import Fabric
from .migration import ORDER, Mode, Outcome, Phase
from .model import Model
from .plan.encap import VxlanEncap, vteps
from .plan.tables import Table

DOWNTIME_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
PHASE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    """The daemon's event metrics and its registry."""

    def __init__(self):
        # A *_created series per counter and histogram doubles what Prometheus
        # stores and nothing here reads it (prometheus-client's switch is global).
        disable_created_metrics()
        self.registry = r = CollectorRegistry()
        ProcessCollector(registry=r)
        Info("sdnvirt_build", "Version of the running sdnvirt and of what it runs on.", registry=r).info({
            "version": __version__, "python_version": platform.python_version(),
            "os_ken_version": _version("os-ken")})
        self.openflow_sent = Counter(
            "sdnvirt_openflow_messages_sent", "OpenFlow messages sent to switches, by message type.",
            ["type"], registry=r)
        self.openflow_withheld = Counter(
            "sdnvirt_openflow_messages_withheld", "OpenFlow writes (flow, group, meter mods, packet-outs) not sent "
            "because another instance of the cluster is the switch's master, by message type.", ["type"], registry=r)
        self.openflow_errors = Counter(
            "sdnvirt_openflow_errors", "OFPT_ERROR messages received: a switch refused a message, by error type "
            "(the log names the switch).", ["type"], registry=r)
        self.packet_ins = Counter(
            "sdnvirt_packet_ins", "Packet-ins received, by OpenFlow reason and by what they are for.",
            ["reason", "purpose"], registry=r)
        self.packet_in_seconds = Histogram(
            "sdnvirt_packet_in_handling_seconds", "Time to handle one packet-in, by what it is for.",
            ["purpose"], registry=r,
            buckets=(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1))
        self.reconcile_runs = Counter(
            "sdnvirt_reconcile_runs", "Reconcile runs (plan, diff, write the differences), by result.",
            ["result"], registry=r)
        self.reconcile_seconds = Histogram(
            "sdnvirt_reconcile_duration_seconds", "Duration of one reconcile run, switch confirmations included.",
            registry=r, buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
        self.reconcile_changes = Counter(
            "sdnvirt_reconcile_changes", "Flows and groups written by reconcile runs, by object and operation.",
            ["object", "operation"], registry=r)
        self.config_reloads = Counter(
            "sdnvirt_config_reloads", "Re-reads of the config file (SIGHUP or POST /v1/reload) and changes "
            "other processes made in the store, by result.",
            ["result"], registry=r)
        self.config_load_error = Gauge(
            "sdnvirt_config_load_error",
            "1 if the last config reload failed and the daemon still runs on the config before it.", registry=r)
        self.handler_errors = Counter(
            "sdnvirt_handler_errors", "Exceptions the daemon caught and survived, by the handler that raised "
            "(the log has the traceback).", ["handler"], registry=r)
        self.probe_latency = Histogram(
            "sdnvirt_probe_latency_seconds", "Round trip of answered health probes, from packet-out to packet-in.",
            ["tenant", "service"], registry=r,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1))
        self.etcd_requests = Counter(
            "sdnvirt_etcd_requests", "Requests to etcd (several controllers), by operation and result: ok, refused "
            "(etcd answered with an error), unreachable (no member answered; the log names each one's error).",
            ["operation", "result"], registry=r)
        self.etcd_seconds = Histogram(
            "sdnvirt_etcd_request_duration_seconds", "Duration of one request to etcd, the members tried included, "
            "by operation.", ["operation"], registry=r,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
        # Series that exist from the start, so that dashboards and alerts see
        # zeros rather than nothing.
        for result in ("success", "failure"):
            self.config_reloads.labels(result)
            self.reconcile_runs.labels(result)
        for obj in ("flow", "group", "meter"):
            for op in ("add", "modify", "delete"):
                self.reconcile_changes.labels(obj, op)
        self.config_load_error.set(0)
        for handler in Handler:
            self.handler_errors.labels(handler.value)

    def sent(self, kind: str) -> None:
        self.openflow_sent.labels(kind).inc()

    def withheld(self, kind: str) -> None:
        self.openflow_withheld.labels(kind).inc()

    def packet_in(self, reason: str, purpose: str, seconds: float) -> None:
        self.packet_ins.labels(reason, purpose).inc()
        self.packet_in_seconds.labels(purpose).observe(seconds)

    def reconciled(self, result: str, seconds: float) -> None:
        self.reconcile_runs.labels(result).inc()
        self.reconcile_seconds.observe(seconds)

    def changed(self, obj: str, **counts: int) -> None:
        """Flows, groups or meters written, by operation (add, modify, delete)."""
        for op, n in counts.items():
            self.reconcile_changes.labels(obj, op).inc(n)

    def etcd_request(self, operation: str, seconds: float, result: str) -> None:
        self.etcd_requests.labels(operation, result).inc()
        self.etcd_seconds.labels(operation).observe(seconds)

    def errors_known(self, types) -> None:
        """Start every OpenFlow error type at zero (dashboards then show 0, not nothing)."""
        for t in types:
            self.openflow_errors.labels(t)

    def reloaded(self, ok: bool) -> None:
        self.config_reloads.labels("success" if ok else "failure").inc()
        self.config_load_error.set(0 if ok else 1)

    def serve(self, address: str, port: int):
        """The /metrics HTTP endpoint, served from a thread of its own; returns the server."""
        server, _ = start_http_server(port, address, registry=self.registry)
        return server


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"


@dataclass
class Snapshot:
    """What the daemon holds that the state metrics are made of; read on the controller's loop."""

    model: Model
    fabric: Fabric
    switch_names: dict[int, str]               # every switch that connected since the daemon started
    connected: set[int]
    table_flows: dict[int, dict[int, int]]     # dpid -> table -> flows the switch reports
    backend_counters: dict[tuple, dict]        # health key -> what the switches counted
    vm_traffic: Totals                         # VM name -> rx packets, rx bytes, tx packets, tx bytes (switch side)
    spoofed: Totals                            # VM name -> packets, bytes dropped by its anti-spoofing flow
    sg_dropped: Totals                         # (VM name, ingress/egress) -> packets its security groups dropped
    migrations: list[dict]                     # every migration record (Migration.as_dict()), finished or not
    # (switch name, remote VTEP, tx/rx) -> packets, bytes through its tunnels (vxlan mode)
    tunnels: Totals = field(default_factory=lambda: Totals(2))


class StateCollector:
    """Turns a ``Snapshot`` into metric families at each scrape.

    ``run`` runs what it is given where the daemon's state may be read (on
    the controller's loop) and returns its result."""

    def __init__(self, run: Callable[[Callable[[], list[Metric]]], list[Metric]], snapshot: Callable[[], Snapshot]):
        self.run = run
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        yield from self.run(lambda: list(state_families(self.snapshot())))

    def describe(self) -> list[Metric]:
        # Described as nothing, so registering never calls collect() (and
        # never waits for the controller's loop) before the daemon is running.
        return []


def dpid_label(dpid: int) -> str:
    return f"{dpid:016x}"


def _table_name(table: int) -> str:
    return Table(table).name.lower() if table in Table._value2member_map_ else str(table)


def state_families(s: Snapshot) -> Iterator[Metric]:
    model = s.model
    switch = GaugeMetricFamily("sdnvirt_switch_connected",
                               "1 while the switch is connected; 0 for a switch seen since the start that is not.",
                               labels=["dpid", "switch"])
    flows = GaugeMetricFamily("sdnvirt_switch_flows", "Flows in each table of a connected switch, as it reports them.",
                              labels=["dpid", "switch", "table"])
    for dpid, name in sorted(s.switch_names.items()):
        switch.add_metric([dpid_label(dpid), name], 1 if dpid in s.connected else 0)
        for table, count in sorted(s.table_flows.get(dpid, {}).items()):
            flows.add_metric([dpid_label(dpid), name, _table_name(table)], count)
    yield switch
    yield flows
    links = GaugeMetricFamily("sdnvirt_fabric_links", "Links between switches in use (heard both ways).")
    links.add_metric([], len(s.fabric.confirmed_links()) // 2)
    yield links

    tenants = GaugeMetricFamily("sdnvirt_tenants", "Configured tenants.")
    tenants.add_metric([], len(model.config.tenants))
    yield tenants
    vms = GaugeMetricFamily("sdnvirt_tenant_vms", "Configured VMs of each tenant.", labels=["tenant"])
    for tname, tenant in sorted(model.config.tenants.items()):
        vms.add_metric([tname], len(tenant.vms))
    yield vms
    yield from _vm_families(s)
    yield from _tunnel_families(s)
    yield from _vtep_family(s)
    yield from _backend_families(s)
    yield from migration_families(s.migrations)


def _vm_families(s: Snapshot) -> Iterator[Metric]:
    located = GaugeMetricFamily("sdnvirt_vm_located", "1 if the controller knows where the VM is plugged in.",
                                labels=["tenant", "vm"])
    where = GaugeMetricFamily("sdnvirt_vm_location", "Where each located VM is: always 1, the place is in the labels.",
                              labels=["tenant", "vm", "dpid", "switch", "port"])
    # The switch counts what it receives from the VM's port (what the VM
    # sends) and what it transmits to it (what the VM receives).
    traffic = {
        (direction, unit): CounterMetricFamily(
            f"sdnvirt_vm_{direction}_{unit}", f"{unit.capitalize()} the VM {verb} on its access port, "
            "counted by its switch.", labels=["tenant", "vm"])
        for direction, verb in (("transmit", "sent"), ("receive", "received")) for unit in ("packets", "bytes")}
    spoofed = {unit: CounterMetricFamily(
        f"sdnvirt_antispoof_dropped_{unit}", f"{unit.capitalize()} from a VM's port dropped by port security "
        "(another MAC or IP, tagged, or not IPv4/ARP/IPv6).", labels=["tenant", "vm"]) for unit in ("packets", "bytes")}
    groups = CounterMetricFamily(
        "sdnvirt_security_group_dropped_packets", "Packets to (ingress) or from (egress) a VM in security groups "
        "that no rule of its groups allowed, counted by its switch.", labels=["tenant", "vm", "direction"])
    for vm in s.model.vms():
        labels = [vm.tenant, vm.name]
        if vm.guarded:
            for direction in ("ingress", "egress"):
                groups.add_metric(labels + [direction], s.sg_dropped.get((vm.name, direction))[0])
        loc = s.model.locations.get(vm.name)
        located.add_metric(labels, 0 if loc is None else 1)
        if loc is not None:
            sw = s.fabric.switches.get(loc.dpid)
            name = (sw.name if sw else None) or s.switch_names.get(loc.dpid, dpid_label(loc.dpid))
            where.add_metric(labels + [dpid_label(loc.dpid), name, str(loc.port)], 1)
        rx_packets, rx_bytes, tx_packets, tx_bytes = s.vm_traffic.get(vm.name)
        for key, value in ((("transmit", "packets"), rx_packets), (("transmit", "bytes"), rx_bytes),
                           (("receive", "packets"), tx_packets), (("receive", "bytes"), tx_bytes)):
            traffic[key].add_metric(labels, value)
        for unit, value in zip(("packets", "bytes"), s.spoofed.get(vm.name), strict=True):
            spoofed[unit].add_metric(labels, value)
    yield located
    yield where
    yield from traffic.values()
    yield from spoofed.values()
    yield groups


def _tunnel_families(s: Snapshot) -> Iterator[Metric]:
    """Labels bounded by the hypervisors: one series per hypervisor, peer VTEP and direction."""
    families = {unit: CounterMetricFamily(
        f"sdnvirt_tunnel_{unit}", f"vxlan mode: {unit} a hypervisor sent into its tunnels to (tx) or took in from "
        "(rx) a remote VTEP, counted by its flows; tx of one end against rx of the other shows loss.",
        labels=["switch", "remote_vtep", "direction"]) for unit in ("packets", "bytes")}
    for owner, values in sorted(s.tunnels.totals.items()):
        labels = list(cast(tuple[str, str, str], owner))     # SwitchCounters.tunnels' owners
        for unit, value in zip(("packets", "bytes"), values, strict=True):
            families[unit].add_metric(labels, value)
    yield from families.values()


def _vtep_family(s: Snapshot) -> Iterator[Metric]:
    config = s.model.config
    if config.controller.fabric.encapsulation != VxlanEncap.name:
        return
    up = GaugeMetricFamily("sdnvirt_vtep_up", "vxlan mode: 1 while the hypervisor is connected with its tunnel port "
                           "up; 0 while its VMs are cut off from the other hypervisors.", labels=["switch", "vtep"])
    ends = vteps(s.fabric, config)
    usable = {s.fabric.switches[dpid].name for dpid, v in ends.items() if dpid in s.connected and v.port is not None}
    for name, spec in sorted(config.hypervisors.items()):
        if spec.vtep is not None:
            up.add_metric([name, str(spec.vtep)], 1 if name in usable else 0)
    yield up


def _backend_families(s: Snapshot) -> Iterator[Metric]:
    model = s.model
    svc_labels = ["tenant", "service"]
    b_labels = svc_labels + ["backend"]
    backends = GaugeMetricFamily("sdnvirt_service_backends", "Backends configured for the service.", labels=svc_labels)
    healthy = GaugeMetricFamily("sdnvirt_service_backends_healthy",
                                "Backends of the service that pass their health checks and are plugged in.",
                                labels=svc_labels)
    up = GaugeMetricFamily("sdnvirt_backend_up", "1 if the backend passes its health checks and is plugged in.",
                           labels=b_labels)
    weight = GaugeMetricFamily("sdnvirt_backend_weight", "The backend's configured weight (0: drained).",
                               labels=b_labels)
    probes = CounterMetricFamily("sdnvirt_backend_probes", "Health probes of the backend, by result.",
                                 labels=b_labels + ["result"])
    connections = CounterMetricFamily(
        "sdnvirt_backend_connections",
        "New connections the switches sent to the backend (its lb flow for new connections).", labels=b_labels)
    packets = CounterMetricFamily("sdnvirt_backend_packets", "Packets of load-balanced connections, by direction.",
                                  labels=b_labels + ["direction"])
    octets = CounterMetricFamily("sdnvirt_backend_bytes", "Bytes of load-balanced connections, by direction.",
                                 labels=b_labels + ["direction"])
    for svc in model.services():
        n_up = 0
        for b in svc.backends:
            key = svc.health_key(b)
            health = model.health[key]
            is_up = health.up and b.vm.name in model.locations
            n_up += is_up
            labels = [svc.tenant, svc.name, b.key]
            up.add_metric(labels, 1 if is_up else 0)
            weight.add_metric(labels, b.weight)
            for result, count in sorted(health.results.items()):
                probes.add_metric(labels + [result], count)
            counted = s.backend_counters.get(key, {})
            connections.add_metric(labels, counted.get("connections", 0))
            for direction in ("to_backend", "from_backend"):
                packets.add_metric(labels + [direction], counted.get(f"packets_{direction}", 0))
                octets.add_metric(labels + [direction], counted.get(f"bytes_{direction}", 0))
        backends.add_metric([svc.tenant, svc.name], len(svc.backends))
        healthy.add_metric([svc.tenant, svc.name], n_up)
    yield from (backends, healthy, up, weight, probes, connections, packets, octets)



def migration_families(records: list[dict]) -> Iterator[Metric]:
    """Counters and histograms made from the migration records at each scrape."""
    modes = [m.value for m in Mode]
    outcomes = {(mode, o.value): 0 for mode in modes for o in Outcome}
    downtimes: dict[str, list[float]] = {mode: [] for mode in modes}
    phases = [p.value for p in ORDER if p is not Phase.FINISHED]
    durations: dict[tuple[str, str], list[float]] = {(mode, p): [] for mode in modes for p in phases}
    running = 0
    for r in records:
        if r["outcome"] is None:
            running += 1
        else:
            outcomes[(r["mode"], r["outcome"])] += 1
        if r["downtime"] is not None:
            downtimes[r["mode"]].append(r["downtime"])
        for phase, times in r["phases"].items():
            if phase in phases and times["duration"] is not None:
                durations[(r["mode"], phase)].append(times["duration"])
    total = CounterMetricFamily("sdnvirt_migrations", "Finished migrations, by mode and outcome "
                                "(ok, rolled_back: the VM stayed at its source, failed).", labels=["mode", "outcome"])
    for labels, n in outcomes.items():
        total.add_metric(list(labels), n)
    yield total
    gauge = GaugeMetricFamily("sdnvirt_migrations_running", "Migrations in progress.")
    gauge.add_metric([], running)
    yield gauge
    downtime = HistogramMetricFamily(
        "sdnvirt_migration_downtime_seconds", "Time a migrated VM could not exchange traffic, from freeze to "
        "running at its target with the paths flipped.", labels=["mode"])
    for mode, values in downtimes.items():
        downtime.add_metric([mode], *_histogram(values, DOWNTIME_BUCKETS))
    yield downtime
    phase_time = HistogramMetricFamily("sdnvirt_migration_phase_duration_seconds",
                                       "Duration of each phase of a migration, once it ended.",
                                       labels=["mode", "phase"])
    for labels, values in durations.items():
        phase_time.add_metric(list(labels), *_histogram(values, PHASE_BUCKETS))
    yield phase_time


def _histogram(values: list[float], bounds: tuple[float, ...]) -> tuple[list[tuple[str, int]], float]:
    """Cumulative buckets and the sum, as HistogramMetricFamily.add_metric takes them."""
    buckets = [(str(b), sum(1 for v in values if v <= b)) for b in bounds] + [("+Inf", len(values))]
    return buckets, sum(values)
