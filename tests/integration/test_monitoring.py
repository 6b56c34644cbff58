"""A real Prometheus scraping the real daemon over a real fabric.

Every expression of every shipped dashboard panel and alert rule is evaluated
by Prometheus; each alert is made to fire by producing its condition (a dead
backend, a service left without backends, a bad config, a switch cut off, the
daemon killed, a migration whose hypervisor agent never answers); the bytes
counted for a VM match a known iperf3 transfer; a VM migrates.
"""

import copy
import json
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request

import pytest
import yaml
from monitoring import RULES, alert_rules, panel_exprs, variable_selectors

from sdnvirt.emulation import lab
from sdnvirt.emulation.agent import Agent

from .conftest import Fabric
from .test_lb import TENANTS as LB_TENANTS  # blue/web on b1 and b2, red/web on r2 alone

pytestmark = pytest.mark.integration

# g1's port allows pings only: the UDP sent to it shows in the security-group panel.
TENANTS: dict = copy.deepcopy(LB_TENANTS)
TENANTS["blue"]["vms"]["g1"] = {"mac": "02:00:00:00:01:05", "ip": "10.1.0.15", "host": "leaf2",
                                "security_groups": ["ping"]}
TENANTS["blue"]["security_groups"] = {"ping": {"rules": [{"direction": d, "protocol": "icmp"}
                                                         for d in ("ingress", "egress")]}}

# A silent hypervisor agent is given up on after a second.
EXTRA = {"migration": {"stop_and_copy": 0.1, "agent_timeout": 1.0, "timeout": 20.0}}
UDP_PAYLOAD = 1400
UDP_FRAME = UDP_PAYLOAD + 8 + 20 + 14      # what the switch counts per datagram: UDP, IPv4, Ethernet


class Prometheus:
    """Debian's prometheus on loopback, scraping daemons (their metrics ports)
    every second, with the shipped alert rules (their ``for:`` cut to one second)."""

    def __init__(self, workdir, *target_ports: int):
        self.port = lab.free_port()
        rules = yaml.safe_load(RULES.read_text())
        for group in rules["groups"]:
            for rule in group["rules"]:
                if "for" in rule:
                    rule["for"] = "1s"
        (workdir / "rules.yml").write_text(yaml.safe_dump(rules))
        (workdir / "prometheus.yml").write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": ["rules.yml"],
            "scrape_configs": [{"job_name": "sdnvirt",
                                "static_configs": [{"targets": [f"127.0.0.1:{p}" for p in target_ports]}]}]}))
        self.log_path = workdir / "prometheus.log"
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                [shutil.which("prometheus"), f"--config.file={workdir / 'prometheus.yml'}",
                 f"--storage.tsdb.path={workdir / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        until(lambda: self._get("/-/ready", raw=True), 30, "prometheus ready", self.log)

    def log(self):
        return self.log_path.read_text()[-3000:]

    def _get(self, path, params=None, raw=False):
        url = f"http://127.0.0.1:{self.port}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                body = resp.read().decode()
        except OSError:
            return None
        return body if raw else json.loads(body)

    def query(self, expr: str) -> list:
        """The result of an instant query; fails on any error of the expression."""
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/api/v1/query",
                                     data=urllib.parse.urlencode({"query": expr}).encode())
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                answer = json.loads(resp.read())
        except urllib.error.HTTPError as err:
            raise AssertionError(f"{expr}: {err.read().decode()}") from None
        assert answer["status"] == "success", (expr, answer)
        return answer["data"]["result"]

    def value(self, expr: str) -> float:
        [sample] = self.query(expr)
        return float(sample["value"][1])

    def firing(self, alert: str) -> list[dict]:
        """Labels of the alerts of that name that fire now."""
        alerts = self._get("/api/v1/alerts")["data"]["alerts"]
        return [a["labels"] for a in alerts if a["labels"]["alertname"] == alert and a["state"] == "firing"]

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def until(check, timeout, what, detail=lambda: ""):
    """Poll ``check`` until it returns something true; fail after ``timeout`` seconds."""
    got = lab.wait_for(check, timeout, interval=0.25)
    if not got:
        raise AssertionError(f"no {what} after {timeout}s\n{detail()}")
    return got


@pytest.fixture(scope="module")
def watched(tmp_path_factory):
    fab = Fabric(tmp_path_factory.mktemp("monitoring"), TENANTS, "leafspine", {"spines": 2, "leaves": 4}, EXTRA)
    prom = fab.agent = None
    try:
        fab.start()
        fab.servers = {n: lab.serve_http(fab.host(n), 8080, n) for n in ("b1", "b2", "r2")}
        prom = Prometheus(tmp_path_factory.mktemp("prometheus"), fab.ctl.metrics_port)
        yield fab, prom
    finally:
        if prom is not None:
            prom.stop()
        if fab.agent is not None:
            fab.agent.stop()
        for proc in getattr(fab, "servers", {}).values():
            proc.terminate()
        fab.stop()


def alert_expr(name: str) -> str:
    return next(r["expr"] for r in alert_rules() if r["alert"] == name)


def fires(prom, ctl, alert, **labels):
    """The alert fires with these labels, and its expression returns them."""
    until(lambda: [a for a in prom.firing(alert) if labels.items() <= a.items()], 20, f"{alert} {labels} firing",
          lambda: f"firing: {prom._get('/api/v1/alerts')}\n{ctl.log_tail(2000)}")
    assert [s for s in prom.query(alert_expr(alert)) if labels.items() <= s["metric"].items()]


