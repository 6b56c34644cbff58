"""The Prometheus exposition: names, labels and values, from a model and fabric in memory."""

import copy
import urllib.request

from fabrics import TWO_TENANTS, leafspine, placed_model
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sdnvirt.counters import Totals
from sdnvirt.emulation.lab import free_port
from sdnvirt.metrics import Metrics, Snapshot, StateCollector
from sdnvirt.migration import Migrations
from sdnvirt.plan.tables import Table

DOC = copy.deepcopy(TWO_TENANTS)
DOC["tenants"]["blue"]["services"] = {"web": {
    "vip": "10.1.0.100", "port": 80,
    "backends": [{"vm": "web2", "port": 8080}, {"vm": "web3", "port": 8080, "weight": 0}]}}
BLUE: dict = DOC["tenants"]["blue"]
BLUE["security_groups"] = {"open": {"rules": [{"direction": "ingress"}, {"direction": "egress"}]}}
BLUE["vms"]["web3"]["security_groups"] = ["open"]


def scrape(metrics):
    """{sample name: {labels as a sorted tuple: value}} and {family name: type}."""
    samples, types = {}, {}
    for family in text_string_to_metric_families(generate_latest(metrics.registry).decode()):
        types[family.name] = family.type
        for s in family.samples:
            samples.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return samples, types


def daemon_like(doc=DOC):
    """Metrics with the state collector over a model and fabric, as the app wires them."""
    model = placed_model(doc)
    fabric = leafspine()
    snap = Snapshot(model, fabric, switch_names={dpid: sw.name for dpid, sw in fabric.switches.items()},
                    connected=set(fabric.switches) - {0x202}, table_flows={0x101: {0: 12, 6: 7}},
                    backend_counters={("blue", "web", "web2:8080"): {
                        "connections": 3, "packets_to_backend": 10, "bytes_to_backend": 1000,
                        "packets_from_backend": 8, "bytes_from_backend": 4000}},
                    vm_traffic=Totals(4), spoofed=Totals(2), sg_dropped=Totals(1), migrations=[])
    metrics = Metrics()
    metrics.registry.register(StateCollector(lambda read: read(), lambda: snap))
    return metrics, snap


def one(samples, name, **labels):
    return samples[name][tuple(sorted(labels.items()))]


def test_every_metric_is_sdnvirt_or_process_and_counters_end_in_total():
    metrics, _ = daemon_like()
    metrics.packet_in("action", "learn", 0.001)
    _, types = scrape(metrics)
    assert {n for n in types if not n.startswith("sdnvirt_")} <= {
        "process_virtual_memory_bytes", "process_resident_memory_bytes", "process_start_time_seconds",
        "process_cpu_seconds", "process_open_fds", "process_max_fds"}
    text = generate_latest(metrics.registry).decode()
    for family in text_string_to_metric_families(text):
        if family.type == "counter":
            assert all(s.name.endswith("_total") for s in family.samples), family.name
        assert not any(s.name.endswith("_created") for s in family.samples), family.name
        # Base units only.
        assert not any(unit in family.name for unit in ("_ms", "milli", "_kb", "_mb", "percent")), family.name


