"""The admin HTTP app: health, metrics, and the dashboard routes when given a data source."""
from __future__ import annotations

import asyncio
import json
import math

from aiohttp.test_utils import TestClient, TestServer

from cascade_extproc import admin
from cascade_extproc.metering.metrics import Metrics
from cascade_extproc.types import Path

DATA = {"generated_at": 1764340000.0, "mode": "active",
        "totals": {"requests": 1, "by_path": {"direct": 1}, "draft_use_rate": 0.0,
                   "cost_usd": 0.001, "baseline_usd": 0.001, "savings_usd": 0.0,
                   "savings_rate": 0.0},
        "latency_ms": {"direct": {"p50": 10.0, "p95": 10.0, "count": 1}},
        "shadow": {"decisions": {}, "agreement": {}}, "recent": []}


def fetch(app, *requests):
    """[(status, headers, body bytes)] for each path, from the app on a real loopback port."""
    async def go():
        async with TestClient(TestServer(app)) as client:
            out = []
            for path in requests:
                resp = await client.get(path)
                out.append((resp.status, resp.headers, await resp.read()))
            return out
    return asyncio.run(go())


def test_health_and_metrics_unchanged():
    app = admin.build(Metrics(), lambda: False)
    (h, _, hb), (r, _, _), (m, mh, mb) = fetch(app, "/healthz", "/readyz", "/metrics")
    assert (h, hb) == (200, b"ok\n") and r == 503
    assert m == 200 and mh["content-type"].startswith("text/plain") and b"cascade_requests" in mb
    assert fetch(admin.build(Metrics(), lambda: True), "/readyz")[0][0] == 200


def test_no_dashboard_without_a_data_source():
    app = admin.build(Metrics(), lambda: True)
    assert [s for s, _, _ in fetch(app, "/dashboard", "/dashboard/data.json")] == [404, 404]


def test_dashboard_page_and_headers():
    app = admin.build(Metrics(), lambda: True, dashboard_data=lambda: DATA)
    [(status, headers, body)] = fetch(app, "/dashboard")
    assert status == 200
    assert headers["content-type"] == "text/html; charset=utf-8"
    csp = headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self' 'unsafe-inline'" in csp
    assert "style-src 'self' 'unsafe-inline'" in csp and "'unsafe-eval'" not in csp
    assert body == admin.dashboard_html()
    html = body.decode()
    assert "<title>cascade-extproc</title>" in html
    assert "//" not in html and "src=" not in html  # nothing loaded from anywhere


def test_dashboard_data_is_the_callables_result():
    calls = []
    app = admin.build(Metrics(), lambda: True,
                      dashboard_data=lambda: calls.append(1) or DATA)
    [(status, headers, body)] = fetch(app, "/dashboard/data.json")
    assert status == 200
    assert headers["content-type"].startswith("application/json")
    assert headers["cache-control"] == "no-store"
    assert json.loads(body) == DATA
    assert calls == [1]  # called per request, not cached


def test_dashboard_data_failure_is_a_500_json_error():
    def boom() -> dict:
        raise RuntimeError("broken")
    nan = dict(DATA, totals=dict(DATA["totals"], savings_rate=math.nan))
    for source in (boom, lambda: nan):
        app = admin.build(Metrics(), lambda: True, dashboard_data=source)
        [(status, headers, body)] = fetch(app, "/dashboard/data.json")
        assert status == 500 and headers["cache-control"] == "no-store"
        assert json.loads(body) == {"error": "dashboard data unavailable"}


def test_model_labels_are_bounded():
    from prometheus_client import generate_latest

    from cascade_extproc.metering.ledger import MAX_MODEL_LABELS, Ledger, RequestRecord
    from cascade_extproc.metering.metrics import Metrics

    ledger = Ledger(Metrics())
    for i in range(MAX_MODEL_LABELS + 50):
        ledger.record(RequestRecord(request_id=str(i), api="anthropic", path=Path.DIRECT, rule="r", model=f"m-{i}"))
    text = generate_latest(ledger.metrics.registry).decode()
    series = [line for line in text.splitlines() if line.startswith("cascade_requests_total{")]
    assert len(series) == MAX_MODEL_LABELS + 1  # the first 64 models, then "other"
    assert 'model="other"' in text and sum(float(x.rsplit(" ", 1)[1]) for x in series) == MAX_MODEL_LABELS + 50


def test_a_broken_answer_is_an_error_not_a_fallback(caplog):
    """A skipped stream that broke after the client had part of it was served by nobody else: the
    log line says error (with the status), and it is not counted as a fallback."""
    import logging

    from cascade_extproc.metering.ledger import Ledger, RequestRecord
    from cascade_extproc.metering.metrics import Metrics

    ledger = Ledger(Metrics())
    with caplog.at_level(logging.INFO, logger="cascade_extproc.requests"):
        ledger.record(RequestRecord(request_id="a", api="openai", path=Path.SKIPPED, rule="r", model="m",
                                    status=502, error="draft-stalled"))
        ledger.record(RequestRecord(request_id="b", api="openai", path=Path.FALLBACK, rule="r", model="m",
                                    status=200, fallback_reason="draft-stalled"))
    broken, fell_back = (json.loads(r.getMessage()) for r in caplog.records)
    assert (broken["status"], broken["error"], "fallback_reason" in broken) == (502, "draft-stalled", False)
    assert (fell_back["status"], fell_back["fallback_reason"], "error" in fell_back) == (200, "draft-stalled", False)
    reg = ledger.metrics.registry
    assert reg.get_sample_value("cascade_fallbacks_total", {"reason": "draft-stalled"}) == 1
    assert reg.get_sample_value("cascade_request_errors_total", {"path": "skipped", "reason": "draft-stalled"}) == 1
