"""Mixed-provider conversations: keep a history valid for whichever provider gets it (pure).

A thinking block's signature is only valid at the provider that issued it. So the draft is asked
without thinking and its reasoning is never shown to the client: a history holds no signature
the strong provider would refuse, whether or not the sidecar is there to clean it. What such a
history can still lack is the strong model's own thinking before a tool call the draft made: with
thinking on, the API refuses a final assistant tool_use turn that does not start with a thinking
block, so thinking is turned off for that one request (here while the sidecar is up; by Envoy's
fail-open Lua filter when it is not).
Histories from earlier versions carry draft signatures tagged DRAFT_TAG: dropped for the strong
provider, untagged for the draft. The strong provider's thinking never goes to the draft.
Anthropic Messages only: Chat Completions requests carry no signed reasoning.
"""
from __future__ import annotations

import copy
from typing import Any

from cascade_extproc.types import Response

DRAFT_TAG = "cascade-draft:"
_THINKING = ("thinking", "redacted_thinking")
_DRAFT_TAG_BYTES = DRAFT_TAG.encode()


def strip_reasoning(resp: Response) -> Response:
    """The draft's answer as the client may see it: without its thinking blocks."""
    resp.blocks = [b for b in resp.blocks if b.type not in _THINKING]
    return resp


def thinking_on(body: dict[str, Any]) -> bool:
    t = body.get("thinking")
    return isinstance(t, dict) and t.get("type") in ("enabled", "adaptive")


def final_tool_turn_lacks_thinking(body: dict[str, Any]) -> bool:
    """With thinking on, the API wants a final assistant tool_use turn to start with thinking."""
    if not thinking_on(body):
        return False
    final = _final_turn(body)
    first = final[0] if final else None
    starts_thinking = isinstance(first, dict) and first.get("type") in _THINKING
    return not starts_thinking and any(isinstance(b, dict) and b.get("type") == "tool_use" for b in final)


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
    if final_tool_turn_lacks_thinking(out):
        out["thinking"] = THINKING_OFF
    return out


THINKING_OFF = {"type": "disabled"}


def _final_turn(body: dict[str, Any]) -> list[Any]:
    for m in reversed(body.get("messages") or []):
        if isinstance(m, dict) and m.get("role") == "assistant":
            c = m.get("content")
            return c if isinstance(c, list) else []
    return []
