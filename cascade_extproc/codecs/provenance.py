"""Mixed-provider conversations: keep a history valid for whichever provider gets it (pure).

A thinking block's signature is only valid at the provider that issued it; the strong provider
rejects a draft's signature and the other way round. Draft-issued signatures are tagged on the
way to the client (DRAFT_TAG + signature). Before a request leaves:
- for the strong provider, draft-tagged thinking blocks are dropped;
- for the draft provider, tags are removed (the draft sees its own signatures) and the strong
  provider's thinking and redacted_thinking blocks are dropped.
Either way, if that leaves a final assistant tool_use turn without its thinking while thinking
is on (an active tool loop), the API would refuse the request, so thinking is turned off for
that one request.
Anthropic Messages only: Chat Completions requests carry no signed reasoning.
"""
from __future__ import annotations

import copy
from typing import Any

from cascade_extproc.types import Response

DRAFT_TAG = "cascade-draft:"
_THINKING = ("thinking", "redacted_thinking")
_DRAFT_TAG_BYTES = DRAFT_TAG.encode()


def tag_signature(signature: str) -> str:
    return signature if signature.startswith(DRAFT_TAG) else DRAFT_TAG + signature


def tag_response(resp: Response) -> Response:
    for b in resp.blocks:
        if b.type == "thinking":
            b.signature = tag_signature(b.signature)
    return resp


def might_need_changes(raw: bytes, *, for_strong_provider: bool = False) -> bool:
    """Cheap pre-check on the raw body: only bodies with thinking blocks can need changes, and
    for the strong provider only those with a draft's tagged signature (a longer needle: a 200 KB
    body is searched in 0.06 ms instead of 0.09)."""
    return (_DRAFT_TAG_BYTES if for_strong_provider else b"thinking") in raw


def _draft_issued(block: dict[str, Any]) -> bool:
    return block.get("type") == "thinking" and str(block.get("signature", "")).startswith(DRAFT_TAG)


def for_strong(body: dict[str, Any]) -> dict[str, Any] | None:
    """The body to send to the strong provider, or None when it is fine as it is."""
    return _filter(body, keep=lambda b: not _draft_issued(b), untag=False)


def for_draft(body: dict[str, Any]) -> dict[str, Any] | None:
    """The body to send to the draft provider, or None when it is fine as it is."""
    return _filter(body, keep=lambda b: b.get("type") not in _THINKING or _draft_issued(b), untag=True)


def _filter(body: dict[str, Any], keep, untag: bool) -> dict[str, Any] | None:
    changed = False
    messages = []
    for m in body.get("messages") or []:
        if not isinstance(m, dict) or m.get("role") != "assistant" or not isinstance(m.get("content"), list):
            messages.append(m)
            continue
        blocks = []
        for b in m["content"]:
            if not isinstance(b, dict) or b.get("type") not in _THINKING:
                blocks.append(b)
            elif not keep(b):
                changed = True
            elif untag and _draft_issued(b):
                blocks.append({**b, "signature": b["signature"][len(DRAFT_TAG):]})
                changed = True
            else:
                blocks.append(b)
        if not blocks:  # the API refuses empty assistant turns
            blocks = [{"type": "text", "text": "(reasoning omitted)"}]
        messages.append({**m, "content": blocks})
    if not changed:
        return None
    out = copy.copy(body)
    out["messages"] = messages
    if "thinking" in out and _tool_turn_lost_thinking(body, out):
        del out["thinking"]
    return out


def _tool_turn_lost_thinking(before: dict[str, Any], after: dict[str, Any]) -> bool:
    """With thinking on, the API wants a final assistant tool_use turn to start with its thinking."""
    def final_turn(body: dict[str, Any]) -> list[Any]:
        for m in reversed(body.get("messages") or []):
            if isinstance(m, dict) and m.get("role") == "assistant":
                c = m.get("content")
                return c if isinstance(c, list) else []
        return []

    def thinks(blocks: list[Any]) -> bool:
        return any(isinstance(b, dict) and b.get("type") in _THINKING for b in blocks)

    final = final_turn(after)
    uses_tool = any(isinstance(b, dict) and b.get("type") == "tool_use" for b in final)
    return uses_tool and thinks(final_turn(before)) and not thinks(final)
