"""Simulated LLM providers (a SIMULATION: no model runs here).

Loopback aiohttp servers speaking the Anthropic Messages API and the OpenAI Chat
Completions API, JSON and SSE. `cascade-extproc up` uses them when no real keys are
configured; the tests use them as fake upstreams. Same request -> same answer.

Imports nothing else from cascade_extproc on purpose: it is written against the public
wire formats, so it independently checks our codecs.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import random
import re
from dataclasses import dataclass, field
from typing import Any, Iterator

from aiohttp import web

log = logging.getLogger(__name__)

CREATED = 1_700_000_000  # fixed OpenAI `created`, so responses are reproducible
_TOKEN_RE = re.compile(r"\w+|[^\w\s]")
_PIECE_RE = re.compile(r"\s*(?:\w+|[^\w\s])")  # one token with its leading whitespace
_VERIFY_RE = re.compile(r"\[cascade-verify nonce=([0-9a-fA-F]+)\]")
_TOOL_RE = re.compile(r"sim:tool=([\w.-]+)")
_WORDS = ("amber basin cedar delta ember fjord glacier harbor island juniper kelp lagoon meadow "
          "nebula orchid prairie quartz river summit tundra umber valley willow yarrow zephyr "
          "anchor beacon canyon dune estuary forest grove horizon").split()
_ANTHROPIC_ERRORS = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                     404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
                     529: "overloaded_error"}
_FINISH = {"end_turn": "stop", "tool_use": "tool_calls", "max_tokens": "length"}


@dataclass
class Latency:
    ttft_s: float = 0.0        # delay before the first token (JSON: before the response)
    tokens_per_s: float = 0.0  # 0 = no per-token delay


@dataclass
class Recorded:
    """One request the sim received."""
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes
    json: Any | None


class _BadRequest(Exception):
    pass


def _need(ok: Any, message: str) -> None:
    if not ok:
        raise _BadRequest(message)


def _ntok(text: str) -> int:
    return len(_TOKEN_RE.findall(text))


# ---- both APIs are reduced to this neutral conversation before answering ----

@dataclass
class _Turn:
    role: str                                        # "user" or "assistant"
    texts: list[str] = field(default_factory=list)   # text blocks
    extras: list[str] = field(default_factory=list)  # tool results, tool-call arguments JSON


@dataclass
class _Conv:
    system: list[str]
    tools: list[tuple[str, str, dict]]  # (name, description, JSON schema)
    tool_choice: str | None             # None = auto, "none", "" = any tool, else a tool name
    turns: list[_Turn] = field(default_factory=list)

    def add(self, role: str, texts: list[str], extras: list[str]) -> None:
        # Consecutive same-role messages are one turn: Anthropic merges them, and
        # OpenAI tool + user messages become a single Anthropic user message.
        if self.turns and self.turns[-1].role == role:
            self.turns[-1].texts += texts
            self.turns[-1].extras += extras
        else:
            self.turns.append(_Turn(role, list(texts), list(extras)))

    def input_tokens(self) -> int:
        # Tools are counted as name + description + schema so both APIs agree.
        parts = self.system + [s for t in self.turns for s in t.texts + t.extras]
        return sum(map(_ntok, parts + [f"{n} {d} {json.dumps(s)}" for n, d, s in self.tools]))

    def last_user(self) -> _Turn:
        return next((t for t in reversed(self.turns) if t.role == "user"), _Turn("user"))


def _texts(content: Any) -> list[str]:
    """Texts of a string or of a list of text blocks/parts."""
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        return []
    return [b["text"] for b in content if isinstance(b, dict) and b.get("type") == "text"
            and isinstance(b.get("text"), str)]


def _anthropic_conv(body: dict) -> _Conv:
    tools = [(t["name"], t.get("description") or "", t.get("input_schema") or {}) for t in body.get("tools") or []]
    tc = body.get("tool_choice") or {}
    conv = _Conv(_texts(body.get("system")), tools,
                 {"none": "none", "any": "", "tool": tc.get("name")}.get(tc.get("type")))
    for m in body["messages"]:
        blocks = [{"type": "text", "text": m["content"]}] if isinstance(m["content"], str) else m["content"]
        texts = [b["text"] for b in blocks if b["type"] == "text"]
        extras = [s for b in blocks if b["type"] == "tool_result" for s in _texts(b.get("content"))]
        extras += [json.dumps(b["input"]) for b in blocks if b["type"] == "tool_use"]
        conv.add(m["role"], texts, extras)
    return conv


def _openai_conv(body: dict) -> _Conv:
    fns = [t["function"] for t in body.get("tools") or []]
    tc = body.get("tool_choice")
    choice = tc["function"]["name"] if isinstance(tc, dict) else {"none": "none", "required": ""}.get(tc)
    conv = _Conv([], [(f["name"], f.get("description") or "", f.get("parameters") or {}) for f in fns], choice)
    for m in body["messages"]:
        role, texts = m["role"], _texts(m.get("content"))
        if role in ("system", "developer"):
            conv.system += texts
        elif role == "tool":  # a tool result is user-side content, as in Anthropic
            conv.add("user", [], texts)
        else:
            conv.add(role, texts, [c["function"]["arguments"] for c in m.get("tool_calls") or []])
    return conv


# ---- what the simulated model says ----

@dataclass
class _Answer:
    text: str = ""
    tool: tuple[str, dict] | None = None  # (name, input)
    output_tokens: int = 0
    stop: str = "end_turn"  # Anthropic vocabulary; _FINISH maps it for OpenAI


def _without_verification(conv: _Conv) -> _Conv:
    """The conversation as it was before the verifier's turn was appended."""
    out = _Conv(conv.system, conv.tools, conv.tool_choice,
                [_Turn(t.role, list(t.texts), list(t.extras)) for t in conv.turns])
    last = out.last_user()
    last.texts = [s for s in last.texts if not _VERIFY_RE.search(s)]
    if not last.texts and not last.extras:
        out.turns.remove(last)
    return out


