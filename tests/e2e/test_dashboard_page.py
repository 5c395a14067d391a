"""The live dashboard in a real browser: the admin app's /dashboard rendered by headless Chromium,
every number read back from the DOM and compared with the data.json it was given."""
from __future__ import annotations

import asyncio
import copy
import re
import threading
import urllib.request

import pytest
from aiohttp import web

from browser import parse_dashboard, render, require_chromium
from cascade_extproc import admin
from cascade_extproc.metering.metrics import Metrics

DATA = {
    "generated_at": 1764340000.0, "mode": "active",
    "totals": {"requests": 12,
               "by_path": {"skipped": 5, "accepted": 3, "enhanced": 1, "direct": 2, "fallback": 1},
               "draft_use_rate": 0.667, "cost_usd": 0.0123, "baseline_usd": 0.0456,
               "savings_usd": 0.0333, "savings_rate": 0.73},
    "latency_ms": {"skipped": {"p50": 120.0, "p95": 300.0, "count": 5},
                   "accepted": {"p50": 1450.5, "p95": 2980.25, "count": 3},
                   "enhanced": {"p50": 4100.0, "p95": 4100.0, "count": 1},
                   "direct": {"p50": 2200.0, "p95": 3900.0, "count": 2},
                   "fallback": {"p50": 5012.0, "p95": 5012.0, "count": 1}},
    "shadow": {"decisions": {"skipped": 4, "cascade": 2, "direct": 6},
               "agreement": {"tool-result-followup": {"agreed": 3, "total": 4},
                             "long-context": {"agreed": 1, "total": 3}}},
    "series": {"bucket_s": 60, "points": [
        {"t": 1764339840, "cost_usd": 0.004, "baseline_usd": 0.01,
         "by_path": {"skipped": 3, "accepted": 1, "enhanced": 0, "direct": 1, "fallback": 0}},
        {"t": 1764339900, "cost_usd": 0.0, "baseline_usd": 0.0,
         "by_path": {"skipped": 0, "accepted": 0, "enhanced": 0, "direct": 0, "fallback": 0}},
        {"t": 1764339960, "cost_usd": 0.0083, "baseline_usd": 0.0356,
         "by_path": {"skipped": 2, "accepted": 2, "enhanced": 1, "direct": 1, "fallback": 1}}]},
    "recent": [
        {"time": "2026-11-28T15:00:09Z", "request_id": "req-0009", "api": "anthropic",
         "path": "skipped", "rule": "short-user-text", "model": "claude-opus-4-6",
         "served_model": "deepseek-chat", "input_tokens": 120, "output_tokens": 40,
         "cost_usd": 0.0001, "baseline_usd": 0.002, "latency_ms": 85.0},
        {"time": "2026-11-28T15:00:07Z", "request_id": "req-0008", "api": "openai",
         "path": "accepted", "rule": "tool-result-followup", "model": "gpt-6.2-sol",
         "served_model": "gpt-5-nano", "input_tokens": 5230, "output_tokens": 312,
         "cost_usd": 0.00081, "baseline_usd": 0.00966, "latency_ms": 1450.5},
        {"time": "2026-11-28T15:00:05Z", "request_id": "req-0007", "api": "anthropic",
         "path": "enhanced", "rule": "default-cascade", "model": "claude-opus-4-6",
         "served_model": "claude-opus-4-6", "input_tokens": 18044, "output_tokens": 1207,
         "cost_usd": 0.0123456, "baseline_usd": 0.0101, "latency_ms": 4100.0},
        {"time": "2026-11-28T15:00:02Z", "request_id": "req-0006", "api": "anthropic",
         "path": "direct", "rule": "forced-tool-choice", "model": "claude-haiku-4-5",
         "served_model": "claude-haiku-4-5", "input_tokens": 900, "output_tokens": 75,
         "cost_usd": 0.000152, "baseline_usd": 0.000152, "latency_ms": 2200.0},
        {"time": "2026-11-28T14:59:58Z", "request_id": "req-0005", "api": "openai",
         "path": "fallback", "rule": "draft-timeout", "model": "gpt-6.2-sol",
         "served_model": "gpt-6.2-sol", "input_tokens": 2100, "output_tokens": 0,
         "cost_usd": 0.0, "baseline_usd": 0.0, "latency_ms": 5012.0},
    ],
}


