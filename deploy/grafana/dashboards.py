"""The Grafana dashboards in deploy/grafana/dashboards/, built with grafana-foundation-sdk.

`python deploy/grafana/dashboards.py` rewrites the JSON files. They stay committed because Grafana
provisions them from disk and operators copy them; tests/test_deploy.py fails when they differ
from what this file builds. The SDK build used is the one generated from Grafana 10.4's schema,
the oldest Grafana the README supports.
"""

import itertools
import string
from pathlib import Path
from typing import NamedTuple

from grafana_foundation_sdk.builders import bargauge, common, prometheus, stat, statetimeline, table, timeseries
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as c
from grafana_foundation_sdk.models import dashboard as m
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

OUT = Path(__file__).parent / "dashboards"
# The dashboards never name a data source: they ask for one of type prometheus.
DS = m.DataSourceRef(type_val="prometheus", uid="${datasource}")
T = '{tenant=~"$tenant"}'
TS = '{tenant=~"$tenant", service=~"$service"}'
RATE = "[$__rate_interval]"


class Panel(NamedTuple):
    kind: str                       # a key of KINDS
    title: str
    unit: str
    size: tuple[int, int]           # width (of 24), height
    targets: list[tuple[str, str]]  # (PromQL, legend)
    description: str = ""
    alarm: bool = False             # red at 0, green from 1


def quantiles(metric: str, by: str, legend: str, selector: str = "") -> list[tuple[str, str]]:
    """The p50 and p99 targets of a histogram, by the labels `by`."""
    return [(f"histogram_quantile({q}, sum by (le{by and ', ' + by}) (rate({metric}_bucket{selector}{RATE})))",
             f"p{p} {legend}".strip()) for q, p in (("0.5", 50), ("0.99", 99))]


# The rows only a daemon of several controllers (controller.cluster) has data for.
CLUSTER_ROW = "Cluster (several controllers)"

VARIABLES = {"tenant": ("Tenant", "label_values(sdnvirt_tenant_vms, tenant)"),
             "service": ("Service", f"label_values(sdnvirt_service_backends{T}, service)")}