def _schema_value(schema: dict) -> Any:
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    return {"integer": 1, "number": 1, "boolean": True, "array": [], "object": {}, "null": None}.get(kind, "sim")


def _schema_input(schema: dict) -> dict:
    props = schema.get("properties") or {}
    keys = schema["required"] if isinstance(schema.get("required"), list) else list(props)
    return {k: _schema_value(props.get(k) or {}) for k in keys}


def _reply_text(model: str, seed_text: str) -> str:
    seed = hashlib.sha256((model + seed_text).encode()).digest()
    rng = random.Random(int.from_bytes(seed, "big"))
    words = " ".join(rng.choice(_WORDS) for _ in range(18 + seed[0] % 5))
    return f"Simulated reply from {model}: {words.capitalize()}."


def _text_answer(text: str, max_tokens: int | None) -> _Answer:
    ends = [m.end() for m in _TOKEN_RE.finditer(text)]
    if max_tokens is None or len(ends) <= max_tokens:
        return _Answer(text, output_tokens=len(ends))
    return _Answer(text[:ends[max_tokens - 1]], output_tokens=max_tokens, stop="max_tokens")


def _answer(conv: _Conv, model: str, max_tokens: int | None) -> _Answer:
    nonce = _VERIFY_RE.search("\n".join(conv.last_user().texts))
    if nonce:
        if not any("sim:reject" in s for t in conv.turns if t.role == "user" for s in t.texts):
            return _text_answer(f"ACCEPT {nonce.group(1)}", max_tokens)
        conv = _without_verification(conv)
    last = conv.last_user()
    last_text = "\n".join(last.texts)
    names = [name for name, _, _ in conv.tools]
    tool = None
    if names and conv.tool_choice is not None and conv.tool_choice != "none":
        tool = conv.tool_choice or names[0]
    elif names and conv.tool_choice is None and (m := _TOOL_RE.search(last_text)) and m.group(1) in names:
        tool = m.group(1)
    if tool is None:  # after a tool call the last user turn is only its result: seed on that
        return _text_answer(_reply_text(model, last_text or "\n".join(last.extras)), max_tokens)
    args = _schema_input(next(s for n, _, s in conv.tools if n == tool))
    n = _ntok(json.dumps(args))
    if max_tokens is not None and n > max_tokens:  # a cut-off call is useless: emit nothing
        return _Answer(output_tokens=0, stop="max_tokens")
    return _Answer(tool=(tool, args), output_tokens=n, stop="tool_use")


