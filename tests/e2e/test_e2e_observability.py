"""After a scripted mixed workload through a real Envoy, /metrics, the dashboard's data, the
rendered dashboard and the request log lines agree on counts and cost."""
import json
import time
import urllib.request

import anthropic
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from browser import parse_dashboard, render, require_chromium
from stack import CLIENT_KEY, Stack

COMPLEX = ("Compare optimistic and pessimistic locking for our inventory service and recommend one, "
           "with the failure modes of each under contention.")


@pytest.fixture
def stack(tmp_path):
    s = Stack(tmp_path)
    yield s
    s.close()


def metric_sums(text):
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, {})
            key = tuple(sorted(s.labels.items()))
            out[s.name][key] = s.value
    return out


def total(sums, name, **labels):
    return sum(v for k, v in sums.get(name, {}).items() if all((lk, lv) in k for lk, lv in labels.items()))


def request_lines(stack, expected, timeout_s=10):
    deadline = time.monotonic() + timeout_s
    while True:
        lines = []
        for line in stack.server_log.read_text().splitlines():
            if line.startswith("{"):
                obj = json.loads(line)
                if obj.get("event") == "request":
                    lines.append(obj)
        if len(lines) >= expected or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def workload(stack):
    a = anthropic.Anthropic(base_url=stack.anthropic_url, api_key=CLIENT_KEY, max_retries=0)
    o = openai.OpenAI(base_url=stack.openai_url, api_key=CLIENT_KEY, max_retries=0)
    msg = lambda text: [{"role": "user", "content": text}]  # noqa: E731
    a.messages.create(model="claude-sonnet-5", max_tokens=200, messages=msg("hi"))
    with a.messages.stream(model="claude-sonnet-5", max_tokens=200, messages=msg("thanks")) as s:
        s.get_final_message()
    a.messages.create(model="claude-sonnet-5", max_tokens=200, messages=msg(COMPLEX))
    a.messages.create(model="claude-sonnet-5", max_tokens=200, messages=msg(COMPLEX + " sim:reject"))
    a.messages.create(model="claude-haiku-4-5", max_tokens=200, messages=msg(COMPLEX))
    stack.sims["draft_anthropic"].fail_next(500)
    a.messages.create(model="claude-sonnet-5", max_tokens=200, messages=msg(COMPLEX))
    # An OpenAI stream that did not ask for usage: metered all the same, and it sees no usage chunk.
    chunks = list(o.chat.completions.create(model="gpt-6.2-sol", stream=True, messages=msg("ok")))
    assert all(c.usage is None for c in chunks) and chunks[-1].choices
    o.chat.completions.create(model="gpt-5-mini", messages=msg(COMPLEX))
    # Not a model call: it passes, and never reaches the server, so nothing counts it.
    urllib.request.urlopen(urllib.request.Request(stack.anthropic_url + "/v1/models",
                                                  headers={"x-api-key": CLIENT_KEY}), timeout=10).read()
    return 8


def test_metrics_dashboard_and_logs_agree(stack, tmp_path):
    require_chromium()
    n = workload(stack)
    logs = request_lines(stack, n)
    sums = metric_sums(stack.metrics_text())
    with urllib.request.urlopen(f"http://127.0.0.1:{stack.admin_port}/dashboard/data.json", timeout=5) as r:
        data = json.loads(r.read())

    by_path = {"skipped": 3, "accepted": 1, "enhanced": 1, "direct": 2, "fallback": 1}
    assert len(logs) == n == data["totals"]["requests"] == total(sums, "cascade_requests_total")
    for path, count in by_path.items():
        assert total(sums, "cascade_requests_total", path=path) == count, path
        assert data["totals"]["by_path"][path] == count
        assert sum(1 for x in logs if x["path"] == path) == count
    # Every request that reached a provider was metered: tokens for both providers.
    assert total(sums, "cascade_tokens_total", provider="draft", kind="output") > 0
    assert total(sums, "cascade_tokens_total", provider="strong", kind="input") > 0
    # The OpenAI stream's hidden usage chunk reached the meter.
    openai_stream = next(x for x in logs if x["api"] == "openai" and x["path"] == "skipped")
    assert openai_stream["tokens"]["draft"]["output"] > 0
    # Costs agree to the cent's millionth across the three.
    cost = total(sums, "cascade_cost_usd_total")
    baseline = total(sums, "cascade_baseline_cost_usd_total")
    logged = [x for x in logs if x["cost_usd"] is not None and x["baseline_usd"] is not None]
    assert cost > 0 and baseline > cost
    assert sum(x["cost_usd"] for x in logged) == pytest.approx(cost, abs=1e-9)
    assert sum(x["baseline_usd"] for x in logged) == pytest.approx(baseline, abs=1e-9)
    assert data["totals"]["cost_usd"] == pytest.approx(cost, abs=1e-9)
    assert data["totals"]["baseline_usd"] == pytest.approx(baseline, abs=1e-9)
    assert total(sums, "cascade_savings_usd") == pytest.approx(baseline - cost, abs=1e-9)
    # Unpriced requests are counted, not guessed: gpt-5 has no price.
    assert total(sums, "cascade_unpriced_requests_total") == n - len(logged)
    assert data["totals"]["draft_use_rate"] == pytest.approx(4 / 8)  # of the 8 model calls
    assert total(sums, "cascade_fallbacks_total", reason="draft-failed") == 1
    assert total(sums, "cascade_provider_duration_seconds_count", provider="draft", call="draft") == 3
    # Logs carry ids, models and latency, and no prompt text or keys.
    log_text = stack.server_log.read_text()
    assert all(x["request_id"] and x["latency_ms"] >= 0 for x in logs)
    assert CLIENT_KEY not in log_text and "draft-secret-key" not in log_text
    assert "optimistic and pessimistic" not in log_text
    assert len(data["recent"]) == n and data["recent"][0]["path"] == "direct"  # newest first

    # The page in a real browser shows the same numbers.
    shot = tmp_path / "dashboard.png"
    page = parse_dashboard(render(f"http://127.0.0.1:{stack.admin_port}/dashboard", screenshot=shot))
    assert page["error"] is None
    assert page["totals"]["requests"] == n
    assert page["totals"]["by_path"] == {p: by_path.get(p, 0) for p in page["totals"]["by_path"]}
    assert page["totals"]["cost_usd"] == pytest.approx(cost, abs=1e-9)
    assert page["totals"]["baseline_usd"] == pytest.approx(baseline, abs=1e-9)
    assert page["totals"]["savings_usd"] == pytest.approx(baseline - cost, abs=1e-9)
    assert page["totals"]["draft_use_rate"] == pytest.approx(4 / 8, abs=1e-3)
    assert len(page["recent"]) == n and shot.stat().st_size > 10_000


