"""Anthropic Messages: provider responses → neutral, neutral → client JSON / SSE."""
from __future__ import annotations

import json
from typing import Any

from cascade_extproc.codecs import CodecError, dumps
from cascade_extproc.codecs.sse import frame
from cascade_extproc.types import Block, Response, StopReason, Usage

# Split long text into deltas of this size so streaming clients see a real stream.
_DELTA_CHARS = 64


def with_model(body: dict[str, Any], model: str, *, stream: bool | None = None) -> dict[str, Any]:
    out = dict(body)
    out["model"] = model
    if stream is not None:
        out["stream"] = stream
    return out


def with_user_text(body: dict[str, Any], text: str) -> dict[str, Any]:
    """Append `text` as a final user turn, leaving every earlier byte of the prefix alone."""
    out = dict(body)
    messages = list(body.get("messages") or [])
    last = messages[-1] if messages else None
    if isinstance(last, dict) and last.get("role") == "user":
        content = last.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else list(content or [])
        messages[-1] = {**last, "content": blocks + [{"type": "text", "text": text}]}
    else:
        messages.append({"role": "user", "content": [{"type": "text", "text": text}]})
    out["messages"] = messages
    return out


def parse_response(data: Any) -> Response:
    if not isinstance(data, dict) or data.get("type") != "message":
        raise CodecError("not an Anthropic message")
    blocks = []
    for b in data.get("content") or []:
        kind = b.get("type")
        if kind == "text":
            blocks.append(Block("text", text=b.get("text", "")))
        elif kind == "tool_use":
            blocks.append(Block("tool_use", id=b["id"], name=b["name"], input=b.get("input") or {}))
        elif kind == "thinking":
            blocks.append(Block("thinking", text=b.get("thinking", ""), signature=b.get("signature", "")))
        # Other block types (redacted_thinking, server tools) are dropped in v1.
    u = data.get("usage") or {}
    usage = Usage(
        input_tokens=int(u.get("input_tokens") or 0),
        output_tokens=int(u.get("output_tokens") or 0),
        cache_read_tokens=int(u.get("cache_read_input_tokens") or 0),
        cache_write_tokens=int(u.get("cache_creation_input_tokens") or 0),
    )
    try:
        stop = StopReason(data.get("stop_reason") or "end_turn")
    except ValueError:
        stop = StopReason.END_TURN
    return Response(id=str(data.get("id", "")), model=str(data.get("model", "")), blocks=blocks,
                    stop_reason=stop, usage=usage)


def _block_json(b: Block) -> dict[str, Any]:
    if b.type == "text":
        return {"type": "text", "text": b.text}
    if b.type == "tool_use":
        return {"type": "tool_use", "id": b.id, "name": b.name, "input": b.input}
    return {"type": "thinking", "thinking": b.text, "signature": b.signature}


def _usage_json(u: Usage) -> dict[str, int]:
    return {
        "input_tokens": u.input_tokens,
        "output_tokens": u.output_tokens,
        "cache_creation_input_tokens": u.cache_write_tokens,
        "cache_read_input_tokens": u.cache_read_tokens,
    }


def message_json(r: Response) -> dict[str, Any]:
    return {
        "id": r.id,
        "type": "message",
        "role": "assistant",
        "model": r.model,
        "content": [_block_json(b) for b in r.blocks],
        "stop_reason": str(r.stop_reason),
        "stop_sequence": None,
        "usage": _usage_json(r.usage),
    }


def encode_json(r: Response) -> bytes:
    return dumps(message_json(r))


def encode_sse(r: Response) -> bytes:
    """The complete event stream a streaming client expects, in the API's event order."""
    start = message_json(r)
    start.update(content=[], stop_reason=None)
    start["usage"] = {**_usage_json(r.usage), "output_tokens": 1}
    out = [frame({"type": "message_start", "message": start}, "message_start")]
    for i, b in enumerate(r.blocks):
        empty = {"text": {"type": "text", "text": ""},
                 "tool_use": {"type": "tool_use", "id": b.id, "name": b.name, "input": {}},
                 "thinking": {"type": "thinking", "thinking": "", "signature": ""}}[b.type]
        out.append(frame({"type": "content_block_start", "index": i, "content_block": empty},
                         "content_block_start"))
        for delta in _deltas(b):
            out.append(frame({"type": "content_block_delta", "index": i, "delta": delta},
                             "content_block_delta"))
        out.append(frame({"type": "content_block_stop", "index": i}, "content_block_stop"))
    out.append(frame({"type": "message_delta",
                      "delta": {"stop_reason": str(r.stop_reason), "stop_sequence": None},
                      "usage": {"output_tokens": r.usage.output_tokens}}, "message_delta"))
    out.append(frame({"type": "message_stop"}, "message_stop"))
    return b"".join(out)


def _deltas(b: Block) -> list[dict[str, Any]]:
    if b.type == "tool_use":
        args = json.dumps(b.input, ensure_ascii=False)
        return [{"type": "input_json_delta", "partial_json": c} for c in _chunks(args)]
    if b.type == "thinking":
        out = [{"type": "thinking_delta", "thinking": c} for c in _chunks(b.text)]
        return out + [{"type": "signature_delta", "signature": b.signature}]
    return [{"type": "text_delta", "text": c} for c in _chunks(b.text)]


def _chunks(s: str) -> list[str]:
    return [s[i:i + _DELTA_CHARS] for i in range(0, len(s), _DELTA_CHARS)] or [""]


def error_body(status: int, message: str) -> bytes:
    kind = {400: "invalid_request_error", 401: "authentication_error", 413: "request_too_large",
            429: "rate_limit_error", 529: "overloaded_error"}.get(status, "api_error")
    return dumps({"type": "error", "error": {"type": kind, "message": message}})

