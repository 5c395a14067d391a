"""Time limits and the verify-failure policy, end to end through a real Envoy."""
import time

import anthropic
import pytest

from stack import CLIENT_KEY, Stack, stack_fixture

COMPLEX = ("Walk through how to shard a Postgres database by tenant, including the migration "
           "plan, the routing layer, and how to rebalance hot tenants without downtime.")


def ask(stack, text=COMPLEX):
    client = anthropic.Anthropic(base_url=stack.anthropic_url, api_key=CLIENT_KEY, max_retries=0)
    raw = client.messages.with_raw_response.create(
        model="claude-sonnet-5", max_tokens=100, messages=[{"role": "user", "content": text}])
    return raw.headers["x-cascade-path"], raw.parse()


stack = stack_fixture("timeouts", extra_config={"cascade": {"draft_timeout_s": 4, "verify_timeout_s": 4}})


@pytest.fixture(autouse=True)
def _no_latency(stack):
    yield
    stack.quick()


def test_slow_draft_falls_back_to_strong(stack):
    stack.sims["draft_anthropic"].latency.ttft_s = 5  # over draft_timeout_s
    t0 = time.monotonic()
    path, msg = ask(stack)
    assert path == "fallback" and msg.content[0].text.startswith("Simulated reply from claude-sonnet-5")
    assert time.monotonic() - t0 < 7  # the draft limit cut it short; the strong model answered


def test_cascade_longer_than_envoys_message_timeout_completes(stack):
    # 3 s + 3 s is past Envoy's 5 s message timeout: the server extends it for the cascade.
    stack.sims["draft_anthropic"].latency.ttft_s = 3
    stack.sims["strong_anthropic"].latency.ttft_s = 3
    path, msg = ask(stack)
    assert path == "accepted"


def test_verify_failure_falls_back_by_default(stack):
    stack.sims["strong_anthropic"].fail_next(500)
    path, msg = ask(stack)
    assert path == "fallback" and msg.content[0].text.startswith("Simulated reply from claude-sonnet-5")


def test_verify_failure_can_serve_the_draft(tmp_path):
    s = Stack(tmp_path, extra_config={"cascade": {"on_verify_failure": "serve_draft"}})
    try:
        s.sims["strong_anthropic"].fail_next(500)
        path, msg = ask(s)
        assert path == "skipped" and msg.content[0].text.startswith("Simulated reply from sim-draft-claude")
    finally:
        s.close()