# file name: (uid, title, description, variables, [(row title, [panels])]); panels flow left to right.
DASHBOARDS = {
    "fabric": ("sdnvirt-fabric", "sdnvirt / Fabric overview",
               "Switches, flows, OpenFlow traffic and the controller's own work.", [], [
        ("Now", [
            Panel("stat", "Switches connected", "short", (4, 4), [("sum(sdnvirt_switch_connected)", "")],
                  "Switches with an OpenFlow connection to the controller."),
            Panel("stat", "Switches disconnected", "short", (4, 4),
                  [("count(sdnvirt_switch_connected == 0) or vector(0)", "")],
                  "Switches seen since the controller started that are not connected now."),
            Panel("stat", "Fabric links", "short", (4, 4), [("sum(sdnvirt_fabric_links)", "")],
                  "Links between switches heard in both directions."),
            Panel("stat", "Tenants", "short", (4, 4), [("sum(sdnvirt_tenants)", "")]),
            Panel("stat", "VMs located", "short", (4, 4), [("sum(sdnvirt_vm_located)", "")],
                  "VMs whose access port the controller knows."),
            Panel("stat", "Config load error", "short", (4, 4), [("max(sdnvirt_config_load_error)", "")],
                  "1: the last reload (SIGHUP) failed; the daemon runs on the config before it."),
            Panel("table", "Build", "short", (24, 4), [("sdnvirt_build_info", "")], "Version of the running daemon."),
        ]),
        ("Switches", [
            Panel("state", "Switch connections", "short", (12, 8), [("sdnvirt_switch_connected", "{{switch}}")],
                  "1 connected, 0 disconnected."),
            Panel("timeseries", "Flows per switch", "short", (12, 8),
                  [("sum by (switch) (sdnvirt_switch_flows)", "{{switch}}")],
                  "Flows each switch reports holding, all tables."),
            Panel("timeseries", "Flows per table", "short", (12, 8),
                  [("sum by (table) (sdnvirt_switch_flows)", "{{table}}")],
                  "Flows in each pipeline table, all switches."),
            Panel("timeseries", "Controller process", "short", (12, 8), [
                (f"rate(process_cpu_seconds_total{RATE}) and on (instance, job) sdnvirt_build_info",
                 "CPU seconds/s {{instance}}"),
                ("process_resident_memory_bytes and on (instance, job) sdnvirt_build_info",
                 "resident bytes {{instance}}")],
                  "CPU and memory of the sdnvirt daemon."),
        ]),
        ("OpenFlow", [
            Panel("timeseries", "Messages sent", "ops", (12, 8),
                  [(f"sum by (type) (rate(sdnvirt_openflow_messages_sent_total{RATE}))", "{{type}}")],
                  "OpenFlow messages the controller sent, per second, by type."),
            Panel("timeseries", "Errors from switches", "ops", (12, 8),
                  [(f"sum by (type) (rate(sdnvirt_openflow_errors_total{RATE}))", "{{type}}")],
                  "OFPT_ERROR messages: messages a switch refused (the controller re-reads that switch)."),
            Panel("timeseries", "Packet-ins", "pps", (12, 8),
                  [(f"sum by (purpose, reason) (rate(sdnvirt_packet_ins_total{RATE}))", "{{purpose}} ({{reason}})")],
                  "Packet-ins per second: learn (frames from free ports), lldp, probe_reply, reject."),
            Panel("timeseries", "Packet-in handling time", "s", (12, 8),
                  quantiles("sdnvirt_packet_in_handling_seconds", "purpose", "{{purpose}}")),
        ]),
        ("Reconcile", [
            Panel("timeseries", "Reconcile runs", "ops", (8, 8),
                  [(f"sum by (result) (rate(sdnvirt_reconcile_runs_total{RATE}))", "{{result}}")]),
            Panel("timeseries", "Reconcile duration", "s", (8, 8),
                  quantiles("sdnvirt_reconcile_duration_seconds", "", ""),
                  "Plan, diff and write, waiting for the switches' barriers."),
            Panel("timeseries", "Flows and groups written", "ops", (8, 8),
                  [(f"sum by (object, operation) (rate(sdnvirt_reconcile_changes_total{RATE}))",
                    "{{object}} {{operation}}")]),
            Panel("timeseries", "Config reloads", "short", (24, 6),
                  [(f"sum by (result) (increase(sdnvirt_config_reloads_total{RATE}))", "{{result}}")],
                  "SIGHUP reloads; a failure leaves the daemon on the config before it."),
        ]),
        (CLUSTER_ROW, [
            Panel("stat", "Members", "short", (6, 5), [("max(sdnvirt_cluster_members)", "")],
                  "Live instances, as the instance that sees most of them says."),
            Panel("table", "Leader", "short", (6, 5), [("sdnvirt_cluster_leader == 1", "")],
                  "The instance that runs the fabric-wide duties (health probing, migrations)."),
            Panel("stat", "Switches without a master", "short", (6, 5),
                  [("max(sdnvirt_cluster_switches_without_master)", "")],
                  "Connected switches that no instance has claimed: they take no changes."),
            Panel("stat", "Instances fenced", "short", (6, 5), [("sum(sdnvirt_cluster_fenced)", "")],
                  "Instances that write to no switch because their etcd lease may have expired."),
            Panel("table", "Master of each switch", "short", (24, 6), [("sdnvirt_switch_master == 1", "")],
                  "The instance that holds the OpenFlow MASTER role at each switch (the others are SLAVE)."),
            Panel("timeseries", "etcd request duration", "s", (12, 8),
                  quantiles("sdnvirt_etcd_request_duration_seconds", "operation", "{{operation}}"),
                  "Requests to etcd, the members tried included: range (reads), txn (writes), keepalive, watch."),
            Panel("timeseries", "etcd requests", "ops", (12, 8),
                  [(f"sum by (operation, result) (rate(sdnvirt_etcd_requests_total{RATE}))",
                    "{{operation}} {{result}}")],
                  "refused: etcd answered with an error; unreachable: no member answered."),
        ]),
    ]),
    "tenants": ("sdnvirt-tenants", "sdnvirt / Tenants",
                "Tenants, their VMs, where they are and their traffic.", ["tenant"], [
        ("VMs", [
            Panel("bargauge", "VMs per tenant", "short", (8, 8), [
                (f"sdnvirt_tenant_vms{T}", "{{tenant}}"),
                (f"sum by (tenant) (sdnvirt_vm_located{T})", "{{tenant}} located")]),
            Panel("table", "Where each VM is", "short", (16, 8), [(f"sdnvirt_vm_location{T}", "")],
                  "The access port the controller bound each located VM to."),
        ]),
        ("Traffic (counted by the switches at each VM's access port)", [
            Panel("timeseries", "Tenant traffic, bytes/s", "Bps", (12, 8), [
                (f"sum by (tenant) (rate(sdnvirt_vm_transmit_bytes_total{T}{RATE}))", "{{tenant}} sent"),
                (f"sum by (tenant) (rate(sdnvirt_vm_receive_bytes_total{T}{RATE}))", "{{tenant}} received")]),
            Panel("timeseries", "Tenant traffic, packets/s", "pps", (12, 8), [
                (f"sum by (tenant) (rate(sdnvirt_vm_transmit_packets_total{T}{RATE}))", "{{tenant}} sent"),
                (f"sum by (tenant) (rate(sdnvirt_vm_receive_packets_total{T}{RATE}))", "{{tenant}} received")]),
            Panel("timeseries", "VM sent, bytes/s", "Bps", (12, 8),
                  [(f"sum by (tenant, vm) (rate(sdnvirt_vm_transmit_bytes_total{T}{RATE}))", "{{tenant}}/{{vm}}")]),
            Panel("timeseries", "VM received, bytes/s", "Bps", (12, 8),
                  [(f"sum by (tenant, vm) (rate(sdnvirt_vm_receive_bytes_total{T}{RATE}))", "{{tenant}}/{{vm}}")]),
        ]),
        ("Port security", [
            Panel("timeseries", "Frames dropped by anti-spoofing", "pps", (24, 8),
                  [(f"sum by (tenant, vm) (rate(sdnvirt_antispoof_dropped_packets_total{T}{RATE}))",
                    "{{tenant}}/{{vm}}")],
                  "Frames from a VM's port with another MAC or IP, tagged, or of another ethertype."),
        ]),
        ("Security groups", [
            Panel("timeseries", "Packets dropped by security groups", "pps", (24, 8),
                  [(f"sum by (tenant, vm, direction) (rate(sdnvirt_security_group_dropped_packets_total{T}{RATE}))",
                    "{{tenant}}/{{vm}} {{direction}}")],
                  "Packets to (ingress) or from (egress) a VM in security groups that no rule of its groups "
                  "allowed, nor a connection they allowed."),
        ]),
    ]),
    "lb": ("sdnvirt-lb", "sdnvirt / Load balancer",
           "Services, backend health, probes and what the switches counted.", ["tenant", "service"], [
        ("Health", [
            Panel("stat", "Healthy backends", "short", (12, 5),
                  [(f"sdnvirt_service_backends_healthy{TS}", "{{tenant}}/{{service}}")],
                  "Backends that pass their health checks and are plugged in; "
                  "0: new connections are rejected or dropped.", alarm=True),
            Panel("stat", "Configured backends", "short", (12, 5),
                  [(f"sdnvirt_service_backends{TS}", "{{tenant}}/{{service}}")]),
            Panel("state", "Backend up", "short", (24, 8),
                  [(f"sdnvirt_backend_up{TS}", "{{tenant}}/{{service}} {{backend}}")]),
            Panel("timeseries", "Backend weight", "short", (12, 8),
                  [(f"sdnvirt_backend_weight{TS}", "{{tenant}}/{{service}} {{backend}}")],
                  "Configured weight; 0 is drained (no new connections)."),
            Panel("timeseries", "Probe results", "ops", (12, 8),
                  [(f"sum by (tenant, service, backend, result) (rate(sdnvirt_backend_probes_total{TS}{RATE}))",
                    "{{backend}} {{result}}")]),
            Panel("timeseries", "Probe round trip", "s", (24, 8),
                  quantiles("sdnvirt_probe_latency_seconds", "tenant, service", "{{tenant}}/{{service}}", TS),
                  "From the probe's packet-out to the answer's packet-in, through the data plane."),
        ]),
        ("Traffic (counted by the switches)", [
            Panel("timeseries", "New connections per backend", "cps", (8, 8),
                  [(f"sum by (tenant, service, backend) (rate(sdnvirt_backend_connections_total{TS}{RATE}))",
                    "{{service}} {{backend}}")]),
            Panel("timeseries", "Bytes per backend", "Bps", (8, 8),
                  [(f"sum by (tenant, service, backend, direction) (rate(sdnvirt_backend_bytes_total{TS}{RATE}))",
                    "{{backend}} {{direction}}")]),
            Panel("timeseries", "Packets per backend", "pps", (8, 8),
                  [(f"sum by (tenant, service, backend, direction) (rate(sdnvirt_backend_packets_total{TS}{RATE}))",
                    "{{backend}} {{direction}}")]),
        ]),
    ]),
    "migrations": ("sdnvirt-migrations", "sdnvirt / Migrations",
                   "VM live migrations: outcomes, downtime, phases.", [], [
        ("Migrations", [
            Panel("stat", "Running", "short", (6, 5), [("sum(sdnvirt_migrations_running)", "")]),
            Panel("stat", "Finished in range", "short", (18, 5),
                  [("sum by (outcome) (increase(sdnvirt_migrations_total[$__range]))", "{{outcome}}")],
                  "ok; rolled_back: the VM stayed at its source; failed: it could not be kept reachable."),
            Panel("timeseries", "Migrations by outcome", "short", (12, 8),
                  [(f"sum by (mode, outcome) (increase(sdnvirt_migrations_total{RATE}))", "{{mode}} {{outcome}}")]),
            Panel("timeseries", "Downtime", "s", (12, 8),
                  [*quantiles("sdnvirt_migration_downtime_seconds", "mode", "{{mode}}"),
                   ("sum by (mode) (sdnvirt_migration_downtime_seconds_sum)"
                    " / sum by (mode) (sdnvirt_migration_downtime_seconds_count)", "mean since start {{mode}}")],
                  "From the VM's freeze to it running at the target with the paths flipped."),
            Panel("timeseries", "Phase durations (p90)", "s", (24, 8),
                  [(f"histogram_quantile(0.9, sum by (le, phase) "
                    f"(rate(sdnvirt_migration_phase_duration_seconds_bucket{RATE})))", "{{phase}}")]),
        ]),
    ]),
}

