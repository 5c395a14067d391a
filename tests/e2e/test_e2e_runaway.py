"""Draft answers that run away (issue 17), through a real Envoy with the official SDKs, against
the simulated providers told to loop (`sim:loop=draft`: the draft says the same phrase until its
max_tokens, or 50,000 tokens with none; the strong model answers as usual).

Two stacks: `stack` with the defaults (an output budget of 8192 tokens, the repetition detector
on), where the detector is what stops a loop; `tight` with a budget of 200 tokens (under the
detector's first verdict at 256) and a 3-second limit for a skipped answer, where the budget and
the clock are. On every path that uses the draft (skipped, cascade), both APIs, JSON and SSE: the
draft is asked for at most the budget, a client gets no endless answer, a stream the sidecar
ends ends as the API ends a length stop (never a cut), and where the server holds the answer (a
cascade, a skipped JSON answer) a failed draft is answered by the strong model, with the reason
in the metrics."""
import time

import anthropic
import openai
import pytest

from stack import CLIENT_KEY, DRAFT_MODELS, stack_fixture

MODELS = {"anthropic": "claude-sonnet-5", "openai": "gpt-6.2-sol"}
SHORT = "Say hi sim:loop=draft"  # routed skipped (a short user text)
COMPLEX = ("Compare three designs for a rate limiter (token bucket, sliding window log, sliding window "
           "counter) for a multi-region API gateway, with failure modes and costs. sim:loop=draft")  # a cascade
BUDGET, TIGHT_BUDGET, TIGHT_MAX_S = 8192, 200, 3

tight = stack_fixture("runaway-tight", extra_config={"cascade": {"draft_max_tokens": TIGHT_BUDGET,
                                                                 "skipped_max_s": TIGHT_MAX_S}})


@pytest.fixture(autouse=True)
def _fresh(request):
    for name in ("stack", "tight"):
        if name in request.fixturenames:
            request.getfixturevalue(name).clear()
    yield
    for name in ("stack", "tight"):
        if name in request.fixturenames:
            request.getfixturevalue(name).quick()


def call(s, api, text, stream, max_tokens=None):
    """(x-cascade-path, text, stop reason in the client's API, seconds) of one SDK call."""
    t0 = time.monotonic()
    msgs = [{"role": "user", "content": text}]
    if api == "anthropic":
        client = anthropic.Anthropic(base_url=s.anthropic_url, api_key=CLIENT_KEY, max_retries=0)
        # Above any budget (the SDK insists on streaming for more than 21,333)
        limit = max_tokens or (64000 if stream else 20000)
        raw = client.messages.with_raw_response.create(model=MODELS[api], max_tokens=limit,
                                                       messages=msgs, stream=stream)
        if not stream:
            msg = raw.parse()
            return raw.headers["x-cascade-path"], msg.content[0].text, msg.stop_reason, time.monotonic() - t0
        events = list(raw.parse())  # the SDK reads the stream to its end: a cut would raise here
        types = [e.type for e in events]
        assert types[-1] == "message_stop" and types.count("message_stop") == 1
        text = "".join(e.delta.text for e in events if e.type == "content_block_delta" and e.delta.type == "text_delta")
        (stop,) = [e.delta.stop_reason for e in events if e.type == "message_delta"]
        return raw.headers["x-cascade-path"], text, stop, time.monotonic() - t0
    client = openai.OpenAI(base_url=s.openai_url, api_key=CLIENT_KEY, max_retries=0)
    kw = {"max_completion_tokens": max_tokens} if max_tokens else {}  # none: what the issue saw
    raw = client.chat.completions.with_raw_response.create(model=MODELS[api], messages=msgs, stream=stream, **kw)
    if not stream:
        c = raw.parse()
        return raw.headers["x-cascade-path"], c.choices[0].message.content, c.choices[0].finish_reason, \
            time.monotonic() - t0
    chunks = list(raw.parse())  # to [DONE]: the SDK stops there
    text = "".join(c.delta.content or "" for ch in chunks for c in ch.choices)
    (stop,) = [c.finish_reason for ch in chunks for c in ch.choices if c.finish_reason]
    return raw.headers["x-cascade-path"], text, stop, time.monotonic() - t0


LENGTH = {"anthropic": "max_tokens", "openai": "length"}


def draft_limit(s, api):
    """The output limit the draft was asked for (the last call)."""
    body = s.sims[f"draft_{api}"].received[-1].json
    assert body["model"] == DRAFT_MODELS[api]
    return body.get("max_completion_tokens") or body.get("max_tokens")


def counted(s, name, timeout_s=5.0, **labels):
    """A counter's value once the ledger has the request (recorded when its answer is done)."""
    deadline = time.monotonic() + timeout_s
    value = s.metric_total(name, **labels)
    while value == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
        value = s.metric_total(name, **labels)
    return value


def strong_reply(api):
    return f"Simulated reply from {MODELS[api]}"


# ---- the skipped path: the draft streams to the client through the relay ----

@pytest.mark.parametrize("api", ["anthropic", "openai"])
def test_a_skipped_stream_that_loops_is_ended_as_a_length_stop(stack, api):
    """What the issue saw (an OpenAI stream with no max_tokens, a draft looping for minutes): the
    draft is asked for the budget, the detector sees the loop within a few hundred words, and the
    sidecar ends the stream as the API ends a length stop; the SDK takes it as a whole answer."""
    stack.sims[f"draft_{api}"].latency.tokens_per_s = 2000  # paced: the client has the start first
    before = stack.metric_total("cascade_request_errors_total", path="skipped", reason="draft-degenerate")
    path, text, stop, secs = call(stack, api, SHORT, stream=True)
    assert path == "skipped" and stop == LENGTH[api]
    assert text.startswith("I will say this again") and 100 < len(text.split()) < 1024
    assert draft_limit(stack, api) == BUDGET  # OpenAI: none set; Anthropic: 64000 asked
    assert stack.sims[f"strong_{api}"].received == []
    assert counted(stack, "cascade_request_errors_total", path="skipped", reason="draft-degenerate") == before + 1


