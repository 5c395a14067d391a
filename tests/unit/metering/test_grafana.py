"""k8s/grafana/cascade-extproc-dashboard.json: a Grafana dashboard whose queries use only the
metrics the sidecar exports, that loads the same way imported in the UI, provisioned from a file
or from a ConfigMap by the Grafana sidecar: the data source is a template variable (no
`__inputs`, which only the UI import resolves), and every query is filtered by the namespace and
pod variables."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from cascade_extproc.metering.metrics import Metrics

DASHBOARD = Path(__file__).resolve().parents[3] / "k8s" / "grafana" / "cascade-extproc-dashboard.json"

METRICS = {
    "cascade_requests_total", "cascade_cost_usd_total", "cascade_baseline_cost_usd_total",
    "cascade_savings_usd", "cascade_request_duration_seconds_bucket",
    "cascade_provider_duration_seconds_bucket", "cascade_fallbacks_total", "cascade_tokens_total",
    "cascade_shadow_decisions_total", "cascade_shadow_agreement_total",
    "cascade_config_reloads_total", "cascade_unpriced_requests_total", "cascade_guarded_requests_total",
    "cascade_shadow_actions_total", "cascade_shadow_risky_actions_total",
}
# What may appear in an expression besides metric names.
PROMQL_WORDS = {
    "sum", "avg", "min", "max", "count", "by", "without", "rate", "irate", "increase",
    "histogram_quantile", "clamp_min", "clamp_max", "and", "or", "unless", "on", "ignoring",
    "group_left", "group_right", "offset", "bool", "vector", "scalar", "abs", "round",
}
DS = {"type": "prometheus", "uid": "${datasource}"}
# The variables every selector is filtered on, and how.
FILTERS = {("namespace", "=~", "$namespace"), ("pod", "=~", "$pod")}


@pytest.fixture(scope="module")
def dash() -> dict:
    return json.loads(DASHBOARD.read_text())


def all_panels(dash: dict) -> list[dict]:
    out = []
    for p in dash["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))  # panels inside collapsed rows
    return out


_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<range>\[[^\]]*\])                          # [5m], [$__rate_interval], [1h:5m]
  | (?P<open>\{)
  | (?P<duration>\d+(?:ms|[smhdwy])\b)
  | (?P<number>\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+)
  | (?P<ident>[A-Za-z_:][\w:]*)
  | (?P<var>\$\w+|\$\{[^}]*\})
  | (?P<op>=~|!~|==|!=|<=|>=|[-+*/%^<>(),])
""", re.X)
_MATCHER = re.compile(r'\s*([A-Za-z_]\w*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*(,?)')
_CLOSE = re.compile(r"\s*\}")
_CALL = re.compile(r"\s*\(")
_GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}

Matchers = frozenset[tuple[str, str, str]]  # (label, operator, value)


def _matchers(expr: str, i: int) -> tuple[Matchers, int]:
    """The label matchers of the `{...}` opening at expr[i], and the index after its `}`."""
    found, i = set(), i + 1
    while not (close := _CLOSE.match(expr, i)):
        m = _MATCHER.match(expr, i)
        assert m, f"bad label matcher at {expr[i:]!r} in {expr!r}"
        found.add((m[1], m[2], m[3]))
        i = m.end()
        if not m[4]:  # no comma: the list must end here
            assert _CLOSE.match(expr, i), f"expected , or }} at {expr[i:]!r} in {expr!r}"
    return frozenset(found), close.end()


def selectors(expr: str) -> list[tuple[str, Matchers]]:
    """Every vector selector of a PromQL expression: its metric name (the __name__ matcher's
    value for a selector without a name) and its label matchers. Function names, keywords,
    grouping label lists, strings, ranges and numbers are not selectors; an identifier followed
    by `(` must be a known function."""
    out: list[tuple[str, Matchers]] = []
    i, prev = 0, ""
    while i < len(expr):
        m = _TOKEN.match(expr, i)
        assert m, f"cannot read {expr[i:]!r} in {expr!r}"
        kind, text = m.lastgroup, m[0]
        i = m.end()
        if kind == "space":
            continue
        if kind == "open":
            labels, i = _matchers(expr, m.start())
            if prev == "metric":
                out[-1] = (out[-1][0], labels)
            else:
                out.append((next((v for lb, op, v in labels if (lb, op) == ("__name__", "=")), ""), labels))
        elif kind == "ident":
            call = _CALL.match(expr, i)
            if text in _GROUPING:
                if call:  # a label list, not a call: skip it
                    i = expr.index(")", call.end()) + 1
            elif call:
                assert text in PROMQL_WORDS, f"unknown function {text!r} in {expr!r}"
            elif text not in PROMQL_WORDS:
                out.append((text, frozenset()))
                kind = "metric"
        prev = kind
    return out


def metric_names(expr: str) -> set[str]:
    """The metric names in a PromQL expression."""
    return {name for name, _ in selectors(expr)}


