"""OpenAI Chat Completions ⇄ neutral types: requests, responses, SSE streams, errors (pure)."""
from __future__ import annotations

import json
import secrets
from typing import Any

from cascade_extproc.codecs.base import CodecError, dumps, positive_int, require
from cascade_extproc.codecs.sse import SseEvent, frame
from cascade_extproc.codecs.stream import events_of
from cascade_extproc.types import (Block, BlockDelta, BlockStart, BlockStop, ChatRequest, Message,
                                   Response, StopReason, StreamEnd, StreamError, StreamEvent,
                                   StreamStart, Tool, Usage)

_FINISH = {StopReason.END_TURN: "stop", StopReason.STOP_SEQUENCE: "stop",
           StopReason.TOOL_USE: "tool_calls", StopReason.MAX_TOKENS: "length"}
_STOP = {"stop": StopReason.END_TURN, "tool_calls": StopReason.TOOL_USE,
         "function_call": StopReason.TOOL_USE, "length": StopReason.MAX_TOKENS}
_CHOICE_IN = {"required": "any", "auto": "auto", "none": "none"}
_CHOICE_OUT = {"any": "required", "auto": "auto", "none": "none"}


def call_id(raw: str) -> str:
    return raw or "call_" + secrets.token_hex(12)


# ---- same-format helpers -------------------------------------------------------------------

def with_model(body: dict[str, Any], model: str, *, stream: bool | None = None) -> dict[str, Any]:
    out = dict(body)
    out["model"] = model
    if stream is not None:
        out["stream"] = stream
        if not stream:
            out.pop("stream_options", None)  # only valid with stream: true
    return out


# ---- requests --------------------------------------------------------------------------------

_ROLES = ("system", "developer", "user", "assistant", "tool", "function")


def _list_of_dicts(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(x, dict) for x in value)


def _number(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def check_request(body: dict[str, Any]) -> None:
    """What Chat Completions refuses with a 400, in the fields the router and the paths read:
    CodecError. Absent (or null) optional fields are fine. Of the messages, only the last is
    checked, as the router reads it: the cost must not grow with the conversation (an earlier
    malformed message is refused by the draft provider too, and the strong one answers)."""
    model = body.get("model")
    require(isinstance(model, str) and model, "model: a non-empty string is required")
    messages = body.get("messages")
    require(isinstance(messages, list) and messages, "messages: a non-empty list is required")
    last = messages[-1]
    require(isinstance(last, dict) and last.get("role") in _ROLES
            and (last.get("content") is None or isinstance(last["content"], (str, list))),
            "messages: each needs a valid role and a content (a string, a list of parts or null)")
    stream = body.get("stream")
    require(stream is None or isinstance(stream, bool), "stream: a boolean is required")
    options = body.get("stream_options")
    require(options is None or (isinstance(options, dict) and stream is True),
            "stream_options: an object, only allowed when stream is true")
    for key in ("max_tokens", "max_completion_tokens", "n"):
        require(body.get(key) is None or positive_int(body[key]), f"{key}: a positive integer is required")
    require(body.get("tools") is None or _list_of_dicts(body["tools"]), "tools: a list of tools is required")
    choice = body.get("tool_choice")
    require(choice is None or choice in ("none", "auto", "required") or isinstance(choice, dict),
            "tool_choice: none, auto, required or {type: function, function: {name}}")
    require(body.get("reasoning_effort") is None or isinstance(body["reasoning_effort"], str),
            "reasoning_effort: a string")
    stop = body.get("stop")
    require(stop is None or isinstance(stop, str) or (isinstance(stop, list) and all(isinstance(x, str) for x in stop)),
            "stop: a string or a list of strings")
    require(all(_number(body.get(k)) for k in ("temperature", "top_p")), "temperature, top_p: numbers")

def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content or [] if isinstance(p, dict) and p.get("type") == "text")