@pytest.mark.parametrize("api", ["anthropic", "openai"])
def test_a_skipped_json_answer_that_loops_is_answered_by_the_strong_model(stack, api):
    before = stack.metric_total("cascade_fallbacks_total", reason="draft-degenerate")
    path, text, stop, _ = call(stack, api, SHORT, stream=False)
    assert path == "fallback" and text.startswith(strong_reply(api)) and stop != LENGTH[api]
    assert draft_limit(stack, api) == BUDGET
    assert counted(stack, "cascade_fallbacks_total", reason="draft-degenerate") == before + 1


@pytest.mark.parametrize("api", ["anthropic", "openai"])
def test_a_skipped_stream_stopped_by_the_budget_ends_with_the_apis_length_stop(tight, api):
    tight.sims[f"draft_{api}"].latency.tokens_per_s = 2000
    before = tight.metric_total("cascade_request_errors_total", path="skipped", reason="draft-budget")
    path, text, stop, _ = call(tight, api, SHORT, stream=True)
    assert path == "skipped" and stop == LENGTH[api]
    assert 0 < len(text.split()) <= TIGHT_BUDGET
    assert draft_limit(tight, api) == TIGHT_BUDGET
    assert counted(tight, "cascade_request_errors_total", path="skipped", reason="draft-budget") == before + 1


@pytest.mark.parametrize("api", ["anthropic", "openai"])
def test_a_skipped_json_answer_stopped_by_the_budget_is_answered_by_the_strong_model(tight, api):
    before = tight.metric_total("cascade_fallbacks_total", reason="draft-budget")
    path, text, _, _ = call(tight, api, SHORT, stream=False)
    assert path == "fallback" and text.startswith(strong_reply(api))
    assert draft_limit(tight, api) == TIGHT_BUDGET
    assert counted(tight, "cascade_fallbacks_total", reason="draft-budget") == before + 1


@pytest.mark.parametrize("api", ["anthropic", "openai"])
def test_the_clients_own_limit_is_kept_and_its_length_stop_is_no_failure(tight, api):
    tight.sims[f"draft_{api}"].latency.tokens_per_s = 2000
    path, text, stop, _ = call(tight, api, SHORT, stream=True, max_tokens=50)
    assert path == "skipped" and stop == LENGTH[api] and len(text.split()) <= 50
    assert draft_limit(tight, api) == 50


@pytest.mark.parametrize("api", ["anthropic", "openai"])
def test_the_time_limit_ends_a_skipped_stream_properly_and_a_json_answer_goes_to_the_strong_model(tight, api):
    """A draft at 40 tokens a second needs 5 s for the budget: past the 3-second limit."""
    tight.sims[f"draft_{api}"].latency.tokens_per_s = 40
    before = tight.metric_total("cascade_request_errors_total", path="skipped", reason="draft-deadline")
    path, text, stop, secs = call(tight, api, SHORT, stream=True)
    assert path == "skipped" and stop == LENGTH[api]  # ended, not cut: the SDK read it to its end
    assert TIGHT_MAX_S - 0.5 < secs < TIGHT_MAX_S + 1.5 and 10 < len(text.split()) < TIGHT_BUDGET
    assert counted(tight, "cascade_request_errors_total", path="skipped", reason="draft-deadline") == before + 1
    before = tight.metric_total("cascade_fallbacks_total", reason="draft-deadline")
    path, text, _, secs = call(tight, api, SHORT, stream=False)
    assert path == "fallback" and text.startswith(strong_reply(api)) and secs < TIGHT_MAX_S + 1.5
    assert counted(tight, "cascade_fallbacks_total", reason="draft-deadline") == before + 1


# ---- the cascade: the server holds the draft, so a failed one is never verified nor served ----

@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("api", ["anthropic", "openai"])
def test_a_cascades_looping_draft_is_escalated_to_the_strong_model(stack, api, stream):
    before = stack.metric_total("cascade_fallbacks_total", reason="draft-degenerate")
    path, text, stop, _ = call(stack, api, COMPLEX, stream=stream)
    assert path == "fallback" and text.startswith(strong_reply(api)) and stop != LENGTH[api]
    assert draft_limit(stack, api) == BUDGET
    (strong,) = stack.sims[f"strong_{api}"].received  # the client's request, never a verification
    assert "cascade-verify" not in strong.body.decode()
    assert counted(stack, "cascade_fallbacks_total", reason="draft-degenerate") == before + 1


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("api", ["anthropic", "openai"])
def test_a_cascades_draft_stopped_by_the_budget_is_escalated_to_the_strong_model(tight, api, stream):
    before = tight.metric_total("cascade_fallbacks_total", reason="draft-budget")
    path, text, _, _ = call(tight, api, COMPLEX, stream=stream)
    assert path == "fallback" and text.startswith(strong_reply(api))
    assert draft_limit(tight, api) == TIGHT_BUDGET
    assert counted(tight, "cascade_fallbacks_total", reason="draft-budget") == before + 1