def test_metering_off_leaves_answers_alone(tmp_path):
    s = Stack(tmp_path, extra_config={"metering": False})
    try:
        o = openai.OpenAI(base_url=s.openai_url, api_key=CLIENT_KEY, max_retries=0)
        list(o.chat.completions.create(model="gpt-5-mini", stream=True, messages=[{"role": "user", "content": "x"}]))
        (got,) = s.sims["strong_openai"].received
        assert "stream_options" not in got.json  # nobody asked the provider for usage
        sums = metric_sums(s.metrics_text())
        assert total(sums, "cascade_requests_total", path="direct") == 1
        assert total(sums, "cascade_tokens_total") == 0 and total(sums, "cascade_unpriced_requests_total") == 1
    finally:
        s.close()


def test_direct_answers_are_metered_exactly_off_the_critical_path(stack):
    """Direct answers are metered by Envoy (its usage filter) and the usage comes back by its
    access log, not by ext_proc messages: JSON and SSE, both APIs (an OpenAI stream whose usage
    the server asked for included). Tokens are the provider's to the token, cost to the cent's
    millionth, and /metrics, the dashboard and the log lines agree."""
    a = anthropic.Anthropic(base_url=stack.anthropic_url, api_key=CLIENT_KEY, max_retries=0)
    o = openai.OpenAI(base_url=stack.openai_url, api_key=CLIENT_KEY, max_retries=0)
    msg = lambda text: [{"role": "user", "content": text}]  # noqa: E731
    before = stack.metric_total("cascade_extproc_messages_total")
    made = a.messages.create(model="claude-haiku-4-5", max_tokens=200, messages=msg("hello there"))
    with a.messages.stream(model="claude-haiku-4-5", max_tokens=200, messages=msg("hello again")) as s:
        streamed = s.get_final_message()
    oj = o.chat.completions.create(model="gpt-5.4-mini", messages=msg("ok then"))
    asked = list(o.chat.completions.create(model="gpt-5.4-mini", stream=True, messages=msg("ok again"),
                                           stream_options={"include_usage": True}))
    hidden = list(o.chat.completions.create(model="gpt-5.4-mini", stream=True, messages=msg("ok again")))
    assert all(c.usage is None for c in hidden)  # the usage chunk asked for the client is not shown
    logs = request_lines(stack, 5)
    assert len(logs) == 5 and all(x["path"] == "direct" and x["status"] == 200 for x in logs)
    # One message per call: the request body; nothing of the answers.
    assert stack.metric_total("cascade_extproc_messages_total") - before == 5
    ant = [x["tokens"]["strong"] for x in logs if x["api"] == "anthropic"]
    oai = [x["tokens"]["strong"] for x in logs if x["api"] == "openai"]
    assert sum(t["input"] + t["cache_read"] + t["cache_write"] for t in ant) == sum(
        m.usage.input_tokens + (m.usage.cache_read_input_tokens or 0) + (m.usage.cache_creation_input_tokens or 0)
        for m in (made, streamed))
    assert sum(t["output"] for t in ant) == made.usage.output_tokens + streamed.usage.output_tokens
    usage_chunk = asked[-1].usage
    assert sum(t["output"] for t in oai) == oj.usage.completion_tokens + 2 * usage_chunk.completion_tokens
    assert sum(t["input"] + t["cache_read"] + t["cache_write"] for t in oai) == (
        oj.usage.prompt_tokens + 2 * usage_chunk.prompt_tokens)
    prices = {"anthropic": (1, 5, 1.25, 0.1), "openai": (0.75, 4.5, 0.75, 0.075)}  # defaults/config.yaml
    expected = 0.0
    for x in logs:
        t, (pi, po, pw, pr) = x["tokens"]["strong"], prices[x["api"]]
        cost = (t["input"] * pi + t["output"] * po + t["cache_write"] * pw + t["cache_read"] * pr) / 1e6
        assert x["cost_usd"] == pytest.approx(cost, abs=1e-12) and x["cost_usd"] > 0
        expected += cost
    sums = metric_sums(stack.metrics_text())
    assert total(sums, "cascade_cost_usd_total", path="direct") == pytest.approx(expected, abs=1e-9)
    assert total(sums, "cascade_tokens_total", provider="strong", kind="output") == sum(
        x["tokens"]["strong"]["output"] for x in logs)
    with urllib.request.urlopen(f"http://127.0.0.1:{stack.admin_port}/dashboard/data.json", timeout=5) as r:
        assert json.loads(r.read())["totals"]["cost_usd"] == pytest.approx(expected, abs=1e-9)
    assert all(x["latency_ms"] >= 0 and x["served_model"] for x in logs)