LAST = common.ReduceDataOptions().calcs(["lastNotNull"]).values(False)
RED_GREEN = (db.ThresholdsConfig().mode(m.ThresholdsMode.ABSOLUTE)
             .steps([m.Threshold(None, "red"), m.Threshold(1, "green")]))
KINDS = {
    "stat": lambda: (stat.Panel().reduce_options(LAST).color_mode(c.BigValueColorMode.VALUE)
                     .graph_mode(c.BigValueGraphMode.NONE).text_mode(c.BigValueTextMode.AUTO)),
    "timeseries": lambda: (timeseries.Panel()
                           .legend(common.VizLegendOptions().display_mode(c.LegendDisplayMode.LIST)
                                   .placement(c.LegendPlacement.BOTTOM).show_legend(True))
                           .tooltip(common.VizTooltipOptions().mode(c.TooltipDisplayMode.MULTI)
                                    .sort(c.SortOrder.DESCENDING))),
    "bargauge": lambda: (bargauge.Panel().orientation(c.VizOrientation.HORIZONTAL)
                         .display_mode(c.BarGaugeDisplayMode.BASIC).reduce_options(LAST)),
    # A 0/1 series over time: down in red, up in green.
    "state": lambda: statetimeline.Panel().mappings([m.ValueMap({
        "0": m.ValueMappingResult(text="down", color="red"), "1": m.ValueMappingResult(text="up", color="green")})]),
    # The latest value of each series, a row per series with its labels as columns.
    "table": table.Panel,
}


