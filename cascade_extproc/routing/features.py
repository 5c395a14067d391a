"""Cheap, pure features of a request that the rules can test.

Token counts are estimates: about 4 characters per token for English and code, which is
what provider tokenizers average on agentic traffic. Good enough to compare with thresholds.
"""
from __future__ import annotations

import math
import re
from typing import Any

from cascade_extproc.types import Api, Request

CHARS_PER_TOKEN = 4
_CODE = re.compile(r"```|^\s*(def|class|function|import|#include|SELECT)\b", re.MULTILINE)

# Names and types of every feature, so rule conditions can be validated at config load.
FEATURES: dict[str, type] = {
    "api": str,
    "model": str,
    "stream": bool,
    "tools": int,
    "tool_choice": str,
    "messages": int,
    "last_turn": str,
    "last_turn_tokens": int,
    "context_tokens": int,
    "thinking": bool,
    "has_code": bool,
    "max_tokens": int,
}


def estimate_tokens(chars: int) -> int:
    return math.ceil(chars / CHARS_PER_TOKEN)


def extract(req: Request, body_bytes: int) -> dict[str, Any]:
    """All features of `req`; `body_bytes` is the size of the raw body."""
    body = req.body
    messages = body.get("messages") or []
    last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
    if req.api is Api.ANTHROPIC:
        last_turn, text = _anthropic_last_turn(last)
        thinking = isinstance(body.get("thinking"), dict) and body["thinking"].get("type") == "enabled"
        max_tokens = body.get("max_tokens")
    else:
        last_turn, text = _openai_last_turn(last)
        thinking = "reasoning_effort" in body
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    return {
        "api": str(req.api),
        "model": req.model,
        "stream": req.stream,
        "tools": len(body.get("tools") or []),
        "tool_choice": _tool_choice(body.get("tool_choice")),
        "messages": len(messages),
        "last_turn": last_turn,
        "last_turn_tokens": estimate_tokens(len(text)),
        "context_tokens": estimate_tokens(body_bytes),
        "thinking": thinking,
        "has_code": bool(_CODE.search(text)),
        "max_tokens": max_tokens if isinstance(max_tokens, int) else 0,
    }


def _tool_choice(choice: Any) -> str:
    """Anthropic {type: auto|any|tool|none}; OpenAI "auto"|"none"|"required"|{type: function}."""
    if choice is None:
        return "auto"
    if isinstance(choice, str):
        return choice
    if isinstance(choice, dict):
        return str(choice.get("type", "unknown"))
    return "unknown"


def _anthropic_last_turn(msg: dict[str, Any]) -> tuple[str, str]:
    role, content = msg.get("role"), msg.get("content")
    if role == "assistant":
        return "assistant", _text_of(content)
    if role != "user":
        return "other", ""
    if isinstance(content, str):
        return "user_text", content
    if not isinstance(content, list):
        return "other", ""
    results = [b for b in content if isinstance(b, dict) and b.get("type") == "tool_result"]
    if results:
        kind = "tool_error" if any(b.get("is_error") for b in results) else "tool_result"
        return kind, "".join(_text_of(b.get("content")) for b in results)
    text = _text_of(content)
    return ("user_text", text) if text else ("other", "")


def _openai_last_turn(msg: dict[str, Any]) -> tuple[str, str]:
    role, text = msg.get("role"), _text_of(msg.get("content"))
    if role == "tool":
        return "tool_result", text
    if role == "user":
        return "user_text", text
    if role == "assistant":
        return "assistant", text
    return "other", text


def _text_of(content: Any) -> str:
    """The text in a string or a list of content blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            b.get("text", "") for b in content if isinstance(b, dict) and isinstance(b.get("text"), str)
        )
    return ""
