"""The request bodies the sidecar sends each provider (pure): the draft's, the strong model's,
and the verify call's. Each keeps the client's bytes wherever it can, so the prompt cache holds."""
from __future__ import annotations

from cascade_extproc.cascade import verify
from cascade_extproc.codecs import dumps, for_api, provenance, splice
from cascade_extproc.types import Api, Request, Response


# The client's output limit, by API: Anthropic's is required, OpenAI's optional (either key).
_LIMIT_KEYS = {Api.ANTHROPIC: ("max_tokens",), Api.OPENAI: ("max_completion_tokens", "max_tokens")}


def client_limit(req: Request) -> int | None:
    """The output limit the client set (the tighter one, if it set both OpenAI keys), or None."""
    limits = [v for k in _LIMIT_KEYS[req.api] if type(v := req.body.get(k)) is int]
    return min(limits) if limits else None


def draft_limit(req: Request, budget: int | None) -> int | None:
    """The limit the sidecar sets on the draft: `budget`, when the client set none or a higher one;
    None when the client's own limit is already within it (or there is no budget). A draft that
    stops for length under a limit of ours was stopped by us, not by what the client asked."""
    if budget is None:
        return None
    own = client_limit(req)
    return budget if own is None or own > budget else None


def draft_body(req: Request, draft_api: Api, model: str, stream: bool = False, budget: int | None = None) -> bytes:
    """The request for the draft: the client's own bytes with the model swapped, or a translation
    (which streams when `stream`; the client's bytes keep the client's choice). The draft is never
    asked to think: its reasoning could not be shown to the client (provenance). With a `budget`
    (cascade.draft_max_tokens), it is asked for at most that many tokens (draft_limit)."""
    limit = draft_limit(req, budget)
    if draft_api is req.api:
        raw = req.raw
        if req.api is Api.ANTHROPIC and provenance.might_need_changes(raw):
            fixed = provenance.for_draft(req.body)
            raw = dumps(fixed) if fixed is not None else raw
        if req.api is Api.ANTHROPIC and provenance.thinking_on(req.body):
            raw = splice.replace_value(raw, "thinking", provenance.THINKING_OFF)
        if limit is not None:
            raw = _limited(raw, req, limit)
        return splice.replace_value(raw, "model", model)
    neutral = for_api(req.api).decode_request(req.body)
    neutral.model, neutral.stream = model, stream
    if limit is not None:
        neutral.max_tokens = limit
    return dumps(for_api(draft_api).encode_request(neutral))


def _limited(raw: bytes, req: Request, limit: int) -> bytes:
    """`raw` with every limit the client set above `limit` lowered to it, spliced; none set:
    `max_tokens` added (the key every OpenAI-compatible server reads; `max_completion_tokens` is
    OpenAI's newer name)."""
    keys = [k for k in _LIMIT_KEYS[req.api] if type(req.body.get(k)) is int]
    for key in keys:
        if req.body[key] > limit:
            raw = splice.replace_value(raw, key, limit)
    return raw if keys else splice.replace_value(raw, "max_tokens", limit)


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
