"""The stack against real models: the draft and the strong provider are both local llama-servers
(SmolLM2-135M-Instruct, scripts/local_models.py), on both client APIs; the Anthropic one through
llama.cpp's own /v1/messages. Whatever the model says, what must hold holds: every answer is
valid in the client's format (the official SDKs parse it), says the path the router chose (for
a cascade: whatever the real verifier decided, accepted or enhanced, or fallback when its verdict
was unusable), is metered from the server's own token counts, and no request is lost.
Then `eval` on paper20 (a few tasks) and agentic (one task) against these models: the CI smoke test.
"""
from __future__ import annotations

import json
import time

import anthropic
import openai
import pytest

from local_llm import DRAFT_MODEL, STRONG_MODEL, local_models, require_local_models, stack_config, upstreams
from stack import CLIENT_KEY, Stack

from cascade_extproc import cli

pytestmark = pytest.mark.timeout(900)

MAX_TOKENS = 48  # small answers: two servers share 2 cores
COMPLEX = ("Refactor the retry loop below so that it backs off exponentially, explain the trade-offs of "
           "jitter, and keep the public interface unchanged.\n```python\ndef fetch(url):\n    for _ in range(3):\n"
           "        try:\n            return get(url)\n        except IOError:\n            pass\n```")
TOOL = {"name": "get_weather", "description": "Current weather for a city.",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
OPENAI_TOOL = {"type": "function", "function": {"name": TOOL["name"], "description": TOOL["description"],
                                                "parameters": TOOL["input_schema"]}}
EXPECTED = {"skipped": {"skipped"}, "tool-turn": {"skipped"}, "direct": {"direct"},
            "cascade": {"accepted", "enhanced", "fallback"}}
SENT: list[str] = []  # every request the tests made, to count against the stack's ledger


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    require_local_models()
    started = local_models.start_all(log_dir=tmp_path_factory.mktemp("llama"))
    yield started
    for s in started.values():
        s.stop()


@pytest.fixture(scope="module")
def local(servers, tmp_path_factory):
    s = Stack(tmp_path_factory.mktemp("local-stack"), extra_config=stack_config(), upstreams=upstreams(servers),
              draft_models={"anthropic": DRAFT_MODEL, "openai": DRAFT_MODEL})
    yield s
    s.close()


def _messages(kind: str, api: str) -> tuple[list, dict]:
    """The conversation and the extra parameters for each kind of turn."""
    if kind == "skipped":
        return [{"role": "user", "content": "Say hello."}], {}
    if kind == "cascade":
        return [{"role": "user", "content": COMPLEX}], {}
    if kind == "direct":  # a forced tool choice: schema-critical, the router leaves it to the strong model
        choice = {"type": "tool", "name": "get_weather"} if api == "anthropic" else \
            {"type": "function", "function": {"name": "get_weather"}}
        return [{"role": "user", "content": "What is the weather in Paris?"}], {
            "tools": [TOOL if api == "anthropic" else OPENAI_TOOL], "tool_choice": choice}
    # tool-turn: the model called a tool, here is its result: the loop goes on
    if api == "anthropic":
        return [{"role": "user", "content": "What is the weather in Paris?"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_01", "name": "get_weather",
                                                   "input": {"city": "Paris"}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01",
                                              "content": "18 C, light rain"}]}], {"tools": [TOOL]}
    return [{"role": "user", "content": "What is the weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_01", "type": "function",
                 "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "call_01", "content": "18 C, light rain"}], {"tools": [OPENAI_TOOL]}


def _anthropic(stack, kind, stream):
    client = anthropic.Anthropic(base_url=stack.anthropic_url, api_key=CLIENT_KEY, max_retries=0, timeout=600)
    messages, extra = _messages(kind, "anthropic")
    args = dict(model=STRONG_MODEL["anthropic"], max_tokens=MAX_TOKENS, messages=messages, **extra)
    if stream:
        with client.messages.stream(**args) as s:
            path = s.response.headers.get("x-cascade-path")
            msg = s.get_final_message()
    else:
        raw = client.messages.with_raw_response.create(**args)
        path, msg = raw.headers.get("x-cascade-path"), raw.parse()
    assert msg.type == "message" and msg.role == "assistant" and msg.content
    assert msg.stop_reason in ("end_turn", "max_tokens", "tool_use", "stop_sequence")
    for block in msg.content:
        assert block.type in ("text", "tool_use"), block
        if block.type == "tool_use":
            assert block.name == "get_weather" and isinstance(block.input, dict) and block.id
    u = msg.usage
    total_in = u.input_tokens + (u.cache_read_input_tokens or 0) + (u.cache_creation_input_tokens or 0)
    return path, total_in, u.output_tokens


def _openai(stack, kind, stream):
    client = openai.OpenAI(base_url=stack.openai_url, api_key=CLIENT_KEY, max_retries=0, timeout=600)
    messages, extra = _messages(kind, "openai")
    args = dict(model=STRONG_MODEL["openai"], max_tokens=MAX_TOKENS, messages=messages, **extra)
    if stream:
        raw = client.chat.completions.with_raw_response.create(stream=True, stream_options={"include_usage": True},
                                                                **args)
        path = raw.headers.get("x-cascade-path")
        chunks = list(raw.parse())
        assert chunks and all(c.object == "chat.completion.chunk" for c in chunks)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        assert finish and finish[-1] in ("stop", "length", "tool_calls")
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        calls = [t for c in chunks if c.choices for t in (c.choices[0].delta.tool_calls or [])]
        assert text or calls
        usage = chunks[-1].usage
    else:
        raw = client.chat.completions.with_raw_response.create(**args)
        path, resp = raw.headers.get("x-cascade-path"), raw.parse()
        assert resp.object == "chat.completion"
        choice = resp.choices[0]
        assert choice.finish_reason in ("stop", "length", "tool_calls")
        assert choice.message.content or choice.message.tool_calls
        for call in choice.message.tool_calls or []:
            assert call.function.name == "get_weather" and isinstance(json.loads(call.function.arguments), dict)
        usage = resp.usage
    assert usage is not None
    return path, usage.prompt_tokens, usage.completion_tokens


def _tokens(stack, provider):
    return {k: stack.metric_total("cascade_tokens_total", provider=provider, kind=k)
            for k in ("input", "output", "cache_read", "cache_write")}


def _recorded(stack, n, timeout=15.0):
    """Wait until the ledger has recorded n requests (it records once the answer has gone out)."""
    deadline = time.monotonic() + timeout
    while stack.requests_total() < n and time.monotonic() < deadline:
        time.sleep(0.05)
    return stack.requests_total()


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("kind", list(EXPECTED))
@pytest.mark.parametrize("api", ["anthropic", "openai"])
def test_every_path_on_real_models(local, api, kind, stream):
    before = {p: _tokens(local, p) for p in ("draft", "strong")}
    cost_before = local.metric_total("cascade_cost_usd_total")
    path, total_in, out = (_anthropic if api == "anthropic" else _openai)(local, kind, stream)
    SENT.append(path)
    assert path in EXPECTED[kind], (kind, path)
    assert _recorded(local, len(SENT)) == len(SENT)
    delta = {p: {k: v - before[p][k] for k, v in _tokens(local, p).items()} for p in before}
    # metered from the real server's own counts
    if path in ("skipped", "direct", "fallback"):
        served = "draft" if path == "skipped" else "strong"
        other = "strong" if served == "draft" else "draft"
        assert delta[served]["output"] == out
        assert delta[served]["input"] + delta[served]["cache_read"] + delta[served]["cache_write"] == total_in
        if path != "fallback":  # a fallback may follow a draft call that was made and metered
            assert all(v == 0 for v in delta[other].values()), delta
    else:  # accepted / enhanced: the draft answered, the strong model verified
        assert delta["draft"]["output"] > 0 and delta["strong"]["output"] > 0
        assert delta["strong"]["input"] + delta["strong"]["cache_read"] > delta["draft"]["input"]  # + the draft
    assert local.metric_total("cascade_cost_usd_total") > cost_before
    assert local.metric_total("cascade_unpriced_requests_total") == 0


def test_no_request_was_lost(local):
    """Every request answered (the SDKs raise on an error status), each recorded once by its path."""
    assert SENT, "run with the path tests"
    assert _recorded(local, len(SENT)) == len(SENT)
    for path in set(SENT):
        assert local.requests_total(path=path) == SENT.count(path)
    assert local.metric_total("cascade_request_errors_total") == 0


def test_eval_smoke_on_real_models(local, servers, tmp_path, capsys):
    """`eval` on a few paper20 tasks and one agentic task: baseline = the strong llama-server alone,
    candidate = the stack; both arms complete, every task gets a verdict, costs come from the ledger."""
    admin = f"http://127.0.0.1:{local.admin_port}"
    for suite, select in (("paper20", ["--tasks", "code-add,math-add,inst-uppercase-word,inst-lowercase"]),
                          ("agentic", ["--limit", "1"])):
        out = tmp_path / suite
        code = cli.main(["eval", "--suite", suite, *select, "--baseline", servers["strong"].anthropic_url,
                         "--target", local.anthropic_url, "--target-admin", admin, "--max-tokens", "96",
                         "--out", str(out), "--quiet"])
        assert code == 0
        rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
        arms = {r["arm"] for r in rows}
        assert arms == {"baseline", "cascade"} and len(rows) == 2 * len({r["task"] for r in rows})
        for r in rows:
            assert r["steps"] >= 1 and r["errors"] == [], r
            assert r["cost_usd"] is not None and r["cost_usd"] > 0
            if r["arm"] == "cascade":
                assert r["cost_source"] == "ledger" and set(r["paths"]) <= {
                    "skipped", "accepted", "enhanced", "direct", "fallback"}
        assert "## Paired with `baseline`" in capsys.readouterr().out
