"""Shadow mode: every answer byte-identical to the strong provider's own; decisions recorded;
sampled draft answers compared with the strong model's."""
import json
import time
import urllib.request

import pytest

from stack import CLIENT_KEY, Stack
from test_e2e_observability import metric_sums, total

COMPLEX = ("Explain the difference between a mutex and a semaphore, when each is the right tool, and "
           "show the classic bug each one prevents.")
REQUESTS = [
    ("anthropic", {"model": "claude-sonnet-5", "max_tokens": 200, "messages": [{"role": "user", "content": "hi"}]}),
    ("anthropic", {"model": "claude-sonnet-5", "max_tokens": 200, "stream": True,
                   "messages": [{"role": "user", "content": "thanks"}]}),
    ("anthropic", {"model": "claude-sonnet-5", "max_tokens": 200, "messages": [{"role": "user", "content": COMPLEX}]}),
    ("anthropic", {"model": "claude-sonnet-5", "max_tokens": 200, "stream": True,
                   "messages": [{"role": "user", "content": COMPLEX}]}),
    ("anthropic", {"model": "claude-haiku-4-5", "max_tokens": 200, "messages": [{"role": "user", "content": "hi"}]}),
    ("openai", {"model": "gpt-6.2-sol", "messages": [{"role": "user", "content": "ok"}]}),
    ("openai", {"model": "gpt-6.2-sol", "stream": True, "messages": [{"role": "user", "content": "ok"}]}),
    ("anthropic", {"model": "claude-sonnet-5", "messages": [{"role": "user", "content": "no max_tokens"}]}),  # a 400
]


def post(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers={
        "content-type": "application/json", "x-api-key": CLIENT_KEY, "authorization": f"Bearer {CLIENT_KEY}",
        "anthropic-version": "2023-06-01"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers.get("content-type"), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("content-type"), e.read()


@pytest.fixture
def shadow(tmp_path):
    s = Stack(tmp_path, extra_config={"mode": "shadow", "shadow": {"sample_rate": 1.0}})
    yield s
    s.close()


def test_shadow_mode_answers_are_byte_identical_to_pass_through(shadow):
    for api, body in REQUESTS:
        shadow.sims[f"strong_{api}"].cache.clear()
        via_sidecar = post((shadow.anthropic_url + "/v1/messages") if api == "anthropic"
                           else (shadow.openai_url + "/chat/completions"), body)
        # The same request again would read the first one's prompt cache (other usage figures):
        # each starts from an empty one.
        shadow.sims[f"strong_{api}"].cache.clear()
        straight = post(shadow.sims[f"strong_{api}"].url + ("/v1/messages" if api == "anthropic"
                                                             else "/chat/completions"), body)
        assert via_sidecar == straight, (api, body)
    # Only the strong providers were called by clients; the draft only by the shadow sampler.
    strong = [r for api in ("anthropic", "openai") for r in shadow.sims[f"strong_{api}"].received]
    assert len(strong) == 2 * len(REQUESTS)
    # What would have happened is on record.
    deadline = time.monotonic() + 10
    while True:
        sums = metric_sums(shadow.metrics_text())
        agreements = total(sums, "cascade_shadow_agreement_total")
        if agreements >= 6 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert total(sums, "cascade_requests_total") == len(REQUESTS)
    assert total(sums, "cascade_requests_total", path="direct") == len(REQUESTS)
    # hi, thanks, ok and ok would have been skipped; the two complex ones cascaded. The bad request
    # (no max_tokens: the API refuses it) is not routed at all.
    assert total(sums, "cascade_shadow_decisions_total", route="skipped") == 4
    assert total(sums, "cascade_shadow_decisions_total", route="cascade") == 2
    # Six sampled would-be draft turns.
    assert agreements == 6
    assert total(sums, "cascade_shadow_agreement_total", rule="short-user-text") == 4
    draft_calls = [r for api in ("anthropic", "openai") for r in shadow.sims[f"draft_{api}"].received]
    assert len(draft_calls) == 6 and all(r.json["model"].startswith("sim-draft-") for r in draft_calls)
    assert all(CLIENT_KEY not in str(r.headers) for r in draft_calls)
    with urllib.request.urlopen(f"http://127.0.0.1:{shadow.admin_port}/dashboard/data.json", timeout=5) as r:
        data = json.loads(r.read())
    assert data["mode"] == "shadow" and data["shadow"]["decisions"]["skipped"] == 4