def panel(p: Panel, pid: int):
    b = KINDS[p.kind]().id(pid).title(p.title).datasource(DS).unit(p.unit).span(p.size[0]).height(p.size[1])
    if p.alarm or p.kind == "state":
        b.thresholds(RED_GREEN).color_scheme(db.FieldColor().mode(m.FieldColorModeId.THRESHOLDS))
    if p.description:
        b.description(p.description)
    for ref, (expr, legend) in zip(string.ascii_uppercase, p.targets, strict=False):
        q = prometheus.Dataquery().ref_id(ref).datasource(DS).expr(expr).legend_format(legend)
        b.with_target(q.instant().format(PromQueryFormat.TABLE) if p.kind == "table" else q.range())
    return b


def render() -> dict[str, str]:
    """The JSON text of every dashboard, by file name."""
    out = {}
    for name, (uid, title, description, variables, rows) in DASHBOARDS.items():
        b = (db.Dashboard(title).uid(uid).description(description).tags(["sdnvirt"]).timezone("browser")
             .tooltip(m.DashboardCursorSync.CROSSHAIR).refresh("30s").time("now-1h", "now")
             # One drop-down to the other sdnvirt dashboards, carrying the variables and the time range.
             .link(db.DashboardLink("sdnvirt").type(m.DashboardLinkType.DASHBOARDS).tags(["sdnvirt"])
                   .as_dropdown(True).include_vars(True).keep_time(True).icon("external link"))
             .with_variable(db.DatasourceVariable("datasource").label("Data source").type("prometheus")))
        for var in variables:
            label, query = VARIABLES[var]
            # The query in the form Grafana 10.4's Prometheus variable editor saves.
            b.with_variable(db.QueryVariable(var).label(label).datasource(DS)
                            .query({"qryType": 1, "query": query,
                                    "refId": "PrometheusVariableQueryEditor-VariableQuery"})
                            .refresh(m.VariableRefresh.ON_TIME_RANGE_CHANGED).sort(m.VariableSort.ALPHABETICAL_ASC)
                            .multi(True).include_all(True).all_value(".*"))
        ids = itertools.count(1)
        for row, panels in rows:
            b.with_row(db.Row(row).id(next(ids)))
            for p in panels:
                b.with_panel(panel(p, next(ids)))
        board = b.build()
        # The SDK stamps schema 36 on 10.4's panels; 39 is what Grafana 10.4 writes, so it migrates nothing.
        board.schema_version = 39
        out[f"{name}.json"] = JSONEncoder(indent=2).encode(board) + "\n"
    return out


if __name__ == "__main__":
    for file, text in render().items():
        (OUT / file).write_text(text)
