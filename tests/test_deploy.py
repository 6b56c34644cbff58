"""The deployment files: Prometheus config and alert rules (promtool), Grafana dashboards, units."""

import configparser
import re
import runpy
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from fabrics import vxlan_doc
from monitoring import DASHBOARDS, DEPLOY, RULES, alert_rules, dashboards, panel_exprs, panels, variable_selectors
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from test_metrics import DOC, daemon_like

from sdnvirt.cluster.member import State
from sdnvirt.controller.roles import ClusterCollector
from sdnvirt.controller.session import Role

PROMTOOL = shutil.which("promtool")


def promtool(*args) -> subprocess.CompletedProcess:
    assert PROMTOOL, "promtool is missing: scripts/setup.sh installs Debian's prometheus package"
    return subprocess.run([PROMTOOL, *map(str, args)], capture_output=True, text=True, timeout=60)


def test_prometheus_config_and_rules_pass_promtool():
    for args in (("check", "config", DEPLOY / "prometheus" / "prometheus.yml"), ("check", "rules", RULES),
                 ("test", "rules", Path(__file__).parent / "prometheus" / "rules_test.yml")):
        res = promtool(*args)
        assert res.returncode == 0, f"promtool {' '.join(map(str, args))}:\n{res.stdout}{res.stderr}"


def test_every_alert_the_issue_asks_for_is_there_with_a_severity_and_a_summary():
    rules = {r["alert"]: r for r in alert_rules()}
    assert {"SdnvirtNoHealthyBackend", "SdnvirtBackendDown", "SdnvirtSwitchDisconnected",
            "SdnvirtMigrationFailed", "SdnvirtConfigLoadError", "SdnvirtVtepDown"} <= set(rules)
    for name, rule in rules.items():
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name


def test_every_dashboard_and_variable_expression_is_valid_promql(tmp_path):
    # promtool has no "check this expression" command: it checks them as recording rules.
    exprs = [e for _, _, e in panel_exprs()] + [s for _, _, s in variable_selectors()]
    rules = {"groups": [{"name": "dashboards", "rules": [
        {"record": f"dashboard:expr{i}", "expr": e} for i, e in enumerate(exprs)]}]}
    path = tmp_path / "dashboards.yml"
    path.write_text(yaml.safe_dump(rules))
    res = promtool("check", "rules", path)
    assert res.returncode == 0, res.stdout + res.stderr


def test_dashboards_and_rules_only_use_metrics_the_daemon_exports():
    metrics, _ = daemon_like()
    metrics.packet_in("action", "learn", 0.001)
    metrics.openflow_sent.labels("flow_mod").inc()
    metrics.errors_known(["bad_request"])
    metrics.probe_latency.labels("blue", "web").observe(0.001)
    metrics.etcd_request("range", 0.001, "ok")
    # What an instance of a cluster adds: its view of the cluster, read on its loop.
    loop = SimpleNamespace(call=lambda read: read())
    sessions = {0x101: SimpleNamespace(role=Role.MASTER)}
    roles = SimpleNamespace(state=State("a", {}, ["a"], "a", False), ctl=SimpleNamespace(loop=loop, sessions=sessions))
    metrics.registry.register(ClusterCollector(roles))
    # vxlan mode's own: sdnvirt_vtep_up.
    overlay, _ = daemon_like(vxlan_doc(DOC))
    exported = {s.name for m in (metrics, overlay)
                for f in text_string_to_metric_families(generate_latest(m.registry).decode()) for s in f.samples}
    used = {(where, name) for where, _, expr in panel_exprs() + [("rules", r["alert"], r["expr"]) for r in alert_rules()]
            for name in re.findall(r"\b(?:sdnvirt|process)_[a-z_]+", expr)}
    used |= {(where, name) for where, _, sel in variable_selectors() for name in re.findall(r"\bsdnvirt_[a-z_]+", sel)}
    assert {(where, name) for where, name in used if name not in exported} == set()


def test_committed_dashboards_are_what_their_generator_builds():
    # A script beside the files it writes, not a module of the package.
    built = runpy.run_path(str(DEPLOY / "grafana" / "dashboards.py"))["render"]()
    assert set(built) == {path.name for path in DASHBOARDS}
    stale = [name for name, text in built.items() if (DEPLOY / "grafana" / "dashboards" / name).read_text() != text]
    assert not stale, f"{stale} differ from what deploy/grafana/dashboards.py builds: run it"


def test_the_cluster_row_is_there_and_only_its_panels_need_a_cluster():
    assert panel_exprs(cluster=True) and set(panel_exprs(cluster=True)) | set(panel_exprs(cluster=False)) == set(
        panel_exprs())
    cluster_only = re.compile(r"sdnvirt_(cluster|etcd)_|sdnvirt_switch_master")
    assert all(cluster_only.search(expr) for _, _, expr in panel_exprs(cluster=True))
    assert not any(cluster_only.search(expr) for _, _, expr in panel_exprs(cluster=False))


def test_dashboards_suit_current_grafana():
    boards = dashboards()
    assert set(boards) == {"fabric", "tenants", "lb", "migrations"}
    assert len({b["uid"] for b in boards.values()}) == len(boards)
    for name, board in boards.items():
        assert board["schemaVersion"] >= 39, name
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
        ids = [p["id"] for p in panels(board)]
        assert len(ids) == len(set(ids)), name
        for panel in panels(board):
            pos = panel["gridPos"]
            assert pos["x"] + pos["w"] <= 24, (name, panel["title"])
            if panel["type"] == "row":
                continue
            # The data source is never named, only asked for.
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, (name, panel["title"])
            assert panel["targets"], (name, panel["title"])
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == "${datasource}" and target["expr"], (name, panel["title"])
    assert {"tenant"} <= {v["name"] for v in boards["tenants"]["templating"]["list"]}
    assert {"tenant", "service"} <= {v["name"] for v in boards["lb"]["templating"]["list"]}


def test_grafana_provisioning_points_at_a_prometheus_and_the_dashboards():
    prov = DEPLOY / "grafana" / "provisioning"
    [source] = yaml.safe_load((prov / "datasources" / "sdnvirt.yaml").read_text())["datasources"]
    assert source["type"] == "prometheus"
    [provider] = yaml.safe_load((prov / "dashboards" / "sdnvirt.yaml").read_text())["providers"]
    assert provider["type"] == "file" and provider["options"]["path"]


@pytest.mark.parametrize("unit", ["sdnvirt.service", "sdnvirt-topo@.service"])
def test_systemd_units_start_after_open_vswitch(unit):
    ini = configparser.ConfigParser(strict=False, interpolation=None)
    ini.read(DEPLOY / "systemd" / unit)
    assert "openvswitch-switch.service" in ini["Unit"]["After"].split()
    if unit == "sdnvirt.service":
        assert ini["Service"]["ExecReload"] == "/bin/kill -HUP $MAINPID"
        assert ini["Service"]["Restart"] == "on-failure"