def _image(part: dict[str, Any]) -> Block:
    url = str((part.get("image_url") or {}).get("url", ""))
    if url.startswith("data:") and ";base64," in url:
        media, data = url[5:].split(";base64,", 1)
        return Block("image", source={"type": "base64", "media_type": media, "data": data})
    return Block("image", source={"type": "url", "url": url})


def _user_blocks(content: Any) -> list[Block]:
    if isinstance(content, str):
        return [Block("text", text=content)]
    out = []
    for p in content or []:
        if isinstance(p, dict) and p.get("type") == "text":
            out.append(Block("text", text=p.get("text", "")))
        elif isinstance(p, dict) and p.get("type") == "image_url":
            out.append(_image(p))
    return out


def decode_request(body: dict[str, Any]) -> ChatRequest:
    system, messages = [], []

    def user_turn() -> Message:
        # Tool results and the user text after them form one user turn, as Anthropic wants.
        if not messages or messages[-1].role != "user":
            messages.append(Message("user", []))
        return messages[-1]

    for m in body.get("messages") or []:
        role = m.get("role")
        if role in ("system", "developer"):
            system.append(_text(m.get("content")))
        elif role == "user":
            user_turn().blocks.extend(_user_blocks(m.get("content")))
        elif role == "tool":
            user_turn().blocks.append(Block("tool_result", tool_use_id=str(m.get("tool_call_id", "")),
                                            content=[Block("text", text=_text(m.get("content")))]))
        elif role == "assistant":
            blocks = [Block("text", text=t)] if (t := _text(m.get("content"))) else []
            for c in m.get("tool_calls") or []:
                fn = c.get("function") or {}
                try:
                    args = json.loads(fn.get("arguments") or "{}")
                except ValueError:
                    args = {}
                blocks.append(Block("tool_use", id=str(c.get("id", "")), name=str(fn.get("name", "")),
                                    input=args if isinstance(args, dict) else {}))
            messages.append(Message("assistant", blocks))
    choice = body.get("tool_choice")
    kind, name = (_CHOICE_IN.get(choice, "auto"), "") if not isinstance(choice, dict) else \
        ("tool", str((choice.get("function") or {}).get("name", "")))
    stop = body.get("stop")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    return ChatRequest(
        model=str(body.get("model", "")), messages=messages, system="\n\n".join(s for s in system if s),
        tools=[Tool(str(f.get("name", "")), str(f.get("description", "")), f.get("parameters") or {})
               for t in body.get("tools") or [] if isinstance(t, dict) and (f := t.get("function"))],
        tool_choice=kind, tool_name=name, max_tokens=max_tokens if isinstance(max_tokens, int) else None,
        temperature=body.get("temperature"), top_p=body.get("top_p"),
        stop=[stop] if isinstance(stop, str) else list(stop or []), stream=body.get("stream") is True)


def _part(b: Block) -> dict[str, Any]:
    if b.type == "image":
        src = b.source
        url = f"data:{src.get('media_type')};base64,{src.get('data')}" if src.get("type") == "base64" \
            else str(src.get("url", ""))
        return {"type": "image_url", "image_url": {"url": url}}
    return {"type": "text", "text": b.text}


def encode_request(req: ChatRequest) -> dict[str, Any]:
    messages: list[dict[str, Any]] = [{"role": "system", "content": req.system}] if req.system else []
    for m in req.messages:
        if m.role == "assistant":
            msg: dict[str, Any] = {"role": "assistant",
                                   "content": "".join(b.text for b in m.blocks if b.type == "text") or None}
            calls = [{"id": call_id(b.id), "type": "function",
                      "function": {"name": b.name, "arguments": json.dumps(b.input, ensure_ascii=False)}}
                     for b in m.blocks if b.type == "tool_use"]
            if calls:
                msg["tool_calls"] = calls
            messages.append(msg)
            continue
        for b in m.blocks:
            if b.type == "tool_result":
                text = "".join(c.text for c in b.content if c.type == "text")
                messages.append({"role": "tool", "tool_call_id": call_id(b.tool_use_id),
                                 "content": ("Error: " + text) if b.is_error else text})
        parts = [_part(b) for b in m.blocks if b.type in ("text", "image")]
        if parts:
            only_text = all(p["type"] == "text" for p in parts)
            messages.append({"role": "user",
                             "content": "".join(p["text"] for p in parts) if only_text else parts})
    body: dict[str, Any] = {"model": req.model, "messages": messages}
    if req.tools:
        body["tools"] = [{"type": "function", "function": {"name": t.name, "description": t.description,
                                                           "parameters": t.schema}} for t in req.tools]
        body["tool_choice"] = {"type": "function", "function": {"name": req.tool_name}} \
            if req.tool_choice == "tool" else _CHOICE_OUT.get(req.tool_choice, "auto")
    if req.max_tokens:
        body["max_tokens"] = req.max_tokens
    for key, value in (("temperature", req.temperature), ("top_p", req.top_p)):
        if value is not None:
            body[key] = value
    if req.stop:
        body["stop"] = req.stop
    if req.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}  # translation needs the usage
    return body


