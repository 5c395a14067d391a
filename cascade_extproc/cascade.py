"""Draft → verify → accepted | enhanced. Raises CascadeError for the caller to fall back."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from cascade_extproc import verify
from cascade_extproc.codecs import dumps, for_api, provenance, splice
from cascade_extproc.providers import Provider, ProviderError
from cascade_extproc.types import Api, Path, Request, Response

class CascadeError(Exception):
    def __init__(self, stage: str, cause: Exception | str, draft: Response | None = None):
        super().__init__(f"{stage}: {cause}")
        self.stage = stage  # "draft" or "verify": the metric's fallback reason
        self.draft = draft  # the unverified draft, when verification is what failed


@dataclass
class Outcome:
    path: Path
    response: Response  # what the client gets
    draft: Response
    verdict: Response


@dataclass
class CascadeCall:
    """Everything one cascade needs besides the request."""

    draft: Provider
    draft_model: str
    draft_headers: dict[str, str]
    strong: Provider
    strong_headers: dict[str, str]
    draft_timeout_s: float
    verify_timeout_s: float
    on_call: Any = None  # a Histogram labelled (provider, call) to time the two calls


def draft_body(req: Request, draft_api: Api, model: str, stream: bool = False) -> bytes:
    """The request for the draft: the client's own bytes with the model swapped, or a translation
    (which streams when `stream`; the client's bytes keep the client's choice). The draft is never
    asked to think: its reasoning could not be shown to the client (provenance)."""
    if draft_api is req.api:
        raw = req.raw
        if req.api is Api.ANTHROPIC and provenance.might_need_changes(raw):
            fixed = provenance.for_draft(req.body)
            raw = dumps(fixed) if fixed is not None else raw
        if req.api is Api.ANTHROPIC and provenance.thinking_on(req.body):
            raw = splice.replace_value(raw, "thinking", provenance.THINKING_OFF)
        return splice.replace_value(raw, "model", model)
    neutral = for_api(req.api).decode_request(req.body)
    neutral.model, neutral.stream = model, stream
    return dumps(for_api(draft_api).encode_request(neutral))


def strong_body(req: Request) -> bytes:
    """The client's bytes, unless the strong provider would refuse them: a history with (older
    versions') tagged draft thinking, or a draft's tool call where thinking is on (thinking off for
    this request, spliced so every other byte, and the prompt cache, stays)."""
    if req.api is not Api.ANTHROPIC:
        return req.raw
    if provenance.might_need_changes(req.raw, for_strong_provider=True):
        fixed = provenance.for_strong(req.body)
        if fixed is not None:
            return dumps(fixed)
    if provenance.final_tool_turn_lacks_thinking(req.body):
        return splice.replace_value(req.raw, "thinking", provenance.THINKING_OFF)
    return req.raw


def verify_body(req: Request, draft: Response, nonce: str) -> bytes:
    """The client's request, byte for byte, with one user turn appended: the prompt cache holds."""
    text = verify.instruction(draft, nonce)
    message = {"role": "user", "content": [{"type": "text", "text": text}]} \
        if req.api is Api.ANTHROPIC else {"role": "user", "content": text}
    return splice.append_message(strong_body(req), message)


async def _timed(call: CascadeCall, provider: str, name: str, coro):
    t0 = time.monotonic()
    try:
        return await coro
    finally:
        if call.on_call is not None:
            call.on_call.labels(provider, name).observe(time.monotonic() - t0)


async def run(req: Request, call: CascadeCall) -> Outcome:
    try:
        draft = await _timed(call, "draft", "draft", call.draft.complete(
            draft_body(req, call.draft.api, call.draft_model), call.draft_headers, call.draft_timeout_s))
    except ProviderError as exc:
        raise CascadeError("draft", exc) from exc
    provenance.strip_reasoning(draft)
    nonce = verify.new_nonce()
    try:
        verdict = await _timed(call, "strong", "verify", call.strong.complete(
            verify_body(req, draft, nonce), call.strong_headers, call.verify_timeout_s))
    except ProviderError as exc:
        raise CascadeError("verify", exc, draft) from exc
    judged = verify.judge(verdict, nonce)
    if judged is verify.Verdict.ACCEPT:
        return Outcome(Path.ACCEPTED, draft, draft, verdict)
    if judged is verify.Verdict.ANSWER:
        return Outcome(Path.ENHANCED, verdict, draft, verdict)
    raise CascadeError("verify", "unusable verdict", draft)
