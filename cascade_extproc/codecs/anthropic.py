"""Anthropic Messages ⇄ neutral types: requests, responses, SSE streams, errors (pure)."""
from __future__ import annotations

import json
import re
import secrets
from typing import Any

from cascade_extproc.codecs.base import CodecError, dumps, positive_int, require
from cascade_extproc.codecs.sse import SseEvent, frame
from cascade_extproc.codecs.stream import events_of
from cascade_extproc.types import (Block, BlockDelta, BlockStart, BlockStop, ChatRequest, Message,
                                   Response, StopReason, StreamEnd, StreamError, StreamEvent,
                                   StreamStart, Tool, Usage)

_ID_CHARS = re.compile(r"[^a-zA-Z0-9_-]")
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
                529: "overloaded_error"}
DEFAULT_MAX_TOKENS = 4096  # Anthropic requires max_tokens; OpenAI clients may omit it


def tool_id(raw: str) -> str:
    """A tool_use id the Messages API accepts (^[a-zA-Z0-9_-]+$), stable for the same input."""
    return _ID_CHARS.sub("_", raw) if raw else "toolu_" + secrets.token_hex(12)


# ---- same-format helpers -------------------------------------------------------------------

def with_model(body: dict[str, Any], model: str, *, stream: bool | None = None) -> dict[str, Any]:
    out = dict(body)
    out["model"] = model
    if stream is not None:
        out["stream"] = stream
    return out


# ---- requests --------------------------------------------------------------------------------

_ROLES = ("user", "assistant")
_TOOL_CHOICES = ("auto", "any", "tool", "none")
_THINKING = ("enabled", "disabled", "adaptive")


def _blocks(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(b, dict) for b in value)


def _number(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def check_request(body: dict[str, Any]) -> None:
    """What the Messages API refuses with a 400, in the fields the router and the paths read:
    CodecError. Absent (or null) optional fields are fine. Of the messages, only the last is
    checked, as the router reads it: the cost must not grow with the conversation (an earlier
    malformed message is refused by the draft provider too, and the strong one answers)."""
    model = body.get("model")
    require(isinstance(model, str) and model, "model: a non-empty string is required")
    require(positive_int(body.get("max_tokens")), "max_tokens: a positive integer is required")
    messages = body.get("messages")
    require(isinstance(messages, list) and messages, "messages: a non-empty list is required")
    last = messages[-1]
    require(isinstance(last, dict) and last.get("role") in _ROLES
            and (isinstance(last.get("content"), str) or _blocks(last.get("content"))),
            "messages: each needs a role (user or assistant) and a content (a string or a list of blocks)")
    require(body.get("stream") is None or isinstance(body["stream"], bool), "stream: a boolean is required")
    system = body.get("system")
    require(system is None or isinstance(system, str) or _blocks(system), "system: a string or a list of blocks")
    require(body.get("tools") is None or _blocks(body["tools"]), "tools: a list of tools is required")
    choice = body.get("tool_choice")
    require(choice is None or (isinstance(choice, dict) and choice.get("type") in _TOOL_CHOICES
                               and (choice["type"] != "tool" or isinstance(choice.get("name"), str))),
            "tool_choice: {type: auto | any | none} or {type: tool, name}")
    thinking = body.get("thinking")
    require(thinking is None or (isinstance(thinking, dict) and thinking.get("type") in _THINKING),
            "thinking: {type: enabled | disabled | adaptive}")
    stop = body.get("stop_sequences")
    require(stop is None or (isinstance(stop, list) and all(isinstance(x, str) for x in stop)),
            "stop_sequences: a list of strings")
    require(body.get("metadata") is None or isinstance(body["metadata"], dict), "metadata: an object")
    require(all(_number(body.get(k)) for k in ("temperature", "top_p")), "temperature, top_p: numbers")
    require(body.get("top_k") is None or (type(body["top_k"]) is int), "top_k: an integer")

def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(b.get("text", "") for b in content or [] if isinstance(b, dict) and b.get("type") == "text")


def _system_text(system: Any) -> str:
    """System blocks are separate paragraphs (Claude Code sends two)."""
    if isinstance(system, str):
        return system
    return "\n\n".join(b.get("text", "") for b in system or [] if isinstance(b, dict) and b.get("type") == "text")


def _decode_block(b: dict[str, Any]) -> Block | None:
    kind = b.get("type")
    if kind == "text":
        return Block("text", text=b.get("text", ""))
    if kind == "image":
        return Block("image", source=b.get("source") or {})
    if kind == "tool_use":
        return Block("tool_use", id=b.get("id", ""), name=b.get("name", ""), input=b.get("input") or {})
    if kind == "tool_result":
        content = b.get("content")
        inner = [Block("text", text=content)] if isinstance(content, str) else \
            [x for x in (_decode_block(c) for c in content or [] if isinstance(c, dict)) if x]
        return Block("tool_result", tool_use_id=b.get("tool_use_id", ""), content=inner,
                     is_error=bool(b.get("is_error")))
    if kind == "thinking":
        return Block("thinking", text=b.get("thinking", ""), signature=b.get("signature", ""))
    if kind == "redacted_thinking":
        return Block("redacted_thinking", text=b.get("data", ""))
    return None  # server tools, documents etc.: not translatable in v1


def decode_request(body: dict[str, Any]) -> ChatRequest:
    messages = []
    for m in body.get("messages") or []:
        content = m.get("content")
        raw = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
        blocks = [x for x in (_decode_block(b) for b in raw if isinstance(b, dict)) if x]
        messages.append(Message(m.get("role", "user"), blocks))
    choice = body.get("tool_choice") or {}
    stop = body.get("stop_sequences") or []
    return ChatRequest(
        model=str(body.get("model", "")), messages=messages, system=_system_text(body.get("system")),
        tools=[Tool(t.get("name", ""), t.get("description", ""), t.get("input_schema") or {})
               for t in body.get("tools") or [] if isinstance(t, dict) and "name" in t],
        tool_choice=choice.get("type", "auto"), tool_name=choice.get("name", ""),
        max_tokens=body.get("max_tokens"), temperature=body.get("temperature"),
        top_p=body.get("top_p"), stop=list(stop), stream=body.get("stream") is True)


def _encode_block(b: Block) -> dict[str, Any]:
    if b.type == "text":
        return {"type": "text", "text": b.text}
    if b.type == "image":
        return {"type": "image", "source": b.source}
    if b.type == "tool_use":
        return {"type": "tool_use", "id": tool_id(b.id), "name": b.name, "input": b.input}
    if b.type == "tool_result":
        out: dict[str, Any] = {"type": "tool_result", "tool_use_id": tool_id(b.tool_use_id),
                               "content": [_encode_block(c) for c in b.content]}
        if b.is_error:
            out["is_error"] = True
        return out
    if b.type == "redacted_thinking":
        return {"type": "redacted_thinking", "data": b.text}
    return {"type": "thinking", "thinking": b.text, "signature": b.signature}


def encode_request(req: ChatRequest) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": req.model,
        "max_tokens": req.max_tokens or DEFAULT_MAX_TOKENS,
        "messages": [{"role": m.role, "content": [_encode_block(b) for b in m.blocks]}
                     for m in req.messages],
    }
    if req.system:
        body["system"] = req.system
    if req.tools:
        body["tools"] = [{"name": t.name, "description": t.description, "input_schema": t.schema}
                         for t in req.tools]
    if req.tool_choice != "auto" and (req.tools or req.tool_choice == "none"):
        body["tool_choice"] = {"type": req.tool_choice, **({"name": req.tool_name} if req.tool_name else {})}
    for key, value in (("temperature", req.temperature), ("top_p", req.top_p)):
        if value is not None:
            body[key] = value
    if req.stop:
        body["stop_sequences"] = req.stop
    if req.stream:
        body["stream"] = True
    return body


