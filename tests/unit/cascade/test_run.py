"""cascade.run, the driver, against in-memory providers (providers.mock): what each call gets, and
which answer wins."""
from __future__ import annotations

import asyncio
import json
import re

import pytest

from cascade_extproc import codecs
from cascade_extproc.cascade import bodies, run as cascade_run, verify
from cascade_extproc.cascade.run import CascadeCall, CascadeError, Outcome
from cascade_extproc.codecs import provenance
from cascade_extproc.providers import ProviderError, ProviderStatus, ProviderTimeout
from cascade_extproc.providers.mock import FakeProvider
from cascade_extproc.types import Api, Block, Path, Request, Response, StopReason, Usage

DRAFT_HEADERS = {"x-api-key": "sidecar-draft-key", "anthropic-version": "2023-06-01"}
STRONG_HEADERS = {"x-api-key": "client-key", "anthropic-version": "2023-06-01"}


def answer(text: str, model: str) -> Response:
    return Response(id=f"id-{model}", model=model, blocks=[Block("text", text=text)],
                    stop_reason=StopReason.END_TURN)


def nonce_of(body) -> str:
    last = body["messages"][-1]
    content = last["content"]
    instr = content if isinstance(content, str) else content[-1]["text"]
    return re.search(r"nonce=([0-9a-f]+)", instr).group(1)


def accepting(body):
    return answer(f"ACCEPT {nonce_of(body)}", "strong")


def rejecting(body):
    return answer("My own, better answer.", "strong")


DRAFT = answer("Draft answer.", "draft")

# Deliberately not compact: the cascade must keep the client's bytes, not re-serialize them.
ANTHROPIC_RAW = (b'{ "model" : "claude-sonnet-4-5",\n  "max_tokens": 512, "stream": true,\n'
                 b'  "messages": [ {"role": "user", "content": "Explain closures."} ] }')
OPENAI_RAW = (b'{"model": "gpt-4.1", "stream": true, "stream_options": {"include_usage": true},\n'
              b' "messages": [{"role": "system", "content": "be brief"},'
              b' {"role": "user", "content": "Explain closures."}]}')


def anthropic_req(**extra) -> Request:
    raw = ANTHROPIC_RAW
    if extra:
        raw = json.dumps({**json.loads(raw), **extra}).encode()
    return codecs.parse_request(Api.ANTHROPIC, raw, {"x-api-key": "client-key"})


def openai_req() -> Request:
    return codecs.parse_request(Api.OPENAI, OPENAI_RAW, {"authorization": "Bearer client"})


def make_call(draft, strong) -> CascadeCall:
    return CascadeCall(draft=draft, draft_model="deepseek-chat", draft_headers=DRAFT_HEADERS,
                               strong=strong, strong_headers=STRONG_HEADERS,
                               draft_timeout_s=7.0, verify_timeout_s=11.0)


def run(req, draft, strong) -> Outcome:
    return asyncio.run(cascade_run.run(req, make_call(draft, strong)))


def test_accepted_returns_the_draft():
    draft, strong = FakeProvider(lambda b: DRAFT), FakeProvider(accepting)
    out = run(anthropic_req(), draft, strong)
    assert out.path is Path.ACCEPTED
    assert out.response is out.draft
    assert out.response.text == "Draft answer."
    assert out.verdict.text.startswith("ACCEPT ")


def test_rejected_returns_the_strong_answer():
    draft, strong = FakeProvider(lambda b: DRAFT), FakeProvider(rejecting)
    out = run(anthropic_req(), draft, strong)
    assert out.path is Path.ENHANCED
    assert out.response is out.verdict
    assert out.response.text == "My own, better answer."
    assert out.draft.text == "Draft answer."


def test_verdict_for_another_nonce_is_unusable():
    """`ACCEPT <not our nonce>` neither accepts nor is an answer worth serving: fall back."""
    draft = FakeProvider(lambda b: answer("ACCEPT 0000000000000000", "draft"))
    strong = FakeProvider(lambda b: answer("ACCEPT 0000000000000000", "strong"))
    with pytest.raises(CascadeError) as info:
        run(anthropic_req(), draft, strong)
    assert info.value.stage == "verify"
    assert len(strong.calls) == 1


@pytest.mark.parametrize("verdict", ["", "   ", "[cascade-verify nonce=1] hmm", "<draft-00ff>x</draft-00ff>"])
def test_other_unusable_verdicts_are_stage_verify(verdict):
    draft, strong = FakeProvider(lambda b: DRAFT), FakeProvider(lambda b: answer(verdict, "strong"))
    with pytest.raises(CascadeError) as info:
        run(anthropic_req(), draft, strong)
    assert info.value.stage == "verify"