# ---- request validation (the subset of the real APIs' checks that codecs can get wrong) ----

def _is_list_of(value: Any, ok: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, dict) and ok(v) for v in value)


def _check_anthropic_block(b: dict, where: str) -> None:
    kind = b.get("type")
    _need(isinstance(kind, str), f"{where}.type: Field required")
    _need(kind != "text" or isinstance(b.get("text"), str), f"{where}.text: Field required")
    _need(kind != "tool_use" or (isinstance(b.get("input"), dict) and b.get("id") and b.get("name")),
          f"{where}: tool_use needs id, name and input")
    _need(kind != "tool_result" or isinstance(b.get("tool_use_id"), str), f"{where}.tool_use_id: Field required")
    if kind == "thinking":
        sig = b.get("signature")
        _need(isinstance(sig, str) and sig, f"{where}.signature: Field required")
        # The real API rejects signatures it did not issue.
        _need(not sig.startswith("foreign-"), f"{where}: Invalid signature in thinking block")


def _check_anthropic(body: dict, *, generating: bool) -> None:
    _need(isinstance(body.get("model"), str) and body["model"], "model: Field required")
    max_tokens = body.get("max_tokens")
    _need(not generating or (type(max_tokens) is int and max_tokens >= 1), "max_tokens: Field required")
    msgs = body.get("messages")
    _need(isinstance(msgs, list) and msgs, "messages: at least one message is required")
    for i, m in enumerate(msgs):
        _need(isinstance(m, dict) and m.get("role") in ("user", "assistant"),
              f"messages.{i}.role: Input should be 'user' or 'assistant'")
        _need(isinstance(m.get("content"), str) or _is_list_of(m.get("content"), lambda b: True),
              f"messages.{i}.content: Input should be a valid string or list of blocks")
        for j, block in enumerate(m["content"] if isinstance(m["content"], list) else []):
            _check_anthropic_block(block, f"messages.{i}.content.{j}")
    _need(body.get("system") is None or isinstance(body["system"], (str, list)), "system: invalid")
    tools = body.get("tools") or []
    _need(_is_list_of(tools, lambda t: isinstance(t.get("name"), str)), "tools: each tool needs a name")
    tc = body.get("tool_choice")
    _need(tc is None or (isinstance(tc, dict) and tc.get("type") in ("auto", "any", "none")) or (
        isinstance(tc, dict) and tc.get("type") == "tool" and tc.get("name") in {t["name"] for t in tools}),
        "tool_choice: invalid, or names a tool not in tools")


def _check_openai(body: dict) -> None:
    _need(isinstance(body.get("model"), str) and body["model"], "you must provide a model parameter")
    msgs = body.get("messages")
    _need(isinstance(msgs, list) and msgs, "'messages' must contain at least one message")
    for i, m in enumerate(msgs):
        _need(isinstance(m, dict) and m.get("role") in ("system", "developer", "user", "assistant", "tool"),
              f"Invalid value for 'messages[{i}].role'")
        _need(m.get("content") is None or isinstance(m["content"], (str, list)),
              f"Invalid type for 'messages[{i}].content'")
        _need(m["role"] != "tool" or isinstance(m.get("tool_call_id"), str),
              f"Missing required parameter: 'messages[{i}].tool_call_id'")
        _need(_is_list_of(m.get("tool_calls") or [], lambda c: isinstance(c.get("function"), dict) and isinstance(
            c["function"].get("arguments"), str)), f"Invalid 'messages[{i}].tool_calls'")
    for key in ("max_tokens", "max_completion_tokens"):
        _need(body.get(key) is None or (type(body[key]) is int and body[key] >= 1), f"Invalid '{key}'")
    tools = body.get("tools") or []
    _need(_is_list_of(tools, lambda t: isinstance(t.get("function"), dict) and isinstance(
        t["function"].get("name"), str)), "Invalid 'tools'")
    tc = body.get("tool_choice")
    _need(tc in (None, "none", "auto", "required") or (isinstance(tc, dict) and isinstance(
        tc.get("function"), dict) and tc["function"].get("name") in {t["function"]["name"] for t in tools}),
        "Invalid 'tool_choice'")


