"""The PromQL of the shipped dashboards and alert rules, ready to evaluate."""

import json
import re
from pathlib import Path

import yaml

DEPLOY = Path(__file__).parent.parent / "deploy"
DASHBOARDS = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
RULES = DEPLOY / "prometheus" / "rules.yml"
# The dashboard row (deploy/grafana/dashboards.py's CLUSTER_ROW) whose panels
# have data only from daemons of a cluster (controller.cluster).
CLUSTER_ROW = "Cluster (several controllers)"

# What Grafana puts in place of its variables, for one tenant and service of
# the tests' configs and windows that suit a 1 s scrape interval.
GRAFANA_VARS = {"$__rate_interval": "10s", "$__range": "5m", "$__interval": "2s",
                "$tenant": "blue", "$service": "web"}


def grafana_expr(expr: str) -> str:
    for name, value in GRAFANA_VARS.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, f"a Grafana variable the tests do not know: {expr}"
    return expr


def dashboards() -> dict[str, dict]:
    return {path.stem: json.loads(path.read_text()) for path in DASHBOARDS}


def panels(board: dict):
    """Every panel, those inside collapsed rows too."""
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])


def rows(board: dict):
    """(the title of its row, panel) of every panel."""
    row = ""
    for panel in panels(board):
        if panel["type"] == "row":
            row = panel["title"]
        yield row, panel


def panel_exprs(cluster: bool | None = None) -> list[tuple[str, str, str]]:
    """(dashboard, panel title, PromQL with the variables filled in) of every panel target;
    ``cluster``: only those of the cluster row (True) or only the others (False)."""
    return [(name, panel["title"], grafana_expr(target["expr"]))
            for name, board in dashboards().items() for row, panel in rows(board)
            if cluster is None or cluster == (row == CLUSTER_ROW)
            for target in panel.get("targets", [])]


def variable_selectors() -> list[tuple[str, str, str]]:
    """(dashboard, variable, the series selector of its label_values() query)."""
    out = []
    for name, board in dashboards().items():
        for var in board["templating"]["list"]:
            if var["type"] == "query":
                m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", var["query"]["query"])
                assert m, f"{name}: variable {var['name']}: not label_values(selector, label)"
                out.append((name, var["name"], grafana_expr(m.group(1))))
    return out


def alert_rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]
