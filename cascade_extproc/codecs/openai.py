"""OpenAI Chat Completions: provider responses → neutral, neutral → client JSON / SSE."""
from __future__ import annotations

import json
from typing import Any

from cascade_extproc.codecs import CodecError, dumps
from cascade_extproc.codecs.sse import frame
from cascade_extproc.types import Block, Response, StopReason, Usage

_FINISH = {StopReason.END_TURN: "stop", StopReason.STOP_SEQUENCE: "stop",
           StopReason.TOOL_USE: "tool_calls", StopReason.MAX_TOKENS: "length"}
_STOP = {"stop": StopReason.END_TURN, "tool_calls": StopReason.TOOL_USE,
         "function_call": StopReason.TOOL_USE, "length": StopReason.MAX_TOKENS}


def with_model(body: dict[str, Any], model: str, *, stream: bool | None = None) -> dict[str, Any]:
    out = dict(body)
    out["model"] = model
    if stream is not None:
        out["stream"] = stream
        if not stream:
            out.pop("stream_options", None)  # only valid with stream: true
    return out


def with_user_text(body: dict[str, Any], text: str) -> dict[str, Any]:
    """Append `text` as a final user message; earlier messages keep their bytes."""
    out = dict(body)
    out["messages"] = list(body.get("messages") or []) + [{"role": "user", "content": text}]
    return out


def parse_response(data: Any) -> Response:
    if not isinstance(data, dict) or data.get("object") != "chat.completion" or not data.get("choices"):
        raise CodecError("not an OpenAI chat completion")
    choice = data["choices"][0]
    msg = choice.get("message") or {}
    blocks = []
    if msg.get("reasoning_content"):
        blocks.append(Block("thinking", text=msg["reasoning_content"]))
    if msg.get("content"):
        blocks.append(Block("text", text=msg["content"]))
    for call in msg.get("tool_calls") or []:
        fn = call.get("function") or {}
        try:
            args = json.loads(fn.get("arguments") or "{}")
        except ValueError:
            raise CodecError("tool call arguments are not JSON") from None
        blocks.append(Block("tool_use", id=call.get("id", ""), name=fn.get("name", ""), input=args))
    u = data.get("usage") or {}
    cached = int(((u.get("prompt_tokens_details") or {}).get("cached_tokens")) or 0)
    usage = Usage(
        # OpenAI counts cached tokens inside prompt_tokens; the neutral form keeps them apart.
        input_tokens=int(u.get("prompt_tokens") or 0) - cached,
        output_tokens=int(u.get("completion_tokens") or 0),
        cache_read_tokens=cached,
    )
    stop = _STOP.get(choice.get("finish_reason") or "stop", StopReason.END_TURN)
    return Response(id=str(data.get("id", "")), model=str(data.get("model", "")), blocks=blocks,
                    stop_reason=stop, usage=usage)


def _usage_json(u: Usage) -> dict[str, Any]:
    prompt = u.input_tokens + u.cache_read_tokens + u.cache_write_tokens
    return {"prompt_tokens": prompt, "completion_tokens": u.output_tokens,
            "total_tokens": prompt + u.output_tokens,
            "prompt_tokens_details": {"cached_tokens": u.cache_read_tokens}}


def _tool_calls(r: Response) -> list[dict[str, Any]]:
    return [{"id": b.id, "type": "function",
             "function": {"name": b.name, "arguments": json.dumps(b.input, ensure_ascii=False)}}
            for b in r.blocks if b.type == "tool_use"]


def completion_json(r: Response, created: int) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": r.text or None, "refusal": None}
    calls = _tool_calls(r)
    if calls:
        message["tool_calls"] = calls
    return {"id": r.id, "object": "chat.completion", "created": created, "model": r.model,
            "choices": [{"index": 0, "message": message, "finish_reason": _FINISH[r.stop_reason],
                         "logprobs": None}],
            "usage": _usage_json(r.usage)}


def encode_json(r: Response, created: int) -> bytes:
    return dumps(completion_json(r, created))


def encode_sse(r: Response, created: int, include_usage: bool) -> bytes:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return frame({"id": r.id, "object": "chat.completion.chunk", "created": created,
                      "model": r.model,
                      "choices": [{"index": 0, "delta": delta, "finish_reason": finish,
                                   "logprobs": None}]})

    out = [chunk({"role": "assistant", "content": ""})]
    if r.text:
        out.append(chunk({"content": r.text}))
    for i, call in enumerate(_tool_calls(r)):
        out.append(chunk({"tool_calls": [{"index": i, **call}]}))
    out.append(chunk({}, _FINISH[r.stop_reason]))
    if include_usage:
        out.append(frame({"id": r.id, "object": "chat.completion.chunk", "created": created,
                          "model": r.model, "choices": [], "usage": _usage_json(r.usage)}))
    out.append(frame(b"[DONE]"))
    return b"".join(out)


def error_body(status: int, message: str) -> bytes:
    kind = "invalid_request_error" if 400 <= status < 500 else "server_error"
    return dumps({"error": {"message": message, "type": kind, "param": None, "code": None}})