def test_verdict_echoing_our_nonce_is_unusable():
    draft = FakeProvider(lambda b: DRAFT)
    strong = FakeProvider(lambda b: answer(f"I was asked to say ACCEPT {nonce_of(b)} but no.", "strong"))
    with pytest.raises(CascadeError) as info:
        run(anthropic_req(), draft, strong)
    assert info.value.stage == "verify"


def test_draft_call_gets_draft_model_and_draft_headers():
    req = anthropic_req()
    original = json.loads(ANTHROPIC_RAW)
    draft, strong = FakeProvider(lambda b: DRAFT), FakeProvider(accepting)
    run(req, draft, strong)
    assert len(draft.calls) == 1
    body, headers, timeout = draft.calls[0]
    # Same-format draft: the client's body with only the model swapped (stream as the client
    # asked: the provider client reads SSE as well as JSON).
    assert body == {**original, "model": "deepseek-chat"}
    assert draft.raw[0] == ANTHROPIC_RAW.replace(b'"claude-sonnet-4-5"', b'"deepseek-chat"')
    assert headers == DRAFT_HEADERS
    assert timeout == 7.0
    assert req.body == original  # the client's body is never mutated
    assert req.raw == ANTHROPIC_RAW


def test_verify_call_gets_client_model_strong_headers_and_instruction():
    req = anthropic_req()
    draft, strong = FakeProvider(lambda b: DRAFT), FakeProvider(rejecting)
    run(req, draft, strong)
    assert len(strong.calls) == 1
    body, headers, timeout = strong.calls[0]
    assert body["model"] == "claude-sonnet-4-5"
    assert body["stream"] is True  # the client's bytes, untouched
    assert headers == STRONG_HEADERS
    assert "sidecar-draft-key" not in headers.values()
    assert timeout == 11.0
    assert body["messages"][0] == {"role": "user", "content": "Explain closures."}
    assert len(body["messages"]) == 2
    last = body["messages"][-1]
    assert last["role"] == "user"
    assert len(last["content"]) == 1 and last["content"][0]["type"] == "text"
    instr = last["content"][-1]["text"]
    nonce = nonce_of(body)
    assert instr == verify.instruction(DRAFT, nonce)
    assert f"ACCEPT {nonce}" in instr and "Draft answer." in instr
    # Byte for byte: the client's body up to the closing bracket of messages, then the new turn.
    close = ANTHROPIC_RAW.rindex(b"]")
    raw = strong.raw[0]
    assert raw.startswith(ANTHROPIC_RAW[:close]) and raw.endswith(ANTHROPIC_RAW[close:])
    assert json.loads(raw[close:len(raw) - len(ANTHROPIC_RAW) + close].removeprefix(b",")) == last


def test_each_cascade_uses_a_fresh_nonce():
    strong = FakeProvider(rejecting)
    for _ in range(2):
        run(anthropic_req(), FakeProvider(lambda b: DRAFT), strong)
    assert nonce_of(strong.calls[0][0]) != nonce_of(strong.calls[1][0])


def test_openai_cascade_bodies():
    req = openai_req()
    draft = FakeProvider(lambda b: DRAFT, api=Api.OPENAI)
    strong = FakeProvider(accepting, api=Api.OPENAI)
    out = run(req, draft, strong)
    assert out.path is Path.ACCEPTED
    draft_body = draft.calls[0][0]
    assert draft_body == {**req.body, "model": "deepseek-chat"}
    assert draft.raw[0] == OPENAI_RAW.replace(b'"gpt-4.1"', b'"deepseek-chat"')
    verify_body = strong.calls[0][0]
    assert verify_body["model"] == "gpt-4.1" and verify_body["stream"] is True
    assert verify_body["stream_options"] == {"include_usage": True}
    assert verify_body["messages"][:2] == req.body["messages"]
    assert len(verify_body["messages"]) == 3
    assert verify_body["messages"][2]["role"] == "user"
    assert "Draft answer." in verify_body["messages"][2]["content"]
    assert verify_body["messages"][2]["content"] == verify.instruction(DRAFT, nonce_of(verify_body))
    assert strong.raw[0].startswith(OPENAI_RAW[:OPENAI_RAW.rindex(b"]")])


def test_cross_format_draft_is_translated_without_stream():
    """An Anthropic client with an OpenAI-speaking draft: the draft gets Chat Completions JSON."""
    req = anthropic_req(system="be brief")
    draft = FakeProvider(lambda b: DRAFT, api=Api.OPENAI)
    strong = FakeProvider(accepting)
    out = run(req, draft, strong)
    assert out.path is Path.ACCEPTED
    body = draft.calls[0][0]
    assert body["model"] == "deepseek-chat"
    assert "stream" not in body and "stream_options" not in body
    assert body["max_tokens"] == 512
    assert body["messages"] == [{"role": "system", "content": "be brief"},
                                {"role": "user", "content": "Explain closures."}]
    assert strong.calls[0][0]["model"] == "claude-sonnet-4-5"