# ---- responses -------------------------------------------------------------------------------

def _usage(u: dict[str, Any]) -> Usage:
    details = u.get("prompt_tokens_details") or {}
    cached = int(details.get("cached_tokens") or 0)
    written = int(details.get("cache_write_tokens") or 0)  # GPT-5.6 on bill cache writes
    # OpenAI counts cached and written tokens inside prompt_tokens; the neutral form keeps them apart.
    return Usage(input_tokens=max(int(u.get("prompt_tokens") or 0) - cached - written, 0),
                 output_tokens=int(u.get("completion_tokens") or 0), cache_read_tokens=cached,
                 cache_write_tokens=written)


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
    stop = _STOP.get(choice.get("finish_reason") or "stop", StopReason.END_TURN)
    return Response(id=str(data.get("id", "")), model=str(data.get("model", "")), blocks=blocks,
                    stop_reason=stop, usage=_usage(data.get("usage") or {}))


def _usage_json(u: Usage) -> dict[str, Any]:
    prompt = u.input_tokens + u.cache_read_tokens + u.cache_write_tokens
    details = {"cached_tokens": u.cache_read_tokens}
    if u.cache_write_tokens:
        details["cache_write_tokens"] = u.cache_write_tokens
    return {"prompt_tokens": prompt, "completion_tokens": u.output_tokens,
            "total_tokens": prompt + u.output_tokens, "prompt_tokens_details": details}


def completion_json(r: Response, created: int) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": r.text or None, "refusal": None}
    calls = [{"id": call_id(b.id), "type": "function",
              "function": {"name": b.name, "arguments": json.dumps(b.input, ensure_ascii=False)}}
             for b in r.blocks if b.type == "tool_use"]
    if calls:
        message["tool_calls"] = calls
    return {"id": r.id or "chatcmpl-" + secrets.token_hex(12), "object": "chat.completion",
            "created": created, "model": r.model,
            "choices": [{"index": 0, "message": message, "finish_reason": _FINISH[r.stop_reason],
                         "logprobs": None}],
            "usage": _usage_json(r.usage)}


def encode_json(r: Response, created: int) -> bytes:
    return dumps(completion_json(r, created))


# ---- streams ---------------------------------------------------------------------------------