class Server:
    """The real admin app on a free loopback port, in a background thread."""

    def __init__(self) -> None:
        self.data = DATA
        self.fail = False
        self.fail_after: int | None = None  # fail every call after this many
        self.calls = 0
        self.paths: list[str] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        app = admin.build(Metrics(), lambda: True, dashboard_data=self._data)
        app.on_response_prepare.append(self._seen)
        self.runner = web.AppRunner(app, access_log=None)
        self._call(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self._call(site.start())
        port = self.runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/dashboard"

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def _data(self) -> dict:
        self.calls += 1
        if self.fail or (self.fail_after is not None and self.calls > self.fail_after):
            raise RuntimeError("boom")
        return self.data

    async def _seen(self, request: web.Request, _response: web.StreamResponse) -> None:
        self.paths.append(request.path)

    def close(self) -> None:
        self._call(self.runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture(scope="module")
def server():
    s = Server()
    yield s
    s.close()


@pytest.fixture(autouse=True)
def _reset(server):
    server.data, server.fail, server.fail_after, server.paths[:] = DATA, False, None, []


def test_page_shows_every_number(server, tmp_path):
    require_chromium()
    shot = tmp_path / "dashboard.png"
    dom = render(server.url, screenshot=shot)
    d = parse_dashboard(dom)

    assert d["title"] == "cascade-extproc"
    assert d["error"] is None
    assert d["mode"] == "active"
    assert d["generated_at"] == DATA["generated_at"]
    totals = {k: v for k, v in DATA["totals"].items()}
    assert d["totals"] == totals
    assert d["path_share"] == pytest.approx({p: n / 12 for p, n in DATA["totals"]["by_path"].items()})
    assert d["latency_ms"] == DATA["latency_ms"]
    assert d["shadow"] == {"visible": True, **DATA["shadow"],
                           "agreement": {r: {**a, "rate": pytest.approx(a["agreed"] / a["total"])}
                                         for r, a in DATA["shadow"]["agreement"].items()}}
    assert d["recent"] == DATA["recent"]
    # The charts: cumulative cost, baseline and saving a minute (the quiet minute flat), and the
    # path mix a minute (nothing drawn for the quiet one), with the window's totals beside them.
    ts = [p["t"] for p in DATA["series"]["points"]]
    cost = d["charts"]["cost"]
    assert cost["cost_usd"] == [(ts[0], 0.004), (ts[1], 0.004), (ts[2], pytest.approx(0.0123))]
    assert cost["baseline_usd"] == [(ts[0], 0.01), (ts[1], 0.01), (ts[2], pytest.approx(0.0456))]
    assert [v for _, v in cost["savings_usd"]] == pytest.approx([0.006, 0.006, 0.0333])
    assert d["charts"]["window"] == pytest.approx({"cost_usd": 0.0123, "baseline_usd": 0.0456, "savings_usd": 0.0333})
    assert d["charts"]["mix"] == {ts[0]: {"skipped": 3, "accepted": 1, "direct": 1},
                                  ts[2]: {"skipped": 2, "accepted": 2, "enhanced": 1, "direct": 1, "fallback": 1}}
    assert d["charts"]["mix_totals"] == {"skipped": 5, "accepted": 3, "enhanced": 1, "direct": 2, "fallback": 1}
    assert "cost $0.012300, baseline $0.045600, saving $0.033300" in d["charts"]["labels"]["cost-chart"]
    assert re.search(r'id="cost-chart".*<polygon class="saving" points="[\d., ]+".*<polyline class="baseline"', dom, re.S)
    # Each minute's bar is stacked to the full height: shares, read at a glance.
    bars = re.findall(r'<rect x="[\d.]+" y="[\d.]+" width="[\d.]+" height="([\d.]+)"[^>]*data-t="(\d+)"', dom)
    for t in (ts[0], ts[2]):
        assert sum(float(h) for h, bt in bars if int(bt) == t) == pytest.approx(148, abs=0.5)

    # The formatted text follows the numbers: integers, 6-decimal USD, one-decimal percent.
    assert re.search(r'id="total-requests"[^>]*>12<', dom)
    assert re.search(r'id="draft-use-rate"[^>]*>66\.7%<', dom)
    assert re.search(r'id="cost-usd"[^>]*>\$0\.012300<', dom)
    assert re.search(r'id="savings-rate"[^>]*>73\.0%<', dom)
    # One bar segment per path that occurred, as wide as its share.
    widths = dict(re.findall(r'data-path-segment="(\w+)"[^>]*style="width: ([\d.]+)%', dom))
    assert {p: float(w) for p, w in widths.items()} == pytest.approx(
        {p: 100 * n / 12 for p, n in DATA["totals"]["by_path"].items()}, abs=1e-3)

    assert shot.is_file() and shot.stat().st_size > 10_000, shot
    # The page asked the server for itself and its data, nothing else.
    assert set(server.paths) == {"/dashboard", "/dashboard/data.json"}


def test_page_polls(server):
    require_chromium()
    calls = server.calls
    render(server.url, wait_ms=5000)
    # One fetch at load, then one every 2 s of (virtual) time.
    assert server.calls - calls >= 3


def test_empty_data_and_no_shadow(server):
    require_chromium()
    server.data = {"generated_at": 1764340000.0, "mode": "active",
                   "totals": {"requests": 0, "by_path": {}, "draft_use_rate": 0.0, "cost_usd": 0.0,
                              "baseline_usd": 0.0, "savings_usd": 0.0, "savings_rate": None},
                   "latency_ms": {}, "shadow": {"decisions": {}, "agreement": {}}, "recent": []}
    d = parse_dashboard(render(server.url))
    assert d["error"] is None
    assert d["totals"] == {"requests": 0, "draft_use_rate": 0, "cost_usd": 0, "baseline_usd": 0,
                           "savings_usd": 0, "savings_rate": None,
                           "by_path": {p: 0 for p in ("skipped", "accepted", "enhanced", "direct",
                                                      "fallback")}}
    assert d["latency_ms"] == {} and d["recent"] == []
    assert d["charts"]["cost"] == {} and d["charts"]["mix"] == {}  # "no requests yet", no series at all
    assert d["charts"]["labels"] == {"cost-chart": "Cost over time: no requests yet",
                                     "mix-chart": "Path mix over time: no requests yet"}
    assert d["shadow"]["visible"] is False


def test_shadow_mode_shows_the_section_even_when_empty(server):
    require_chromium()
    data = copy.deepcopy(DATA)
    data["mode"], data["shadow"] = "shadow", {"decisions": {}, "agreement": {}}
    server.data = data
    d = parse_dashboard(render(server.url))
    assert d["mode"] == "shadow"
    assert d["shadow"] == {"visible": True, "decisions": {}, "agreement": {}}


def test_fetch_failure_shows_the_error_banner(server):
    require_chromium()
    server.fail = True
    d = parse_dashboard(render(server.url, wait_ms=2500))
    assert d["error"] is not None and "HTTP 500" in d["error"], d["error"]
    assert d["totals"]["requests"] is None


def test_failure_after_data_keeps_the_last_numbers(server):
    require_chromium()
    server.fail_after = server.calls + 1
    d = parse_dashboard(render(server.url, wait_ms=2500))
    assert "HTTP 500" in d["error"] and "showing data from 2025-11-28 14:26:40 UTC" in d["error"]
    assert d["totals"]["requests"] == 12 and len(d["recent"]) == len(DATA["recent"])


def test_page_loads_nothing_from_elsewhere(server):
    with urllib.request.urlopen(server.url, timeout=10) as r:
        html = r.read().decode()
        csp = r.headers["content-security-policy"]
    assert "//" not in html  # no http://, https:// or protocol-relative URL (nor a // comment)
    assert not re.search(r"\bsrc\s*=|url\(|@import|<link(?![^>]*rel=\"icon\"[^>]*href=\"data:,\")",
                         html)
    assert "default-src 'self'" in csp and "'unsafe-eval'" not in csp