def test_draft_body_cross_format_streams_when_asked():
    req = openai_req()
    body = json.loads(bodies.draft_body(req, Api.ANTHROPIC, "claude-haiku", stream=True))
    assert body["model"] == "claude-haiku" and body["stream"] is True
    assert body["system"] == "be brief"
    assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Explain closures."}]}]
    assert "stream" not in json.loads(bodies.draft_body(req, Api.ANTHROPIC, "claude-haiku"))


def test_the_drafts_reasoning_is_never_served():
    """A signature only the draft could check would break the client's next turn at the strong
    provider: an accepted draft is served without its thinking blocks."""
    reply = Response(id="d", model="draft", stop_reason=StopReason.END_TURN,
                     blocks=[Block("thinking", text="hmm", signature="sig"),
                             Block("redacted_thinking", text="xx"), Block("text", text="Draft answer.")])
    out = run(anthropic_req(), FakeProvider(lambda b: reply), FakeProvider(accepting))
    assert out.path is Path.ACCEPTED
    assert [b.type for b in out.response.blocks] == ["text"]


def test_the_draft_is_asked_without_thinking():
    draft = FakeProvider(lambda b: DRAFT)
    run(anthropic_req(thinking={"type": "enabled", "budget_tokens": 1024}), draft, FakeProvider(accepting))
    assert draft.calls[0][0]["thinking"] == {"type": "disabled"}


def thinking_history_req() -> Request:
    body = {"model": "claude-sonnet-4-5", "max_tokens": 2048, "thinking": {"type": "enabled", "budget_tokens": 1024},
            "messages": [
                {"role": "user", "content": "q1"},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "draft thoughts", "signature": provenance.DRAFT_TAG + "dsig"},
                    {"type": "text", "text": "a1"}]},
                {"role": "user", "content": "q2"},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "strong thoughts", "signature": "ssig"},
                    {"type": "redacted_thinking", "data": "REDACTED"},
                    {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "ok"}]}]}
    return codecs.parse_request(Api.ANTHROPIC, json.dumps(body, indent=1).encode(), {})


def test_mixed_history_is_fixed_for_each_provider():
    req = thinking_history_req()
    draft, strong = FakeProvider(lambda b: DRAFT), FakeProvider(rejecting)
    run(req, draft, strong)
    d = draft.calls[0][0]
    assert d["model"] == "deepseek-chat"
    # The draft sees its own signature untagged, and none of the strong provider's thinking.
    assert d["messages"][1]["content"][0] == {"type": "thinking", "thinking": "draft thoughts", "signature": "dsig"}
    assert [b["type"] for b in d["messages"][3]["content"]] == ["tool_use"]
    assert d["thinking"] == {"type": "disabled"}  # the draft is never asked to think
    s = strong.calls[0][0]
    assert s["model"] == "claude-sonnet-4-5"
    # The strong provider sees none of the draft's thinking, and keeps its own.
    assert s["messages"][1]["content"] == [{"type": "text", "text": "a1"}]
    assert [b["type"] for b in s["messages"][3]["content"]] == ["thinking", "redacted_thinking", "tool_use"]
    assert s["thinking"] == req.body["thinking"]  # the final assistant turn kept its thinking
    assert len(s["messages"]) == 6 and s["messages"][-1]["content"][0]["text"].startswith("[cascade-verify")
    assert s["messages"][:5] == json.loads(bodies.strong_body(req))["messages"]


def test_strong_body_is_the_clients_bytes_when_nothing_needs_fixing():
    req = anthropic_req(thinking={"type": "enabled", "budget_tokens": 1024})
    assert bodies.strong_body(req) is req.raw
    req = openai_req()
    assert bodies.strong_body(req) is req.raw


def test_draft_failure_is_stage_draft_and_skips_verify():
    draft, strong = FakeProvider(error=ProviderTimeout()), FakeProvider(accepting)
    with pytest.raises(CascadeError) as info:
        run(anthropic_req(), draft, strong)
    assert info.value.stage == "draft"
    assert isinstance(info.value.__cause__, ProviderError)
    assert strong.calls == []


def test_verify_failure_is_stage_verify():
    draft, strong = FakeProvider(lambda b: DRAFT), FakeProvider(error=ProviderStatus(529))
    with pytest.raises(CascadeError) as info:
        run(anthropic_req(), draft, strong)
    assert info.value.stage == "verify"
    assert "529" in str(info.value)
    assert len(draft.calls) == 1


# ---- the draft's output budget, and a draft that fails it ---------------------------------------

def openai_raw_req(raw: bytes) -> Request:
    return codecs.parse_request(Api.OPENAI, raw, {"authorization": "Bearer client"})


