"""cascade.run against in-memory providers: what each call gets, and which answer wins."""
from __future__ import annotations

import asyncio
import copy
import re

import pytest

from cascade_extproc import cascade
from cascade_extproc.providers import ProviderError
from cascade_extproc.types import Api, Block, Path, Request, Response, StopReason

DRAFT_HEADERS = {"x-api-key": "sidecar-draft-key", "anthropic-version": "2023-06-01"}
STRONG_HEADERS = {"x-api-key": "client-key", "anthropic-version": "2023-06-01"}


def answer(text: str, model: str) -> Response:
    return Response(id=f"id-{model}", model=model, blocks=[Block("text", text=text)],
                    stop_reason=StopReason.END_TURN)


class FakeProvider:
    """Records every call; answers with `reply(body)` or raises `error`."""

    def __init__(self, reply=None, error: Exception | None = None):
        self.reply = reply
        self.error = error
        self.calls: list[tuple[dict, dict, float]] = []

    async def complete(self, body, headers, timeout_s):
        self.calls.append((copy.deepcopy(body), dict(headers), timeout_s))
        if self.error:
            raise self.error
        return self.reply(body)


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


def anthropic_req(**extra) -> Request:
    body = {"model": "claude-sonnet-4-5", "max_tokens": 512, "stream": True,
            "messages": [{"role": "user", "content": "Explain closures."}], **extra}
    return Request(Api.ANTHROPIC, body, {"x-api-key": "client-key"})


def openai_req() -> Request:
    body = {"model": "gpt-4.1", "stream": True, "stream_options": {"include_usage": True},
            "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "Explain closures."}]}
    return Request(Api.OPENAI, body, {"authorization": "Bearer client"})


def make_call(draft, strong) -> cascade.CascadeCall:
    return cascade.CascadeCall(draft=draft, draft_model="deepseek-chat", draft_headers=DRAFT_HEADERS,
                               strong=strong, strong_headers=STRONG_HEADERS,
                               draft_timeout_s=7.0, verify_timeout_s=11.0)


def run(req, draft, strong) -> cascade.Outcome:
    return asyncio.run(cascade.run(req, make_call(draft, strong)))


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


def test_verdict_for_another_nonce_is_not_acceptance():
    draft = FakeProvider(lambda b: answer("ACCEPT 0000000000000000", "draft"))
    strong = FakeProvider(lambda b: answer("ACCEPT 0000000000000000", "strong"))
    assert run(anthropic_req(), draft, strong).path is Path.ENHANCED


def test_draft_call_gets_draft_model_no_stream_and_draft_headers():
    req = anthropic_req()
    original = copy.deepcopy(req.body)
    draft, strong = FakeProvider(lambda b: DRAFT), FakeProvider(accepting)
    run(req, draft, strong)
    assert len(draft.calls) == 1
    body, headers, timeout = draft.calls[0]
    assert body == {**original, "model": "deepseek-chat", "stream": False}
    assert headers == DRAFT_HEADERS
    assert timeout == 7.0
    assert req.body == original  # the client's body is never mutated


def test_verify_call_gets_client_model_strong_headers_and_instruction():
    req = anthropic_req()
    draft, strong = FakeProvider(lambda b: DRAFT), FakeProvider(rejecting)
    run(req, draft, strong)
    assert len(strong.calls) == 1
    body, headers, timeout = strong.calls[0]
    assert body["model"] == "claude-sonnet-4-5"
    assert body["stream"] is False
    assert headers == STRONG_HEADERS
    assert "sidecar-draft-key" not in headers.values()
    assert timeout == 11.0
    last = body["messages"][-1]
    assert last["role"] == "user"
    assert last["content"][0] == {"type": "text", "text": "Explain closures."}
    instr = last["content"][-1]["text"]
    nonce = nonce_of(body)
    assert f"ACCEPT {nonce}" in instr and "Draft answer." in instr
    assert len(body["messages"]) == 1


def test_each_cascade_uses_a_fresh_nonce():
    strong = FakeProvider(rejecting)
    for _ in range(2):
        run(anthropic_req(), FakeProvider(lambda b: DRAFT), strong)
    assert nonce_of(strong.calls[0][0]) != nonce_of(strong.calls[1][0])


def test_openai_cascade_bodies():
    req = openai_req()
    draft, strong = FakeProvider(lambda b: DRAFT), FakeProvider(accepting)
    out = run(req, draft, strong)
    assert out.path is Path.ACCEPTED
    draft_body = draft.calls[0][0]
    assert draft_body["model"] == "deepseek-chat" and draft_body["stream"] is False
    assert "stream_options" not in draft_body
    verify_body = strong.calls[0][0]
    assert verify_body["model"] == "gpt-4.1" and verify_body["stream"] is False
    assert "stream_options" not in verify_body
    assert verify_body["messages"][:2] == req.body["messages"]
    assert verify_body["messages"][2]["role"] == "user"
    assert "Draft answer." in verify_body["messages"][2]["content"]


def test_draft_failure_is_stage_draft_and_skips_verify():
    draft, strong = FakeProvider(error=ProviderError("timeout")), FakeProvider(accepting)
    with pytest.raises(cascade.CascadeError) as info:
        run(anthropic_req(), draft, strong)
    assert info.value.stage == "draft"
    assert isinstance(info.value.__cause__, ProviderError)
    assert strong.calls == []


def test_verify_failure_is_stage_verify():
    draft, strong = FakeProvider(lambda b: DRAFT), FakeProvider(error=ProviderError("http error", 529))
    with pytest.raises(cascade.CascadeError) as info:
        run(anthropic_req(), draft, strong)
    assert info.value.stage == "verify"
    assert "529" in str(info.value)
    assert len(draft.calls) == 1