# ---- responses -------------------------------------------------------------------------------

def _usage(u: dict[str, Any]) -> Usage:
    split = u.get("cache_creation") if isinstance(u.get("cache_creation"), dict) else {}
    return Usage(input_tokens=int(u.get("input_tokens") or 0),
                 output_tokens=int(u.get("output_tokens") or 0),
                 cache_read_tokens=int(u.get("cache_read_input_tokens") or 0),
                 cache_write_tokens=int(u.get("cache_creation_input_tokens") or 0),
                 cache_write_1h_tokens=int(split.get("ephemeral_1h_input_tokens") or 0))


def _stop(value: Any) -> StopReason:
    try:
        return StopReason(value or "end_turn")
    except ValueError:  # refusal, pause_turn...: the turn is over either way
        return StopReason.END_TURN


def parse_response(data: Any) -> Response:
    if not isinstance(data, dict) or data.get("type") != "message":
        raise CodecError("not an Anthropic message")
    blocks = [b for b in (_decode_block(x) for x in data.get("content") or [] if isinstance(x, dict))
              if b and b.type in ("text", "tool_use", "thinking", "redacted_thinking")]
    return Response(id=str(data.get("id", "")), model=str(data.get("model", "")), blocks=blocks,
                    stop_reason=_stop(data.get("stop_reason")), usage=_usage(data.get("usage") or {}))


def _usage_json(u: Usage) -> dict[str, int]:
    return {"input_tokens": u.input_tokens, "output_tokens": u.output_tokens,
            "cache_creation_input_tokens": u.cache_write_tokens,
            "cache_read_input_tokens": u.cache_read_tokens}


def message_json(r: Response) -> dict[str, Any]:
    return {"id": r.id or "msg_" + secrets.token_hex(12), "type": "message", "role": "assistant",
            "model": r.model, "content": [_encode_block(b) for b in r.blocks],
            "stop_reason": str(r.stop_reason), "stop_sequence": None, "usage": _usage_json(r.usage)}


