"""The OpenAI Chat Completions API on every path, driven by the official openai SDK."""
import json
import time

import openai
import pytest

from stack import CLIENT_KEY, DRAFT_KEY, DRAFT_MODELS, key_of

STRONG_MODEL = "gpt-6.2-sol"
COMPLEX = ("Compare three designs for a rate limiter (token bucket, sliding window log, "
           "sliding window counter) for a multi-region API gateway, with failure modes and costs.")
TOOL = {"type": "function", "function": {
    "name": "lookup_order", "description": "Find an order.",
    "parameters": {"type": "object", "properties": {"order_id": {"type": "integer"}},
                   "required": ["order_id"]}}}


@pytest.fixture
def client(stack):
    return openai.OpenAI(base_url=stack.openai_url, api_key=CLIENT_KEY, max_retries=0)


def create(client, text, model=STRONG_MODEL, **kw):
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": text}], **kw)
    return raw.headers.get("x-cascade-path"), raw.parse()


def assert_draft_got_only_draft_key(stack):
    received = stack.sims["draft_openai"].received
    assert received
    for r in received:
        assert CLIENT_KEY not in str(r.headers) and CLIENT_KEY.encode() not in r.body
        assert key_of(r.headers) == DRAFT_KEY and r.json["model"] == DRAFT_MODELS["openai"]


def test_skipped(stack, client):
    before = stack.requests_total(path="skipped", api="openai")
    path, c = create(client, "thanks!")
    assert path == "skipped"
    assert c.choices[0].message.content.startswith(f"Simulated reply from {DRAFT_MODELS['openai']}")
    assert_draft_got_only_draft_key(stack)
    assert stack.sims["strong_openai"].received == []
    assert stack.requests_total(path="skipped", api="openai") == before + 1


def test_skipped_stream_with_tool(stack, client):
    stream = client.chat.completions.create(
        model=STRONG_MODEL, stream=True, stream_options={"include_usage": True}, tools=[TOOL],
        messages=[{"role": "user", "content": "sim:tool=lookup_order"}])
    chunks = list(stream)
    calls = [tc for ch in chunks for c in ch.choices for tc in (c.delta.tool_calls or [])]
    assert calls[0].function.name == "lookup_order"
    args = "".join(tc.function.arguments or "" for tc in calls)
    assert json.loads(args) == {"order_id": 1}
    assert chunks[-1].usage.completion_tokens > 0
    assert_draft_got_only_draft_key(stack)


def test_direct(stack, client):
    path, c = create(client, "hi", model="gpt-5-mini")
    assert path == "direct"
    (got,) = stack.sims["strong_openai"].received
    assert key_of(got.headers) == CLIENT_KEY and got.path == "/v1/chat/completions"
    assert stack.sims["draft_openai"].received == []


def test_forced_tool_choice_is_direct(stack, client):
    path, c = create(client, COMPLEX, tools=[TOOL],
                     tool_choice={"type": "function", "function": {"name": "lookup_order"}})
    assert path == "direct"
    assert c.choices[0].message.tool_calls[0].function.name == "lookup_order"


def test_cascade_accepted_and_enhanced(stack, client):
    path, c = create(client, COMPLEX)
    assert path == "accepted"
    assert c.choices[0].message.content.startswith(f"Simulated reply from {DRAFT_MODELS['openai']}")
    assert_draft_got_only_draft_key(stack)
    (verify,) = stack.sims["strong_openai"].received
    assert key_of(verify.headers) == CLIENT_KEY
    path, c = create(client, COMPLEX + " sim:reject")
    assert path == "enhanced"
    assert c.choices[0].message.content.startswith(f"Simulated reply from {STRONG_MODEL}")


def test_cascade_stream_with_tool(stack, client):
    raw = client.chat.completions.with_raw_response.create(
        model=STRONG_MODEL, stream=True, stream_options={"include_usage": True}, tools=[TOOL],
        messages=[{"role": "user", "content": COMPLEX + " sim:tool=lookup_order"}])
    assert raw.headers["x-cascade-path"] == "accepted"
    chunks = list(raw.parse())
    calls = [tc for ch in chunks for c in ch.choices for tc in (c.delta.tool_calls or [])]
    assert calls[0].function.name == "lookup_order" and calls[0].id.startswith("call_")
    assert json.loads("".join(tc.function.arguments or "" for tc in calls)) == {"order_id": 1}
    finishes = [c.finish_reason for ch in chunks for c in ch.choices if c.finish_reason]
    assert finishes == ["tool_calls"]
    assert chunks[-1].usage.total_tokens > 0


def _wait_for(fn, timeout_s=5.0):
    """The ledger records a request when its answer is done: poll the metrics briefly."""
    deadline = time.monotonic() + timeout_s
    while not fn() and time.monotonic() < deadline:
        time.sleep(0.05)
    return fn()


def test_openai_traffic_is_priced(stack, client):
    """OpenAI models have prices: a cascade on one is metered with a cost, as Anthropic's are."""
    cost, unpriced = stack.metric_total("cascade_cost_usd_total"), stack.metric_total("cascade_unpriced_requests_total")
    done = stack.requests_total(api="openai", model=STRONG_MODEL, rule="complex-turn")
    path, c = create(client, COMPLEX)
    assert path == "accepted"
    assert _wait_for(lambda: stack.requests_total(api="openai", model=STRONG_MODEL, rule="complex-turn") > done)
    assert stack.metric_total("cascade_cost_usd_total") > cost  # draft + verify, at their prices
    assert stack.metric_total("cascade_unpriced_requests_total") == unpriced


def test_unpriced_openai_model_is_not_cascaded(stack, client):
    """A model without a price: a cascade's cost cannot be judged, so the turn goes direct."""
    model = "gpt-unknown-9"
    before = stack.requests_total(path="direct", api="openai", model=model, rule="unpriced-model")
    path, c = create(client, COMPLEX, model=model)
    assert path == "direct"
    assert c.choices[0].message.content.startswith(f"Simulated reply from {model}")
    assert stack.sims["draft_openai"].received == []
    (got,) = stack.sims["strong_openai"].received
    assert got.json["model"] == model and got.json["messages"][-1]["content"] == COMPLEX  # not a verify call
    assert _wait_for(lambda: stack.requests_total(path="direct", api="openai", model=model,
                                                  rule="unpriced-model") == before + 1)


@pytest.mark.parametrize("model, expected_path", [("gpt-5.4-mini", "direct"), (STRONG_MODEL, "skipped")])
def test_usage_chunk_only_for_the_client_that_asked(stack, client, model, expected_path):
    """To meter a stream the server asks the provider for usage; Envoy's usage filter hides that
    chunk from a client that did not ask (the metering itself: test_e2e_observability.py)."""
    def stream(**kw):
        raw = client.chat.completions.with_raw_response.create(
            model=model, stream=True, messages=[{"role": "user", "content": "thanks!"}], **kw)
        assert raw.headers["x-cascade-path"] == expected_path
        return list(raw.parse())
    quiet = stream()
    assert all(c.choices for c in quiet) and all(c.usage is None for c in quiet)
    asked = stream(stream_options={"include_usage": True})
    assert asked[-1].choices == [] and asked[-1].usage.total_tokens > 0
    assert all(c.choices for c in asked[:-1])
    received = [*stack.sims["strong_openai"].received, *stack.sims["draft_openai"].received]
    assert [r.json["stream_options"] for r in received] == [{"include_usage": True}] * 2
    # The body the server rewrote (include_usage spliced in) went with its own length.
    assert all(int(r.headers["content-length"]) == len(r.body) for r in received)
