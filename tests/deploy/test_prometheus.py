"""Prometheus config, alert rules (with promtool unit tests) and the Grafana dashboard."""

from __future__ import annotations

import json
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
GRAFANA = ROOT / "deploy" / "grafana"


def run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, check=False)


@pytest.mark.parametrize("config", ["prometheus.yml", "prometheus-kubernetes.yml"])
def test_promtool_checks_the_scrape_configs(promtool, config):
    result = run([promtool, "check", "config", str(PROMETHEUS / config)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout + result.stderr


def test_promtool_checks_the_rules(promtool):
    result = run([promtool, "check", "rules", *map(str, (PROMETHEUS / "rules").glob("*.yml"))])
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_pass_their_unit_tests(promtool):
    result = run([promtool, "test", "rules", str(PROMETHEUS / "tests" / "hycas-alerts.test.yml")])
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_unit_test():
    rules = yaml.safe_load((PROMETHEUS / "rules" / "hycas-alerts.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    tests = yaml.safe_load((PROMETHEUS / "tests" / "hycas-alerts.test.yml").read_text())
    tested = {
        case["alertname"]
        for test in tests["tests"]
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    assert alerts == tested
    assert alerts >= {
        "HycasNoWorkerUp",
        "HycasQueueBacklogGrowing",
        "HycasJobFailureRateHigh",
        "HycasJobDurationP95High",
        "HycasAbstentionRateJump",
    }


def dashboard_expressions() -> list[str]:
    dashboard = json.loads((GRAFANA / "dashboards" / "hycas.json").read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p["targets"]]


def test_dashboard_uses_the_provisioned_datasource():
    dashboard = json.loads((GRAFANA / "dashboards" / "hycas.json").read_text())
    provisioned = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )["datasources"][0]["uid"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == provisioned
        assert panel["targets"], panel["title"]
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in ("per second", "duration", "queue", "failure", "radius"):
        assert topic in titles


def test_dashboard_and_rule_expressions_parse_in_a_real_prometheus(prometheus_server):
    prometheus_server.start("global:\n  scrape_interval: 15s\n")
    rules = yaml.safe_load((PROMETHEUS / "rules" / "hycas-alerts.yml").read_text())
    expressions = dashboard_expressions() + [r["expr"] for g in rules["groups"] for r in g["rules"]]
    for expr in expressions:
        query = expr.replace("$__rate_interval", "1m")
        url = f"{prometheus_server.url}/api/v1/query?" + urllib.parse.urlencode({"query": query})
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", (expr, body)