def encode_json(r: Response, created: int = 0) -> bytes:
    """`created`: OpenAI's; an Anthropic message has no timestamp (codecs.Codec)."""
    return dumps(message_json(r))


# ---- streams ---------------------------------------------------------------------------------

class StreamDecoder:
    """Anthropic SSE events → neutral events."""

    def __init__(self) -> None:
        self._usage = Usage()
        self._end: StreamEnd | None = None

    def feed(self, ev: SseEvent) -> list[StreamEvent]:
        try:
            data = json.loads(ev.data)
        except ValueError:
            raise CodecError("SSE data is not JSON") from None
        kind = data.get("type")
        if kind == "message_start":
            m = data.get("message") or {}
            self._usage = _usage(m.get("usage") or {})
            return [StreamStart(str(m.get("id", "")), str(m.get("model", "")), self._usage)]
        if kind == "content_block_start":
            b = _decode_block(data.get("content_block") or {}) or Block("text")
            return [BlockStart(int(data.get("index", 0)), b)]
        if kind == "content_block_delta":
            d, i = data.get("delta") or {}, int(data.get("index", 0))
            dk = d.get("type")
            if dk == "text_delta":
                return [BlockDelta(i, "text", d.get("text", ""))]
            if dk == "input_json_delta":
                return [BlockDelta(i, "json", d.get("partial_json", ""))]
            if dk == "thinking_delta":
                return [BlockDelta(i, "thinking", d.get("thinking", ""))]
            if dk == "signature_delta":
                return [BlockDelta(i, "signature", d.get("signature", ""))]
            return []
        if kind == "content_block_stop":
            return [BlockStop(int(data.get("index", 0)))]
        if kind == "message_delta":
            u = data.get("usage") or {}
            merged = _usage({**_usage_json(self._usage), **{k: v for k, v in u.items() if v is not None}})
            self._end = StreamEnd(_stop((data.get("delta") or {}).get("stop_reason")), merged)
            return []
        if kind == "message_stop":
            return [self._end or StreamEnd(StopReason.END_TURN, self._usage)]
        if kind == "error":
            err = data.get("error") or {}
            return [StreamError(529 if err.get("type") == "overloaded_error" else 500,
                                str(err.get("message", "stream error")))]
        return []  # ping and future event types


class StreamEncoder:
    """Neutral events → Anthropic SSE bytes."""

    def __init__(self, created: int = 0, include_usage: bool = False):
        pass  # OpenAI's (codecs.Codec): an Anthropic stream has no timestamp and always reports usage

    def encode(self, ev: StreamEvent) -> bytes:
        if isinstance(ev, StreamStart):
            msg = {"id": ev.id or "msg_" + secrets.token_hex(12), "type": "message", "role": "assistant",
                   "model": ev.model, "content": [], "stop_reason": None, "stop_sequence": None,
                   "usage": _usage_json(ev.usage)}
            return frame({"type": "message_start", "message": msg}, "message_start")
        if isinstance(ev, BlockStart):
            b = ev.block
            empty = {"text": {"type": "text", "text": ""},
                     "tool_use": {"type": "tool_use", "id": tool_id(b.id), "name": b.name, "input": {}},
                     "thinking": {"type": "thinking", "thinking": "", "signature": ""},
                     "redacted_thinking": {"type": "redacted_thinking", "data": b.text}}.get(b.type)
            return frame({"type": "content_block_start", "index": ev.index,
                          "content_block": empty or {"type": "text", "text": ""}}, "content_block_start")
        if isinstance(ev, BlockDelta):
            delta = {"text": {"type": "text_delta", "text": ev.value},
                     "json": {"type": "input_json_delta", "partial_json": ev.value},
                     "thinking": {"type": "thinking_delta", "thinking": ev.value},
                     "signature": {"type": "signature_delta", "signature": ev.value}}[ev.kind]
            return frame({"type": "content_block_delta", "index": ev.index, "delta": delta},
                         "content_block_delta")
        if isinstance(ev, BlockStop):
            return frame({"type": "content_block_stop", "index": ev.index}, "content_block_stop")
        if isinstance(ev, StreamEnd):
            return frame({"type": "message_delta",
                          "delta": {"stop_reason": str(ev.stop_reason), "stop_sequence": None},
                          "usage": _usage_json(ev.usage)}, "message_delta") + \
                frame({"type": "message_stop"}, "message_stop")
        return frame({"type": "error", "error": {"type": _error_type(ev.status), "message": ev.message}},
                     "error")


def encode_sse(r: Response, created: int = 0, include_usage: bool = False) -> bytes:
    enc = StreamEncoder()
    return b"".join(enc.encode(e) for e in events_of(r))


# ---- errors ----------------------------------------------------------------------------------

def _error_type(status: int) -> str:
    return _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


def error_body(status: int, message: str) -> bytes:
    return dumps({"type": "error", "error": {"type": _error_type(status), "message": message}})


def error_message(data: Any) -> str:
    """The human message in an Anthropic error body, or ''."""
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        return str(data["error"].get("message", ""))
    return ""