def test_the_draft_is_asked_for_the_budget_when_the_client_set_none_or_more():
    """Spliced: every other byte of the client's body is kept (the prompt cache holds)."""
    big = ANTHROPIC_RAW.replace(b'"max_tokens": 512', b'"max_tokens": 64000')
    body = bodies.draft_body(codecs.parse_request(Api.ANTHROPIC, big, {}), Api.ANTHROPIC, "d", budget=8192)
    assert body == big.replace(b"64000", b"8192").replace(b'"claude-sonnet-4-5"', b'"d"')
    # OpenAI: no limit at all (it is optional): max_tokens added, the rest as sent
    body = bodies.draft_body(openai_req(), Api.OPENAI, "d", budget=8192)
    assert body == OPENAI_RAW.replace(b'"gpt-4.1"', b'"d"')[:-1] + b',"max_tokens":8192}'
    # OpenAI's newer key, or both: each one above the budget lowered
    for raw in (b'{"model": "m", "max_completion_tokens": 100000, "messages": [{"role": "user", "content": "x"}]}',
                b'{"model": "m", "max_completion_tokens": 100000, "max_tokens": 90000, "messages": [{"role": "user", '
                b'"content": "x"}]}',
                b'{"model": "m", "max_tokens": null, "messages": [{"role": "user", "content": "x"}]}'):
        got = json.loads(bodies.draft_body(openai_raw_req(raw), Api.OPENAI, "d", budget=8192))
        assert [v for k, v in got.items() if k in ("max_tokens", "max_completion_tokens") and v] in ([8192], [8192] * 2)
    # Translated for a draft in the other API: the budget there too
    assert json.loads(bodies.draft_body(openai_req(), Api.ANTHROPIC, "d", budget=8192))["max_tokens"] == 8192


def test_a_client_limit_within_the_budget_is_the_clients_own():
    req = anthropic_req()  # max_tokens 512
    assert bodies.draft_limit(req, 8192) is None and bodies.draft_limit(req, 100) == 100
    assert bodies.draft_body(req, Api.ANTHROPIC, "d", budget=8192) == bodies.draft_body(req, Api.ANTHROPIC, "d")
    assert bodies.draft_limit(req, None) is None  # no budget configured
    assert bodies.client_limit(openai_req()) is None


def budgeted(draft, strong, req=None, **kw) -> Outcome:
    call = make_call(draft, strong)
    call.draft_max_tokens, call.detect_repetition = kw.get("budget", 8192), kw.get("detect", True)
    return asyncio.run(cascade_run.run(req or anthropic_req(max_tokens=64000), call))


def stopped(text: str, reason=StopReason.MAX_TOKENS, output_tokens: int = 8192) -> Response:
    return Response("id", "draft", [Block("text", text=text)], reason, Usage(10, output_tokens))


def test_a_draft_stopped_by_the_budget_is_failed_not_verified():
    draft, strong = FakeProvider(lambda b: stopped("A long answer that went on")), FakeProvider(accepting)
    with pytest.raises(CascadeError) as info:
        budgeted(draft, strong)
    assert (info.value.stage, info.value.reason, info.value.draft) == ("draft", "draft-budget", None)
    assert info.value.spent.usage.output_tokens == 8192  # paid for: metered, never served
    assert draft.calls[0][0]["max_tokens"] == 8192 and strong.calls == []


def test_a_draft_stopped_by_the_clients_own_limit_is_verified():
    """The client asked for at most 512 tokens: the strong model would stop there too."""
    out = budgeted(FakeProvider(lambda b: stopped("Part of an answer", output_tokens=512)), FakeProvider(accepting),
                   req=anthropic_req())
    assert out.path is Path.ACCEPTED


@pytest.mark.parametrize("blocks", [
    [Block("text", text="I can help with that. " * 200)],
    [Block("text", text="Writing it."), Block("tool_use", id="t", name="Write",
                                               input={"path": "a", "content": "All work and no play.\n" * 200})],
], ids=["text", "tool-arguments"])
def test_a_looping_draft_is_failed_even_when_it_stopped_on_its_own(blocks):
    looped = Response("id", "draft", blocks, StopReason.END_TURN, Usage(10, 1200))
    strong = FakeProvider(accepting)
    with pytest.raises(CascadeError) as info:
        budgeted(FakeProvider(lambda b: looped), strong)
    assert (info.value.reason, info.value.spent) == ("draft-degenerate", looped)
    assert strong.calls == []
    assert budgeted(FakeProvider(lambda b: looped), strong, detect=False).path is Path.ACCEPTED  # the knob


def test_other_draft_failures_keep_their_reason():
    with pytest.raises(CascadeError) as info:
        budgeted(FakeProvider(error=ProviderTimeout()), FakeProvider(accepting))
    assert (info.value.reason, info.value.spent) == ("draft-failed", None)
