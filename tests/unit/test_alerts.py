"""The shipped alerting rules: they parse, the Prometheus Operator copy equals the rule file, every expression is
well-formed as far as a parser without Prometheus can tell, reads only metrics the services define (or the
kubelet's volume stats), and every alert has a severity and a runbook section that exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.support import deploy_render as kr

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus" / "alerts.yml"
OPERATOR = REPO / "k8s" / "base" / "prometheusrule.yaml"
RUNBOOK = REPO / "docs" / "operations.md"
METRIC_SOURCES = [REPO / "serving" / "metrics.py", REPO / "trainer" / "service" / "metrics.py"]
EXTERNAL = {"kubelet_volume_stats_available_bytes", "kubelet_volume_stats_capacity_bytes"}
FUNCTIONS = {"sum", "max", "min", "avg", "rate", "increase", "histogram_quantile", "max_over_time", "absent",
             "clamp_min", "humanizePercentage"}
KEYWORDS = {"by", "without", "and", "or", "unless", "on", "ignoring", "bool"}
DURATION = re.compile(r"^[0-9]+[smhdwy]$")


def _groups() -> list[dict]:
    return yaml.safe_load(RULES.read_text())["groups"]


def _rules() -> list[dict]:
    return [r for g in _groups() for r in g["rules"]]


def test_the_operator_rule_holds_exactly_the_rule_file() -> None:
    doc = yaml.safe_load(OPERATOR.read_text())
    assert doc["kind"] == "PrometheusRule" and doc["apiVersion"] == "monitoring.coreos.com/v1"
    assert doc["spec"]["groups"] == _groups(), "regenerate k8s/base/prometheusrule.yaml from alerts.yml"
    assert "prometheusrule.yaml" in (REPO / "k8s" / "base" / "kustomization.yaml").read_text()


def test_the_alerts_cover_what_operators_page_on() -> None:
    names = {r["alert"] for r in _rules()}
    assert len(names) == len(_rules()), "alert names must be unique"
    wanted = {"MamdrTrainerConsumerLag", "MamdrTrainerStale", "MamdrServingReloadFailures", "MamdrServingFaults",
              "MamdrPrequentialAucDrop", "MamdrArtifactsDiskFilling", "MamdrTrainerNotPublishing"}
    assert wanted <= names


@pytest.mark.parametrize("rule", _rules(), ids=lambda r: r["alert"])
def test_each_rule_is_well_formed(rule: dict) -> None:
    expr = rule["expr"]
    depth = 0
    for ch in expr:  # balanced brackets, never closing what is not open
        depth += {"(": 1, ")": -1}.get(ch, 0)
        assert depth >= 0, expr
    assert depth == 0 and expr.count("{") == expr.count("}") and expr.count("[") == expr.count("]"), expr
    for window in re.findall(r"\[([^\]]+)\]", expr):
        assert DURATION.match(window), f"{rule['alert']}: range [{window}]"
    called = set(re.findall(r"\b([a-zA-Z_]+)\s*\(", expr)) - KEYWORDS
    assert called <= FUNCTIONS, f"{rule['alert']}: unknown functions {called - FUNCTIONS}"
    assert "for" not in rule or DURATION.match(rule["for"])
    assert rule["labels"]["severity"] in {"warning", "critical"}
    for text in rule["annotations"].values():
        assert text.count("{{") == text.count("}}")


@pytest.mark.parametrize("rule", _rules(), ids=lambda r: r["alert"])
def test_each_rule_reads_metrics_that_exist(rule: dict) -> None:
    definitions: dict = {}
    for source in METRIC_SOURCES:
        definitions |= kr.metric_definitions(source)
    series = kr.exposed_series(definitions)
    expr = rule["expr"]
    reads = kr.query_series(expr)
    others = set(re.findall(r"\b(kubelet_[a-z_]+)", expr))
    assert reads or others, f"{rule['alert']} reads no metric"
    assert others <= EXTERNAL
    for name, labels in reads:
        assert name in series, f"{rule['alert']}: {name} is not defined by serving or the trainer"
        _, defined = definitions[series[name]]
        if defined is not None:
            assert labels <= set(defined) | {"le"}, f"{rule['alert']}: {name} has no label {labels - set(defined)}"


def test_every_alert_has_a_runbook_section() -> None:
    text = RUNBOOK.read_text()
    anchors = {re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
               for h in re.findall(r"^#+ (.+)$", text, flags=re.M)}
    for rule in _rules():
        runbook = rule["annotations"]["runbook"]
        assert runbook == f"docs/operations.md#{rule['alert'].lower()}"
        assert rule["alert"].lower() in anchors, f"docs/operations.md has no section '{rule['alert']}'"