def test_metric_name_parser():
    assert metric_names('histogram_quantile(0.95, sum by (le, path) '
                        '(rate(cascade_request_duration_seconds_bucket{path!="x"}[$__rate_interval])))') \
        == {"cascade_request_duration_seconds_bucket"}
    assert metric_names('sum(a_total{x=~"b|c"}) / sum without (y) (b) * 3600') == {"a_total", "b"}


def test_selector_parser():
    assert selectors('sum by (le, path) (rate(m_bucket{path!="x}", pod=~"$pod"}[$__rate_interval])) '
                     '/ on (path) group_left sum(n offset 5m) or {__name__="o", a="1",}') == [
        ("m_bucket", frozenset({("path", "!=", "x}"), ("pod", "=~", "$pod")})),
        ("n", frozenset()),
        ("o", frozenset({("__name__", "=", "o"), ("a", "=", "1")})),
    ]
    assert selectors("1 - scalar(x{})") == [("x", frozenset())]
    for bad in ("nope(x)", 'x{a~"b"}', "x{a=b}"):
        with pytest.raises(AssertionError):
            selectors(bad)


def variables(dash: dict) -> dict[str, dict]:
    return {v["name"]: v for v in dash["templating"]["list"]}


def variable_query(var: dict) -> str:
    """A query variable's query: a string, or (as Grafana 10 saves it) an object holding one."""
    q = var["query"]
    return q if isinstance(q, str) else q["query"]


def test_dashboard_structure(dash):
    assert dash["schemaVersion"] == 39
    assert dash["title"] and dash["uid"]
    panels = all_panels(dash)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in panels:  # rows hold no queries; if one names a data source, it is the variable
        assert p.get("datasource", DS) == DS, p["title"]
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


def test_the_data_source_is_a_template_variable_not_an_import_input(dash):
    # `__inputs` (and ${DS_...} references to it) are resolved by the UI import only: a
    # provisioned dashboard or one loaded by the Grafana sidecar would query no data source.
    assert "__inputs" not in dash
    assert "DS_PROMETHEUS" not in DASHBOARD.read_text()
    ds = variables(dash)["datasource"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus", ds
    assert not ds.get("multi") and not ds.get("includeAll"), "one data source at a time"
    # Every data source reference in the file (panels, targets, variables) is the variable,
    # but the built-in annotation's, which is Grafana's own.
    def refs(node, where="$"):
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "datasource" and isinstance(v, (dict, str)):
                    yield where, v
                else:
                    yield from refs(v, f"{where}.{k}")
        elif isinstance(node, list):
            for n, v in enumerate(node):
                yield from refs(v, f"{where}[{n}]")
    found = list(refs(dash))
    assert found
    for where, ref in found:
        if where.startswith("$.annotations") and ref == {"type": "grafana", "uid": "-- Grafana --"}:
            continue
        assert ref == DS, (where, ref)


def test_namespace_and_pod_variables(dash):
    vs = variables(dash)
    names = list(vs)
    # Each variable after the ones it refers to: datasource, namespace, pod.
    assert names[:3] == ["datasource", "namespace", "pod"], names
    ns, pod = vs["namespace"], vs["pod"]
    for v in (ns, pod):
        assert v["type"] == "query" and v["datasource"] == DS, v["name"]
        assert v["multi"] is True and v["includeAll"] is True, f"{v['name']}: multi-select with All"
        # All matches every value, a series without the label included (a scrape that does
        # not add it), rather than a regex of the values seen.
        assert v.get("allValue") == ".*", v["name"]
        assert v["current"].get("value") == ["$__all"], f"{v['name']}: All by default"
        assert v["refresh"] in (1, 2), f"{v['name']}: refreshed on load or on time range change"
        assert v.get("definition", variable_query(v)) == variable_query(v)
    label_values = re.compile(r"label_values\((.*),\s*(\w+)\)")
    m = label_values.fullmatch(variable_query(ns))
    assert m and m[2] == "namespace" and selectors(m[1]) == [("cascade_requests_total", frozenset())], \
        variable_query(ns)
    m = label_values.fullmatch(variable_query(pod))
    assert m and m[2] == "pod", variable_query(pod)
    assert selectors(m[1]) == [("cascade_requests_total", frozenset({("namespace", "=~", "$namespace")}))], \
        "the pods of the chosen namespaces"


def test_every_selector_is_filtered_on_namespace_and_pod(dash):
    defined = set(variables(dash))
    checked = 0
    for p in all_panels(dash):
        for t in p.get("targets", []):
            sels = selectors(t["expr"])
            assert sels, t["expr"]
            for name, labels in sels:
                assert FILTERS <= labels, (p["title"], name, t["expr"])
                checked += 1
            # Every variable used is defined, or one of Grafana's own ($__range, ...).
            used = {v.strip("${}") for v in re.findall(r"\$\{?\w+\}?", t["expr"])}
            assert {v for v in used if not v.startswith("__")} <= defined, (t["expr"], used - defined)
    assert checked >= 20


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
