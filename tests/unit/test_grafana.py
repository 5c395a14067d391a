"""k8s/grafana/cascade-extproc-dashboard.json: an importable Grafana dashboard whose queries use
only the metrics the sidecar exports."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from cascade_extproc.metrics import Metrics

DASHBOARD = Path(__file__).resolve().parents[2] / "k8s" / "grafana" / "cascade-extproc-dashboard.json"

METRICS = {
    "cascade_requests_total", "cascade_cost_usd_total", "cascade_baseline_cost_usd_total",
    "cascade_savings_usd", "cascade_request_duration_seconds_bucket",
    "cascade_provider_duration_seconds_bucket", "cascade_fallbacks_total", "cascade_tokens_total",
    "cascade_shadow_decisions_total", "cascade_shadow_agreement_total",
    "cascade_config_reloads_total", "cascade_unpriced_requests_total",
}
# What may appear in an expression besides metric names.
PROMQL_WORDS = {
    "sum", "avg", "min", "max", "count", "by", "without", "rate", "irate", "increase",
    "histogram_quantile", "clamp_min", "clamp_max", "and", "or", "unless", "on", "ignoring",
    "group_left", "group_right", "offset", "bool", "vector", "scalar", "abs", "round",
}
DS = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}


@pytest.fixture(scope="module")
def dash() -> dict:
    return json.loads(DASHBOARD.read_text())


def all_panels(dash: dict) -> list[dict]:
    out = []
    for p in dash["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))  # panels inside collapsed rows
    return out


def metric_names(expr: str) -> set[str]:
    """The metric names in a PromQL expression: identifiers left once strings, label matchers,
    grouping label lists, range selectors, template variables and numbers are removed."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    e = re.sub(r"\{[^}]*\}", " ", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r"\1", e)
    e = re.sub(r"\[[^\]]*\]", " ", e)
    e = re.sub(r"\$\w+", " ", e)
    idents = set(re.findall(r"(?<![\w.])[A-Za-z_:][\w:]*", e))
    return {i for i in idents if i not in PROMQL_WORDS}


def test_metric_name_parser():
    assert metric_names('histogram_quantile(0.95, sum by (le, path) '
                        '(rate(cascade_request_duration_seconds_bucket{path!="x"}[$__rate_interval])))') \
        == {"cascade_request_duration_seconds_bucket"}
    assert metric_names('sum(a_total{x=~"b|c"}) / sum without (y) (b) * 3600') == {"a_total", "b"}


def test_dashboard_structure(dash):
    assert dash["schemaVersion"] == 39
    assert dash["title"] and dash["uid"]
    assert any(i["name"] == "DS_PROMETHEUS" and i["type"] == "datasource"
               and i["pluginId"] == "prometheus" for i in dash["__inputs"])
    panels = all_panels(dash)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    queried = [p for p in panels if p["type"] != "row"]
    assert len(queried) >= 10
    for p in queried:
        assert p["title"], p
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        assert p["datasource"] == DS, p["title"]
        assert p["targets"], p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            assert t["datasource"] == DS, p["title"]
            assert t["expr"].strip(), p["title"]
            assert t["expr"].count("(") == t["expr"].count(")"), t["expr"]


def test_panels_do_not_overlap(dash):
    taken: dict[tuple[int, int], str] = {}
    for p in dash["panels"]:
        g = p["gridPos"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in taken, (p["title"], taken[(x, y)])
                taken[(x, y)] = p["title"]


def test_every_metric_is_exported_and_every_export_is_shown(dash):
    used: set[str] = set()
    for p in all_panels(dash):
        for t in p.get("targets", []):
            names = metric_names(t["expr"])
            assert names, t["expr"]
            assert names <= METRICS, (p["title"], names - METRICS)
            used |= names
    assert used == METRICS  # every metric has a panel


def test_metric_names_match_the_registry():
    # The names above as the sidecar's registry spells them (a counter's samples end in _total,
    # a histogram's buckets in _bucket).
    suffix = {"counter": "_total", "histogram": "_bucket", "gauge": ""}
    exported = {f.name + suffix.get(f.type, "") for f in Metrics().registry.collect()}
    assert METRICS <= exported, METRICS - exported


def test_panels_named_in_the_brief(dash):
    titles = " | ".join(p["title"].lower() for p in all_panels(dash))
    for word in ("request rate by path", "path mix", "draft-use rate", "cost vs baseline", "savings",
                 "latency p50 / p95 by path", "provider", "fallbacks by reason",
                 "tokens by provider and kind", "shadow agreement rate", "config reloads"):
        assert word in titles, word