# ---- the server ----

class SimProvider:
    """One simulated provider speaking `api` ('anthropic' or 'openai')."""

    def __init__(self, api: str, *, name: str = "", latency: Latency | None = None,
                 api_keys: set[str] | None = None):
        if api not in ("anthropic", "openai"):
            raise ValueError(f"unknown api {api!r}")
        self.api, self.name = api, name or f"sim-{api}"
        self.latency = latency or Latency()
        self.api_keys = api_keys
        self.received: list[Recorded] = []
        self.port = 0
        self._host = "127.0.0.1"
        self._faults: list[int] = []
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        """Base URL as the official SDK wants it."""
        host = "127.0.0.1" if self._host in ("", "0.0.0.0", "::") else self._host
        return f"http://{host}:{self.port}" + ("/v1" if self.api == "openai" else "")

    def fail_next(self, status: int, count: int = 1) -> None:
        self._faults += [status] * count

    def clear(self) -> None:
        self.received.clear()
        self._faults.clear()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024 * 1024)
        if self.api == "anthropic":
            app.router.add_post("/v1/messages", self._anthropic_messages)
            app.router.add_post("/v1/messages/count_tokens", self._anthropic_count)
        else:
            app.router.add_post("/v1/chat/completions", self._openai_chat)
        app.router.add_get("/v1/models", self._models)
        self._runner = web.AppRunner(app, access_log=None)  # no per-request logging
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        self._host, self.port = host, self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- plumbing --

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        raw = await request.read()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.received.append(Recorded(request.method, request.path, headers, raw, parsed))
        log.debug("sim %s: %s %s", self.name, request.method, request.path)
        if not self._authorized(headers):
            return self._error(401, "invalid x-api-key" if self.api == "anthropic" else "Incorrect API key provided")
        try:
            return await handler(request)
        except web.HTTPException as e:  # unknown route or method: still answer in the API's error shape
            return self._error(e.status, e.reason)
        except _BadRequest as e:
            return self._error(400, str(e))

    def _authorized(self, headers: dict[str, str]) -> bool:
        bearer = headers.get("authorization", "")
        key = bearer[7:].strip() if bearer.lower().startswith("bearer ") else ""
        if self.api == "anthropic":
            key = headers.get("x-api-key", "").strip() or key
        return bool(key) and (self.api_keys is None or key in self.api_keys)

    def _error(self, status: int, message: str) -> web.Response:
        if self.api == "anthropic":
            kind = _ANTHROPIC_ERRORS.get(status, "api_error" if status >= 500 else "invalid_request_error")
            body: dict = {"type": "error", "error": {"type": kind, "message": message}}
        else:
            kind = "server_error" if status >= 500 else "requests" if status == 429 else "invalid_request_error"
            code = {401: "invalid_api_key", 429: "rate_limit_exceeded"}.get(status)
            body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
        return web.json_response(body, status=status, headers=self._id_header("req_sim_error"))

    def _id_header(self, rid: str) -> dict[str, str]:
        return {"request-id" if self.api == "anthropic" else "x-request-id": rid}

    async def _model_call(self, request: web.Request) -> tuple[web.Response | None, dict]:
        """A pending fault to answer with, else the validated-as-object JSON body."""
        if self._faults:
            status = self._faults.pop(0)
            return self._error(status, f"simulated failure ({status})"), {}
        return None, await self._body(request)

    async def _body(self, request: web.Request) -> dict:
        try:
            body = json.loads(await request.read())  # aiohttp caches the body
        except ValueError:
            body = None
        _need(isinstance(body, dict), "request body must be a JSON object")
        return body

    def _gap(self, first: bool) -> float:
        if first:
            return self.latency.ttft_s
        return 1 / self.latency.tokens_per_s if self.latency.tokens_per_s > 0 else 0.0

    async def _json(self, payload: dict, ans: _Answer) -> web.Response:
        delay = self._gap(True) + max(ans.output_tokens - 1, 0) * self._gap(False)
        if delay > 0:
            await asyncio.sleep(delay)
        return web.json_response(payload, headers=self._id_header(payload["id"]))

    async def _stream(self, request: web.Request, frames: Iterator[str | None]) -> web.StreamResponse:
        """Write SSE frames as produced; a None item is a token boundary, where latency applies."""
        resp = web.StreamResponse(headers={"content-type": "text/event-stream", "cache-control": "no-cache",
                                           **self._id_header("req_sim_stream")})
        await resp.prepare(request)
        first = True
        try:
            for frame in frames:
                if frame is None:
                    if (delay := self._gap(first)) > 0:
                        await asyncio.sleep(delay)
                    first = False
                else:
                    await resp.write(frame.encode())
            await resp.write_eof()
        except ConnectionError:
            log.debug("sim %s: client went away mid-stream", self.name)
        return resp

    async def _models(self, request: web.Request) -> web.Response:
        if self.api == "anthropic":
            data = [{"type": "model", "id": m, "display_name": f"{m} (simulated)", "created_at": "2025-01-01T00:00:00Z"}
                    for m in ("claude-sim-haiku", "claude-sim-sonnet")]
            return web.json_response({"data": data, "has_more": False, "first_id": data[0]["id"],
                                      "last_id": data[-1]["id"]})
        data = [{"id": m, "object": "model", "created": CREATED, "owned_by": "sim"} for m in ("gpt-sim-mini", "gpt-sim")]
        return web.json_response({"object": "list", "data": data})

    # -- Anthropic --

    async def _anthropic_count(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        _check_anthropic(body, generating=False)
        return web.json_response({"input_tokens": _anthropic_conv(body).input_tokens()})

    async def _anthropic_messages(self, request: web.Request) -> web.StreamResponse:
        fault, body = await self._model_call(request)
        if fault:
            return fault
        _check_anthropic(body, generating=True)
        conv = _anthropic_conv(body)
        ans, digest = _answer(conv, body["model"], body["max_tokens"]), _digest(body)
        blocks: list[dict] = [{"type": "text", "text": ans.text}] if ans.text else []
        if ans.tool:
            blocks.append({"type": "tool_use", "id": f"toolu_sim_{digest[24:48]}",
                           "name": ans.tool[0], "input": ans.tool[1]})
        msg = {"id": f"msg_sim_{digest[:24]}", "type": "message", "role": "assistant", "model": body["model"],
               "content": blocks, "stop_reason": ans.stop, "stop_sequence": None,
               "usage": {"input_tokens": conv.input_tokens(), "output_tokens": ans.output_tokens,
                         "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}
        if body.get("stream"):
            return await self._stream(request, _anthropic_frames(msg))
        return await self._json(msg, ans)

    # -- OpenAI --

    async def _openai_chat(self, request: web.Request) -> web.StreamResponse:
        fault, body = await self._model_call(request)
        if fault:
            return fault
        _check_openai(body)
        conv = _openai_conv(body)
        ans = _answer(conv, body["model"], body.get("max_completion_tokens") or body.get("max_tokens"))
        digest, n_in = _digest(body), conv.input_tokens()
        calls = [{"id": f"call_sim_{digest[24:48]}", "type": "function",
                  "function": {"name": ans.tool[0], "arguments": json.dumps(ans.tool[1])}}] if ans.tool else []
        usage = {"prompt_tokens": n_in, "completion_tokens": ans.output_tokens,
                 "total_tokens": n_in + ans.output_tokens, "prompt_tokens_details": {"cached_tokens": 0}}
        head = {"id": f"chatcmpl-sim{digest[:24]}", "created": CREATED, "model": body["model"]}
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            frames = _openai_frames(head, ans.text, calls, _FINISH[ans.stop], usage if include_usage else None)
            return await self._stream(request, frames)
        message = {"role": "assistant", "content": None if calls else ans.text, "refusal": None}
        if calls:
            message["tool_calls"] = calls
        choice = {"index": 0, "message": message, "finish_reason": _FINISH[ans.stop], "logprobs": None}
        return await self._json({**head, "object": "chat.completion", "choices": [choice], "usage": usage}, ans)


def _digest(body: dict) -> str:
    """Ids derive from the request (minus transport flags), so replies are reproducible."""
    core = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
    return hashlib.sha256(json.dumps(core, sort_keys=True).encode()).hexdigest()


def _anthropic_frames(msg: dict) -> Iterator[str | None]:
    def frame(data: dict) -> str:
        return f"event: {data['type']}\ndata: {json.dumps(data)}\n\n"

    start = {**msg, "content": [], "stop_reason": None, "usage": {**msg["usage"], "output_tokens": 1}}
    yield frame({"type": "message_start", "message": start})
    yield frame({"type": "ping"})
    for i, block in enumerate(msg["content"]):
        if block["type"] == "text":
            first, delta, key, value = {"type": "text", "text": ""}, "text_delta", "text", block["text"]
        else:
            first, delta, key, value = {**block, "input": {}}, "input_json_delta", "partial_json", json.dumps(block["input"])
        yield frame({"type": "content_block_start", "index": i, "content_block": first})
        for piece in _PIECE_RE.findall(value):
            yield None
            yield frame({"type": "content_block_delta", "index": i, "delta": {"type": delta, key: piece}})
        yield frame({"type": "content_block_stop", "index": i})
    yield frame({"type": "message_delta", "delta": {"stop_reason": msg["stop_reason"], "stop_sequence": None},
                 "usage": {"output_tokens": msg["usage"]["output_tokens"]}})
    yield frame({"type": "message_stop"})


def _openai_frames(head: dict, text: str, calls: list[dict], finish: str,
                   usage: dict | None) -> Iterator[str | None]:
    def chunk(delta: dict | None, finish_reason: str | None = None, **extra: Any) -> str:
        choices = [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None,
                                             "finish_reason": finish_reason}]
        # With include_usage, every chunk carries "usage": null until the final one.
        data = {**head, "object": "chat.completion.chunk", "choices": choices,
                **({"usage": None} if usage is not None else {}), **extra}
        return f"data: {json.dumps(data)}\n\n"

    yield chunk({"role": "assistant", "content": "", "refusal": None})
    for piece in _PIECE_RE.findall(text):
        yield None
        yield chunk({"content": piece})
    for i, call in enumerate(calls):
        fn = call["function"]
        yield chunk({"tool_calls": [{"index": i, "id": call["id"], "type": "function",
                                     "function": {"name": fn["name"], "arguments": ""}}]})
        for piece in _PIECE_RE.findall(fn["arguments"]):
            yield None
            yield chunk({"tool_calls": [{"index": i, "function": {"arguments": piece}}]})
    yield chunk({}, finish)
    if usage is not None:
        yield chunk(None, usage=usage)
    yield "data: [DONE]\n\n"


# ---- running standalone: `cascade-extproc sim` ----

async def serve_forever(providers: list[tuple[SimProvider, str, int]]) -> None:
    """Start every provider on its (host, port), announce it, and run until cancelled."""
    try:
        for provider, host, port in providers:
            await provider.start(host, port)
            print(f"sim {provider.api} provider (simulated) on {provider.url}", flush=True)
        await asyncio.Event().wait()
    finally:
        for provider, _, _ in providers:
            await provider.stop()


def _host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host or "127.0.0.1", int(port)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--anthropic", type=_host_port, default=("127.0.0.1", 8081), metavar="HOST:PORT",
                        help="where the simulated Anthropic API listens (default 127.0.0.1:8081)")
    parser.add_argument("--openai", type=_host_port, default=("127.0.0.1", 8082), metavar="HOST:PORT",
                        help="where the simulated OpenAI API listens (default 127.0.0.1:8082)")
    parser.add_argument("--ttft-ms", type=float, default=0.0, help="delay before the first token (default 0)")
    parser.add_argument("--tokens-per-s", type=float, default=0.0, help="generation speed (default 0 = instant)")


def main(args: argparse.Namespace) -> int:
    latency = Latency(ttft_s=args.ttft_ms / 1000, tokens_per_s=args.tokens_per_s)
    providers = [(SimProvider("anthropic", latency=latency), *args.anthropic),
                 (SimProvider("openai", latency=latency), *args.openai)]
    try:
        asyncio.run(serve_forever(providers))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(prog="cascade-extproc sim", description="Simulated LLM providers")
    add_arguments(_parser)
    raise SystemExit(main(_parser.parse_args()))