def test_state_comes_from_the_model_and_the_fabric():
    metrics, snap = daemon_like()
    samples, _ = scrape(metrics)
    assert one(samples, "sdnvirt_switch_connected", dpid="0000000000000101", switch="leaf1") == 1
    assert one(samples, "sdnvirt_switch_connected", dpid="0000000000000202", switch="spine2") == 0
    assert one(samples, "sdnvirt_switch_flows", dpid="0000000000000101", switch="leaf1", table="forward") == 7
    assert one(samples, "sdnvirt_switch_flows", dpid="0000000000000101", switch="leaf1", table="ingress") == 12
    assert one(samples, "sdnvirt_fabric_links") == 8
    assert one(samples, "sdnvirt_tenants") == 2
    assert one(samples, "sdnvirt_tenant_vms", tenant="blue") == 3
    assert one(samples, "sdnvirt_vm_located", tenant="red", vm="db2") == 1
    assert one(samples, "sdnvirt_vm_location", tenant="red", vm="db2", dpid="0000000000000103",
               switch="leaf3", port="3") == 1
    assert one(samples, "sdnvirt_service_backends", tenant="blue", service="web") == 2
    assert one(samples, "sdnvirt_service_backends_healthy", tenant="blue", service="web") == 2
    assert one(samples, "sdnvirt_backend_weight", tenant="blue", service="web", backend="web3:8080") == 0
    assert one(samples, "sdnvirt_backend_connections_total", tenant="blue", service="web", backend="web2:8080") == 3
    assert one(samples, "sdnvirt_backend_bytes_total", tenant="blue", service="web", backend="web2:8080",
               direction="from_backend") == 4000

    # A VM that leaves its port is no longer located, and as a backend it is down.
    snap.model.unbind("web2", "its VM left its port")
    samples, _ = scrape(metrics)
    assert one(samples, "sdnvirt_vm_located", tenant="blue", vm="web2") == 0
    assert not [k for k in samples["sdnvirt_vm_location"] if ("vm", "web2") in k]
    assert one(samples, "sdnvirt_backend_up", tenant="blue", service="web", backend="web2:8080") == 0
    assert one(samples, "sdnvirt_service_backends_healthy", tenant="blue", service="web") == 1
    snap.model.health[("blue", "web", "web3:8080")].record(False, "RST")
    samples, _ = scrape(metrics)
    assert one(samples, "sdnvirt_backend_probes_total", tenant="blue", service="web", backend="web3:8080",
               result="failure") == 1


def test_vm_traffic_is_seen_from_the_vm_and_follows_it_across_ports():
    metrics, snap = daemon_like()
    # The switch received 10 packets / 1000 bytes from web1's port and sent it 5 / 300.
    snap.vm_traffic.add((0x101, 3), "web1", (10, 1000, 5, 300))
    snap.vm_traffic.add((0x101, 3), "web1", (12, 1200, 5, 300))
    # web1 moves to leaf2 port 5, a port that already counted 50 packets for nobody.
    snap.vm_traffic.add((0x102, 5), None, (50, 5000, 50, 5000))
    snap.vm_traffic.add((0x102, 5), "web1", (51, 5100, 53, 5400))
    snap.spoofed.add((0x101, 3), "web1", (4, 256))
    samples, _ = scrape(metrics)
    assert one(samples, "sdnvirt_vm_transmit_packets_total", tenant="blue", vm="web1") == 13
    assert one(samples, "sdnvirt_vm_transmit_bytes_total", tenant="blue", vm="web1") == 1300
    assert one(samples, "sdnvirt_vm_receive_packets_total", tenant="blue", vm="web1") == 8
    assert one(samples, "sdnvirt_vm_receive_bytes_total", tenant="blue", vm="web1") == 700
    assert one(samples, "sdnvirt_antispoof_dropped_packets_total", tenant="blue", vm="web1") == 4
    assert one(samples, "sdnvirt_vm_transmit_bytes_total", tenant="red", vm="db1") == 0


def test_totals_survive_counter_resets():
    t = Totals(1)
    t.add("flow", "a", (100,))
    t.add("flow", "a", (30,))       # the flow was re-added: 30 new
    t.add("flow", "b", (35,))       # now b's
    assert t.get("a") == (130,) and t.get("b") == (5,) and t.get("c") == (0,)