class StreamDecoder:
    """OpenAI chat.completion.chunk events → neutral events."""

    def __init__(self) -> None:
        self._started = False
        self._open: int | None = None  # index of the open block
        self._open_kind = ""
        self._next = 0
        self._tools: dict[int, int] = {}  # OpenAI tool_call index → block index
        self._stop = StopReason.END_TURN
        self._usage = Usage()

    def _start_block(self, block: Block, out: list[StreamEvent]) -> int:
        self._close(out)
        i, self._next = self._next, self._next + 1
        self._open, self._open_kind = i, block.type
        out.append(BlockStart(i, block))
        return i

    def _close(self, out: list[StreamEvent]) -> None:
        if self._open is not None:
            out.append(BlockStop(self._open))
            self._open = None

    def feed(self, ev: SseEvent) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        if ev.data.strip() == "[DONE]":
            self._close(out)
            out.append(StreamEnd(self._stop, self._usage))
            return out
        try:
            chunk = json.loads(ev.data)
        except ValueError:
            raise CodecError("SSE data is not JSON") from None
        if isinstance(chunk.get("error"), dict):
            return [StreamError(500, str(chunk["error"].get("message", "stream error")))]
        if not self._started:
            self._started = True
            out.append(StreamStart(str(chunk.get("id", "")), str(chunk.get("model", ""))))
        if chunk.get("usage"):
            self._usage = _usage(chunk["usage"])
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            for kind, key in (("thinking", "reasoning_content"), ("text", "content")):
                if delta.get(key):
                    if self._open is None or self._open_kind != kind:
                        self._start_block(Block(kind), out)
                    out.append(BlockDelta(self._open, kind, delta[key]))  # type: ignore[arg-type]
            for tc in delta.get("tool_calls") or []:
                fn = tc.get("function") or {}
                n = int(tc.get("index", 0))
                if n not in self._tools:
                    self._tools[n] = self._start_block(
                        Block("tool_use", id=str(tc.get("id", "")), name=str(fn.get("name", ""))), out)
                if fn.get("arguments"):
                    out.append(BlockDelta(self._tools[n], "json", fn["arguments"]))
            if choice.get("finish_reason"):
                self._stop = _STOP.get(choice["finish_reason"], StopReason.END_TURN)
        return out


class StreamEncoder:
    """Neutral events → OpenAI chunk SSE bytes."""

    def __init__(self, created: int, include_usage: bool):
        self.created = created
        self.include_usage = include_usage
        self._id = ""
        self._model = ""
        self._tools: dict[int, int] = {}  # block index → tool_call index

    def _chunk(self, delta: dict[str, Any] | None, finish: str | None = None,
               usage: Usage | None = None) -> bytes:
        body: dict[str, Any] = {"id": self._id, "object": "chat.completion.chunk", "created": self.created,
                                "model": self._model,
                                "choices": [] if delta is None else
                                [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}
        if usage is not None:
            body["usage"] = _usage_json(usage)
        return frame(body)

    def encode(self, ev: StreamEvent) -> bytes:
        if isinstance(ev, StreamStart):
            self._id, self._model = ev.id or "chatcmpl-" + secrets.token_hex(12), ev.model
            return self._chunk({"role": "assistant", "content": ""})
        if isinstance(ev, BlockStart) and ev.block.type == "tool_use":
            n = self._tools[ev.index] = len(self._tools)
            return self._chunk({"tool_calls": [{"index": n, "id": call_id(ev.block.id), "type": "function",
                                                "function": {"name": ev.block.name, "arguments": ""}}]})
        if isinstance(ev, BlockDelta):
            if ev.kind == "text":
                return self._chunk({"content": ev.value})
            if ev.kind == "json" and ev.index in self._tools:
                return self._chunk({"tool_calls": [{"index": self._tools[ev.index],
                                                    "function": {"arguments": ev.value}}]})
            return b""  # thinking has no place in Chat Completions
        if isinstance(ev, StreamEnd):
            out = self._chunk({}, _FINISH[ev.stop_reason])
            if self.include_usage:
                out += self._chunk(None, usage=ev.usage)
            return out + frame(b"[DONE]")
        if isinstance(ev, StreamError):
            return frame({"error": {"message": ev.message, "type": "server_error", "param": None,
                                    "code": None}})
        return b""


def encode_sse(r: Response, created: int, include_usage: bool) -> bytes:
    enc = StreamEncoder(created, include_usage)
    return b"".join(enc.encode(e) for e in events_of(r))


# ---- errors ----------------------------------------------------------------------------------

def error_body(status: int, message: str) -> bytes:
    kind = "invalid_request_error" if 400 <= status < 500 else "server_error"
    return dumps({"error": {"message": message, "type": kind, "param": None, "code": None}})


def error_message(data: Any) -> str:
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        return str(data["error"].get("message", ""))
    return ""