def test_dashboards_and_alerts_against_the_real_daemon(watched):
    fab, prom = watched
    until(lambda: prom.query('sdnvirt_service_backends_healthy{tenant="blue",service="web"} == 2'), 20,
          "scraped healthy backends", prom.log)

    # Traffic: connections through the VIP, and a known UDP transfer c1 -> b2 across the fabric.
    assert {lab.http_get(fab.host("c1"), "http://10.1.0.100/") for _ in range(20)} == {"b1", "b2"}
    # c1 claims another address: its port's anti-spoofing flow drops the frames.
    lab.send_scapy(fab.host("c1"), ['Ether(src="02:00:00:00:01:01", dst="ff:ff:ff:ff:ff:ff")'
                                    '/IP(src="10.1.0.99", dst="10.1.0.12")/UDP(dport=9)'], count=20)
    sent = 'sdnvirt_vm_transmit_bytes_total{tenant="blue",vm="c1"}'
    before = prom.value(sent)
    b2, c1 = fab.host("b2"), fab.host("c1")
    b2.cmd("iperf3 -s -1 -D --pidfile /tmp/sdnvirt-metrics-iperf3-$$.pid >/dev/null 2>&1")
    time.sleep(0.3)
    out = c1.cmd(f"timeout 30 iperf3 -J -u -b 20M -l {UDP_PAYLOAD} -n 8M -c 10.1.0.13")
    datagrams = json.loads(out)["end"]["sum"]["packets"]
    wire = datagrams * UDP_FRAME
    # The switches' counters are read every 5 s: wait for a read that saw all of it.
    until(lambda: prom.value(sent) - before >= 0.95 * wire, 20, "the transfer counted",
          lambda: f"counted {prom.value(sent) - before} of {wire}")
    time.sleep(6)
    counted = prom.value(sent) - before
    assert abs(counted - wire) <= 0.05 * wire, (counted, wire)
    assert prom.value('sdnvirt_vm_receive_bytes_total{tenant="blue",vm="b2"}') >= 0.95 * wire
    assert prom.value('sdnvirt_antispoof_dropped_packets_total{tenant="blue",vm="c1"}') == 20
    lab.send_scapy(fab.host("c1"), ['Ether(src="02:00:00:00:01:01", dst="02:00:00:00:01:05")'
                                    '/IP(src="10.1.0.11", dst="10.1.0.15")/UDP(dport=9)'], count=20)
    until(lambda: prom.query('sdnvirt_security_group_dropped_packets_total'
                             '{tenant="blue",vm="g1",direction="ingress"} == 20'), 20, "g1's drops counted",
          lambda: str(prom.query('sdnvirt_security_group_dropped_packets_total')))

    # A backend dies; a service loses its only backend.
    fab.servers["b1"].terminate()
    fab.servers["r2"].terminate()
    fires(prom, fab.ctl, "SdnvirtBackendDown", tenant="blue", service="web", backend="b1:8080")
    fires(prom, fab.ctl, "SdnvirtNoHealthyBackend", tenant="red", service="web")
    assert not [a for a in prom.firing("SdnvirtNoHealthyBackend") if a["tenant"] == "blue"]

    # A config that does not load, then a good one again.
    good = fab.ctl.config_path.read_text()
    fab.ctl.config_path.write_text(good.replace("segment: 102", "segment: 101"))
    fab.ctl.send(signal.SIGHUP)
    fires(prom, fab.ctl, "SdnvirtConfigLoadError")
    fab.ctl.config_path.write_text(good)
    fab.ctl.send(signal.SIGHUP)
    until(lambda: prom.query("sdnvirt_config_load_error == 0"), 10, "config error cleared")

    # A switch cut off from the controller, then back.
    leaf4 = fab.emu.net["leaf4"]
    target = leaf4.vsctl("get-controller", "leaf4").split()
    leaf4.vsctl("del-controller", "leaf4")
    fires(prom, fab.ctl, "SdnvirtSwitchDisconnected", switch="leaf4")
    leaf4.vsctl("set-controller", "leaf4", *target)
    until(lambda: prom.query('sdnvirt_switch_connected{switch="leaf4"} == 1'), 20, "leaf4 back")

    # A migration that no hypervisor agent carries out is rolled back; with
    # an agent, one goes through.
    api = fab.ctl.api()
    mid = api.post("/migrations", {"vm": "b3", "target": "leaf4", "mode": "live"})["id"]
    until(lambda: api.get(f"/migrations/{mid}")["outcome"] == "rolled_back", 20, "migration rolled back")
    fires(prom, fab.ctl, "SdnvirtMigrationFailed", mode="live", outcome="rolled_back")
    fab.agent = Agent(fab.emu, api, fab.cfg).start()
    mid = api.post("/migrations", {"vm": "b3", "target": "leaf4", "mode": "live"})["id"]
    record = fab.agent.wait(mid, timeout=25)
    assert record["outcome"] == "ok", record
    until(lambda: prom.query('sdnvirt_migrations_total{mode="live",outcome="ok"} == 1'), 10, "migration counted")
    assert prom.query('sdnvirt_vm_location{vm="b3",switch="leaf4"}')
    counted = prom.value('sdnvirt_migration_downtime_seconds_sum{mode="live"}')
    assert counted == pytest.approx(record["downtime"]), (counted, record)

    # Every dashboard panel answers, with series, through Prometheus's API
    # (the cluster's in test_cluster).
    empty = [(board, title, expr) for board, title, expr in panel_exprs(cluster=False) if not prom.query(expr)]
    assert not empty, "panels without data:\n" + "\n".join(map(str, empty))
    empty = [(board, var, sel) for board, var, sel in variable_selectors() if not prom.query(sel)]
    assert not empty, f"variables without values: {empty}"
    # Last, the daemon itself dies.
    fab.ctl.stop(signal.SIGKILL)
    fires(prom, fab.ctl, "SdnvirtDown")