def test_events_and_zeros_from_the_start():
    metrics, _ = daemon_like()
    samples, _ = scrape(metrics)
    assert one(samples, "sdnvirt_config_load_error") == 0
    assert one(samples, "sdnvirt_config_reloads_total", result="failure") == 0
    assert one(samples, "sdnvirt_reconcile_changes_total", object="flow", operation="delete") == 0
    assert one(samples, "sdnvirt_handler_errors_total", handler="packet_in") == 0
    info = [dict(k) for k in samples["sdnvirt_build_info"]]
    assert info[0]["version"] and info[0]["os_ken_version"] != "unknown"

    metrics.reloaded(False)
    metrics.changed("flow", add=3, modify=1, delete=0)
    metrics.reconciled("success", 0.02)
    metrics.packet_in("action", "lldp", 0.0003)
    metrics.openflow_sent.labels("flow_mod").inc(4)
    metrics.probe_latency.labels("blue", "web").observe(0.002)
    samples, _ = scrape(metrics)
    assert one(samples, "sdnvirt_config_load_error") == 1
    assert one(samples, "sdnvirt_config_reloads_total", result="failure") == 1
    assert one(samples, "sdnvirt_reconcile_changes_total", object="flow", operation="add") == 3
    assert one(samples, "sdnvirt_reconcile_duration_seconds_count") == 1
    assert one(samples, "sdnvirt_packet_ins_total", reason="action", purpose="lldp") == 1
    assert one(samples, "sdnvirt_packet_in_handling_seconds_bucket", purpose="lldp", le="0.0005") == 1
    assert one(samples, "sdnvirt_openflow_messages_sent_total", type="flow_mod") == 4
    assert one(samples, "sdnvirt_probe_latency_seconds_count", tenant="blue", service="web") == 1
    metrics.reloaded(True)
    assert one(scrape(metrics)[0], "sdnvirt_config_load_error") == 0


def test_served_over_http():
    metrics, _ = daemon_like()
    port = free_port()
    server = metrics.serve("127.0.0.1", port)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            body = resp.read().decode()
    finally:
        server.shutdown()
        server.server_close()
    assert 'sdnvirt_switch_connected{dpid="0000000000000101",switch="leaf1"} 1.0' in body


def test_table_names():
    metrics, snap = daemon_like()
    snap.table_flows[0x102] = {int(t): 1 for t in Table}
    tables = {dict(k)["table"] for k in scrape(metrics)[0]["sdnvirt_switch_flows"] if ("switch", "leaf2") in k}
    assert tables == {"ingress", "arp", "sg_egress", "services", "lb", "unnat", "forward", "flood", "sg_ingress", "route"}


def test_migrations_are_counted_from_their_records():
    model = placed_model(DOC)
    now = [1000.0]
    migs = Migrations(model, wall=lambda: now[0], mono=lambda: now[0])
    switches = {f"leaf{i}": 0x100 + i for i in range(1, 5)}
    names = {dpid: name for name, dpid in switches.items()}
    done = migs.request("web1", "leaf2", "live", switches, names)
    migs.plugged(done.id, 5)
    now[0] += 1
    migs.capture(done.id, [], {})
    migs.heard(done.id, frozen_at=1001.0)
    now[0] = 1001.2
    migs.arrived(done.id)
    migs.flipped(done.id)
    migs.heard(done.id, thawed_at=1001.1)
    assert migs.complete(done.id)
    failed = migs.request("db1", "leaf2", "cold", switches, names)
    migs.roll_back(failed.id, "agent silent")
    migs.request("db2", "leaf4", "live", switches, names)

    metrics = Metrics()
    metrics.registry.register(StateCollector(lambda read: read(), lambda: Snapshot(
        model, leafspine(), {}, set(), {}, {}, Totals(4), Totals(2), Totals(1), [m.as_dict() for m in migs.records()])))
    samples, types = scrape(metrics)
    assert types["sdnvirt_migration_downtime_seconds"] == "histogram"
    assert one(samples, "sdnvirt_migrations_total", mode="live", outcome="ok") == 1
    assert one(samples, "sdnvirt_migrations_total", mode="cold", outcome="rolled_back") == 1
    assert one(samples, "sdnvirt_migrations_total", mode="cold", outcome="failed") == 0
    assert one(samples, "sdnvirt_migrations_running") == 1
    assert one(samples, "sdnvirt_migration_downtime_seconds_count", mode="live") == 1
    assert one(samples, "sdnvirt_migration_downtime_seconds_bucket", mode="live", le="0.25") == 1
    assert one(samples, "sdnvirt_migration_downtime_seconds_bucket", mode="live", le="0.1") == 0
    assert one(samples, "sdnvirt_migration_phase_duration_seconds_count", mode="live", phase="state_capture") == 1
    assert one(samples, "sdnvirt_migration_phase_duration_seconds_sum", mode="live", phase="preparation") == 1.0
    assert one(samples, "sdnvirt_migration_downtime_seconds_count", mode="cold") == 0
