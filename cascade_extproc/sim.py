"""Simulated LLM providers (a SIMULATION: no model runs here).

Loopback aiohttp servers speaking the Anthropic Messages API and the OpenAI Chat
Completions API, JSON and SSE. `cascade-extproc up` uses them when no real keys are
configured; the tests use them as fake upstreams. Same request -> same answer.

Requests are validated like the real APIs do (sim_validate.py), including thinking signatures
(only this provider's are accepted) and tool call/result pairing, so a test catches the sidecar
sending something a real provider would refuse.

Behaviour:
- Anthropic `thinking` enabled: the reply starts with a thinking block signed by this provider
  (see sim_validate.thinking_signature). OpenAI `reasoning_effort` (not "none"): the message
  carries `reasoning_content`, as DeepSeek's does. Reasoning tokens count as output tokens.
- A verification request (the last user message contains `[cascade-verify nonce=X]`) is
  answered `ACCEPT X`, X from the first such marker in that message.

Directives, in the last user text (the verifier's turn excluded):
- `sim:tool=NAME`     call tool NAME (when offered) instead of answering in text.
- `sim:say=TEXT`      the reply text is exactly TEXT (to the end of the line), not the
                      "Simulated reply from ..." text; with sim:tool it precedes the call.
- `sim:redact`        with thinking enabled, a redacted_thinking block instead of a thinking one.
- `sim:think`         reason even when not asked to, as some reasoning models do (Anthropic: a
                      signed thinking block; OpenAI: `reasoning_content`).
- `sim:gullible`      a verifier fooled by injection: it answers `ACCEPT X` with the LAST
                      `[cascade-verify nonce=X]` or `ACCEPT X` (hex X) in the last user message.
and in any user text, including the verifier's turn:
- `sim:reject`        the verifier rejects: it answers the conversation itself instead.

Imports nothing else from cascade_extproc but its sibling sim_validate, on purpose: it is
written against the public wire formats, so it independently checks our codecs.
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
from aiohttp.http_exceptions import HttpProcessingError

from cascade_extproc.sim_validate import (BadRequest, check_anthropic, check_openai, check_unique_keys, need,
                                          redacted_prefix, thinking_enabled, thinking_signature)

log = logging.getLogger(__name__)

CREATED = 1_700_000_000  # fixed OpenAI `created`, so responses are reproducible
_TOKEN_RE = re.compile(r"\w+|[^\w\s]")
_PIECE_RE = re.compile(r"\s*(?:\w+|[^\w\s])")  # one token with its leading whitespace
_VERIFY_RE = re.compile(r"\[cascade-verify nonce=([0-9a-fA-F]+)\]")
# The sidecar's verify turn is a text that starts with the marker; a marker elsewhere is just text.
_VERIFY_TURN_RE = re.compile(r"\A\[cascade-verify nonce=([0-9a-fA-F]+)\]")
_ACCEPT_RE = re.compile(r"\bACCEPT\s+([0-9a-fA-F]+)\b")
_TOOL_RE = re.compile(r"sim:tool=([\w.-]+)")
_SAY_RE = re.compile(r"sim:say=([^\r\n]*)")
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
    query: str = ""


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
    tail: list[str] = field(default_factory=list)  # texts of the final message, if a user one

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
        conv.tail = texts if m["role"] == "user" else []
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
        conv.tail = texts if role == "user" else []
    return conv


# ---- what the simulated model says ----

@dataclass
class _Answer:
    text: str = ""
    tool: tuple[str, dict] | None = None  # (name, input)
    output_tokens: int = 0  # thinking included
    stop: str = "end_turn"  # Anthropic vocabulary; _FINISH maps it for OpenAI
    thinking: str = ""
    thinking_tokens: int = 0
    redacted: bool = False  # Anthropic: send the thinking as a redacted_thinking block


def _without_verification(conv: _Conv) -> _Conv:
    """The conversation as it was before the verifier's turn was appended."""
    out = _Conv(conv.system, conv.tools, conv.tool_choice,
                [_Turn(t.role, list(t.texts), list(t.extras)) for t in conv.turns])
    last = out.last_user()
    last.texts = [s for s in last.texts if not _VERIFY_TURN_RE.match(s)]
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


def _thinking_text(model: str, seed_text: str) -> str:
    seed = hashlib.sha256(("thinking:" + model + seed_text).encode()).digest()
    rng = random.Random(int.from_bytes(seed, "big"))
    words = " ".join(rng.choice(_WORDS) for _ in range(8 + seed[0] % 4))
    return f"Simulated reasoning by {model}: weigh {words}, then answer."


def _verdict_nonce(text: str, gullible: bool) -> str:
    """The nonce a verifier accepts with: the first marker, or (gullible) the last marker or ACCEPT."""
    if not gullible:
        return _VERIFY_RE.search(text).group(1)  # type: ignore[union-attr]
    hits = [*_VERIFY_RE.finditer(text), *_ACCEPT_RE.finditer(text)]
    return max(hits, key=lambda m: m.start()).group(1)


def _verify_turn(conv: "_Conv") -> str:
    """The sidecar's verify text in the final user message, or ''."""
    return next((t for t in conv.tail if _VERIFY_TURN_RE.match(t)), "")


def _answer(conv: _Conv, model: str, max_tokens: int | None, *, think: bool = False) -> _Answer:
    tail = _verify_turn(conv)
    verifying = bool(tail)
    own = _without_verification(conv) if verifying else conv
    last = own.last_user()
    last_text = "\n".join(last.texts)
    think = think or "sim:think" in last_text
    thinking = _thinking_text(model, last_text or "\n".join(last.extras)) if think else ""
    n_think = _ntok(thinking)
    rest = None if max_tokens is None else max_tokens - n_think
    if rest is not None and rest <= 0:  # out of tokens while still thinking
        ans, thinking, n_think = _Answer(stop="max_tokens"), _text_answer(thinking, max_tokens).text, max_tokens
    elif verifying and not any("sim:reject" in s for t in conv.turns if t.role == "user" for s in t.texts):
        ans = _text_answer(f"ACCEPT {_verdict_nonce(tail, 'sim:gullible' in last_text)}", rest)
    else:
        ans = _model_answer(own, model, rest)
    ans.thinking, ans.thinking_tokens, ans.redacted = thinking, n_think, "sim:redact" in last_text
    ans.output_tokens += n_think
    return ans


def _model_answer(conv: _Conv, model: str, max_tokens: int | None) -> _Answer:
    last = conv.last_user()
    last_text = "\n".join(last.texts)
    names = [name for name, _, _ in conv.tools]
    tool = None
    if names and conv.tool_choice is not None and conv.tool_choice != "none":
        tool = conv.tool_choice or names[0]
    elif names and conv.tool_choice is None and (m := _TOOL_RE.search(last_text)) and m.group(1) in names:
        tool = m.group(1)
    say = _SAY_RE.search(last_text)
    if tool is None:  # after a tool call the last user turn is only its result: seed on that
        text = say.group(1) if say else _reply_text(model, last_text or "\n".join(last.extras))
        return _text_answer(text, max_tokens)
    lead = _text_answer(say.group(1), max_tokens) if say else _Answer()
    args = _schema_input(next(s for n, _, s in conv.tools if n == tool))
    n = _ntok(json.dumps(args))
    if max_tokens is not None and lead.output_tokens + n > max_tokens:  # a cut-off call is useless: omit it
        return _Answer(lead.text, output_tokens=lead.output_tokens, stop="max_tokens")
    return _Answer(lead.text, tool=(tool, args), output_tokens=lead.output_tokens + n, stop="tool_use")


# ---- the server ----

class SimProvider:
    """One simulated provider speaking `api` ('anthropic' or 'openai')."""

    def __init__(self, api: str, *, name: str = "", latency: Latency | None = None,
                 api_keys: set[str] | None = None, base_path: str = ""):
        """`base_path`: served under this path prefix, as DeepSeek serves its Anthropic API
        under /anthropic."""
        if api not in ("anthropic", "openai"):
            raise ValueError(f"unknown api {api!r}")
        self.api, self.name = api, name or f"sim-{api}"
        self.latency = latency or Latency()
        self.api_keys = api_keys
        self.base_path = base_path.rstrip("/")
        self.received: list[Recorded] = []
        self.port = 0
        self._host = "127.0.0.1"
        self._faults: list[int | str] = []
        self.faults_served = 0  # how many model calls got an injected fault
        self.held = 0  # connections a "stall" holds open right now
        self._stopping = False
        self.record = True  # keep every request in `received` (off for long load runs)
        self._runner: web.AppRunner | None = None
        self._scheme = "http"

    @property
    def url(self) -> str:
        """Base URL as the official SDK wants it."""
        host = "127.0.0.1" if self._host in ("", "0.0.0.0", "::") else self._host
        return f"{self._scheme}://{host}:{self.port}{self.base_path}" + ("/v1" if self.api == "openai" else "")

    def fail_next(self, status: int | str, count: int = 1) -> None:
        """The next `count` model calls fail: an HTTP status (answered in the API's error shape),
        or "malformed" (200 with a body that is not JSON), "truncate" (the answer, JSON or SSE,
        cut off halfway and the connection dropped), "reset" (the connection dropped at once) or
        "stall" (the answer starts, then nothing more comes and the connection stays open until
        the client goes away: JSON, the response headers and not a byte of the body; SSE, the
        headers and the first half of the frames, at least through the first content delta)."""
        if isinstance(status, str) and status not in FAULTS:
            raise ValueError(f"unknown fault {status!r}")
        self._faults += [status] * count

    def clear(self) -> None:
        self.received.clear()
        self._faults.clear()

    async def start(self, host: str = "127.0.0.1", port: int = 0, ssl_context: Any = None) -> None:
        """`ssl_context` (an ssl.SSLContext): serve HTTPS, e.g. as a fake api.anthropic.com."""
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024 * 1024)
        if self.api == "anthropic":
            app.router.add_post(self.base_path + "/v1/messages", self._anthropic_messages)
            app.router.add_post(self.base_path + "/v1/messages/count_tokens", self._anthropic_count)
        else:
            app.router.add_post(self.base_path + "/v1/chat/completions", self._openai_chat)
        app.router.add_get(self.base_path + "/v1/models", self._models)
        # No per-request logging. No lingering: after answering a body that does not decode, aiohttp
        # would read on to drain it, hit the same error and log it as an unhandled exception.
        self._runner = web.AppRunner(app, access_log=None, lingering_time=0)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port, ssl_context=ssl_context).start()
        self._host, self.port = host, self._runner.addresses[0][1]
        self._scheme = "https" if ssl_context is not None else "http"

    async def stop(self) -> None:
        self._stopping = True  # stalled answers end (their connections dropped)
        try:
            if self._runner is not None:
                await self._runner.cleanup()
                self._runner = None
        finally:
            self._stopping = False

    # -- plumbing --

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            raw = await request.read()  # inflated here when the client sent content-encoding
        except (web.RequestPayloadError, HttpProcessingError):
            # A body that does not decode (say gzip that is not gzip): the client's mistake, not
            # ours. Answered as a provider would, without a traceback in the console.
            if self.record:
                self.received.append(Recorded(request.method, request.path, headers, b"", None, request.query_string))
            encoding = headers.get("content-encoding", "")
            return self._error(400, f"request body could not be decoded (content-encoding: {encoding})")
        parsed = _loads(raw) if raw else None
        if self.record:
            self.received.append(Recorded(request.method, request.path, headers, raw, parsed, request.query_string))
        log.debug("sim %s: %s %s", self.name, request.method, request.path)
        if not self._authorized(headers):
            return self._error(401, "invalid x-api-key" if self.api == "anthropic" else "Incorrect API key provided")
        try:
            return await handler(request)
        except web.HTTPException as e:  # unknown route or method: still answer in the API's error shape
            return self._error(e.status, e.reason)
        except BadRequest as e:
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

    async def _model_call(self, request: web.Request) -> tuple[web.Response | None, dict, str]:
        """A pending fault to answer with, else the validated-as-object JSON body and how the
        answer is to be cut ("truncate", "stall" or "")."""
        if self._faults:
            fault = self._faults.pop(0)
            self.faults_served += 1
            if fault == "malformed":
                return web.Response(status=200, body=b'{"id": "x", "content": [', content_type="application/json"), {}, ""
            if fault == "reset":
                assert request.transport is not None
                request.transport.abort()
                return web.Response(status=200), {}, ""
            if fault in ("truncate", "stall"):  # the answer is made, then cut or held
                return None, await self._body(request), str(fault)
            return self._error(int(fault), f"simulated failure ({fault})"), {}, ""
        return None, await self._body(request), ""

    async def _hold_open(self, request: web.Request) -> None:
        """A stalled answer: send nothing more until the client goes away (or the sim stops,
        when the connection is dropped, so no client takes the answer for a whole one)."""
        self.held += 1
        try:
            while not self._stopping:
                transport = request.transport
                if transport is None or transport.is_closing():
                    return
                await asyncio.sleep(0.02)
            if request.transport is not None:
                request.transport.abort()
        finally:
            self.held -= 1

    async def _body(self, request: web.Request) -> dict:
        raw = await request.read()  # aiohttp caches the body
        try:
            body = json.loads(raw)
        except RecursionError:  # nesting deeper than the parser goes: a 400, as at a real API
            need(False, "request body is not valid JSON: nested too deeply")
        except ValueError:
            body = None
        need(isinstance(body, dict), "request body must be a JSON object")
        check_unique_keys(json.loads(raw, object_pairs_hook=list))  # json.loads kept the last value
        try:  # like the real APIs: text must be valid Unicode (no lone surrogates)
            json.dumps(body, ensure_ascii=False).encode()
        except UnicodeEncodeError:
            need(False, "request body contains invalid Unicode (a lone surrogate)")
        return body

    def _gap(self, first: bool) -> float:
        if first:
            return self.latency.ttft_s
        return 1 / self.latency.tokens_per_s if self.latency.tokens_per_s > 0 else 0.0

    async def _json(self, request: web.Request, payload: dict, ans: _Answer, cut: str) -> web.StreamResponse:
        delay = self._gap(True) + max(ans.output_tokens - 1, 0) * self._gap(False)
        if delay > 0:
            await asyncio.sleep(delay)
        if cut:  # promise the whole body; truncate: send half, drop the connection; stall: hold it
            data = json.dumps(payload).encode()
            resp = web.StreamResponse(headers={"content-type": "application/json",
                                               **self._id_header(payload["id"])})
            resp.content_length = len(data)
            await resp.prepare(request)  # a StreamResponse sends its headers at once
            if cut == "stall":
                await self._hold_open(request)
                return resp
            await resp.write(data[:len(data) // 2])
            assert request.transport is not None
            request.transport.abort()
            return resp
        return web.json_response(payload, headers=self._id_header(payload["id"]))

    async def _stream(self, request: web.Request, frames: Iterator[str | None], cut: str) -> web.StreamResponse:
        """Write SSE frames as produced; a None item is a token boundary, where latency applies."""
        resp = web.StreamResponse(headers={"content-type": "text/event-stream", "cache-control": "no-cache",
                                           **self._id_header("req_sim_stream")})
        await resp.prepare(request)
        first = True
        frames = list(frames)
        real = [f for f in frames if f is not None]
        # truncate: the first half of the frames, then the connection drops; stall: the first half
        # (at least through the first content delta), then nothing. Latency applies as usual.
        left = {"truncate": sum(f is not None for f in frames[:len(frames) // 2]),
                "stall": _stall_point(real)}.get(cut, -1)
        try:
            for frame in frames:
                if left == 0:
                    break
                if frame is None:
                    if (delay := self._gap(first)) > 0:
                        await asyncio.sleep(delay)
                    first = False
                else:
                    await resp.write(frame.encode())
                    left -= 1
            if cut == "truncate":
                assert request.transport is not None
                request.transport.abort()
                return resp
            if cut == "stall":
                await self._hold_open(request)
                return resp
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
        check_anthropic(body, generating=False, name=self.name)
        return web.json_response({"input_tokens": _anthropic_conv(body).input_tokens()})

    async def _anthropic_messages(self, request: web.Request) -> web.StreamResponse:
        fault, body, cut = await self._model_call(request)
        if fault:
            return fault
        check_anthropic(body, generating=True, name=self.name)
        conv = _anthropic_conv(body)
        ans = _answer(conv, body["model"], body["max_tokens"], think=thinking_enabled(body))
        digest = _digest(body)
        blocks: list[dict] = []
        if ans.thinking and ans.redacted:
            blocks.append({"type": "redacted_thinking", "data": redacted_prefix(self.name) + digest[:32]})
        elif ans.thinking:
            blocks.append({"type": "thinking", "thinking": ans.thinking,
                           "signature": thinking_signature(self.name, ans.thinking)})
        if ans.text:
            blocks.append({"type": "text", "text": ans.text})
        if ans.tool:
            blocks.append({"type": "tool_use", "id": f"toolu_sim_{digest[24:48]}",
                           "name": ans.tool[0], "input": ans.tool[1]})
        msg = {"id": f"msg_sim_{digest[:24]}", "type": "message", "role": "assistant", "model": body["model"],
               "content": blocks, "stop_reason": ans.stop, "stop_sequence": None,
               "usage": {"input_tokens": conv.input_tokens(), "output_tokens": ans.output_tokens,
                         "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}
        if body.get("stream"):
            return await self._stream(request, _anthropic_frames(msg), cut)
        return await self._json(request, msg, ans, cut)

    # -- OpenAI --

    async def _openai_chat(self, request: web.Request) -> web.StreamResponse:
        fault, body, cut = await self._model_call(request)
        if fault:
            return fault
        check_openai(body)
        conv = _openai_conv(body)
        ans = _answer(conv, body["model"], body.get("max_completion_tokens") or body.get("max_tokens"),
                      think=body.get("reasoning_effort") not in (None, "none"))
        digest, n_in = _digest(body), conv.input_tokens()
        calls = [{"id": f"call_sim_{digest[24:48]}", "type": "function",
                  "function": {"name": ans.tool[0], "arguments": json.dumps(ans.tool[1])}}] if ans.tool else []
        usage = {"prompt_tokens": n_in, "completion_tokens": ans.output_tokens,
                 "total_tokens": n_in + ans.output_tokens, "prompt_tokens_details": {"cached_tokens": 0}}
        if ans.thinking:
            usage["completion_tokens_details"] = {"reasoning_tokens": ans.thinking_tokens}
        head = {"id": f"chatcmpl-sim{digest[:24]}", "created": CREATED, "model": body["model"]}
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            frames = _openai_frames(head, ans, calls, usage if include_usage else None)
            return await self._stream(request, frames, cut)
        message = {"role": "assistant", "content": (ans.text or None) if calls else ans.text, "refusal": None}
        if ans.thinking:
            message["reasoning_content"] = ans.thinking
        if calls:
            message["tool_calls"] = calls
        choice = {"index": 0, "message": message, "finish_reason": _FINISH[ans.stop], "logprobs": None}
        answer = {**head, "object": "chat.completion", "choices": [choice], "usage": usage}
        return await self._json(request, answer, ans, cut)


FAULTS = ("malformed", "truncate", "reset", "stall")  # besides HTTP statuses


def _stall_point(frames: list[str]) -> int:
    """How many SSE frames a stalled answer sends: half, and at least through the first content
    delta (text or tool arguments; reasoning is not content)."""
    first = next((i for i, f in enumerate(frames) if _is_content_delta(f)), len(frames) - 1)
    return max(len(frames) // 2, first + 1)


def _is_content_delta(frame: str) -> bool:
    data = next((json.loads(line[6:]) for line in frame.splitlines() if line.startswith("data: {")), {})
    if data.get("type") == "content_block_delta":  # Anthropic
        return data["delta"]["type"] in ("text_delta", "input_json_delta")
    delta = (data.get("choices") or [{}])[0].get("delta") or {}  # OpenAI
    return bool(delta.get("content") or delta.get("tool_calls"))


def _loads(raw: bytes) -> Any:
    """The JSON in `raw` for the record, or None when it is not JSON (or nested too deeply)."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return None


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
        first, deltas = _block_events(block)
        yield frame({"type": "content_block_start", "index": i, "content_block": first})
        for delta in deltas:
            if delta["type"] != "signature_delta":  # the signature is not a generated token
                yield None
            yield frame({"type": "content_block_delta", "index": i, "delta": delta})
        yield frame({"type": "content_block_stop", "index": i})
    yield frame({"type": "message_delta", "delta": {"stop_reason": msg["stop_reason"], "stop_sequence": None},
                 "usage": {"output_tokens": msg["usage"]["output_tokens"]}})
    yield frame({"type": "message_stop"})


def _block_events(block: dict) -> tuple[dict, list[dict]]:
    """How a streamed content block starts, and its deltas."""
    kind = block["type"]
    if kind == "text":
        pieces = _PIECE_RE.findall(block["text"])
        return {"type": "text", "text": ""}, [{"type": "text_delta", "text": p} for p in pieces]
    if kind == "thinking":  # the text, then the whole signature in one delta
        pieces = _PIECE_RE.findall(block["thinking"])
        deltas = [{"type": "thinking_delta", "thinking": p} for p in pieces]
        return {**block, "thinking": "", "signature": ""}, [*deltas, {"type": "signature_delta",
                                                                      "signature": block["signature"]}]
    if kind == "tool_use":
        pieces = _PIECE_RE.findall(json.dumps(block["input"]))
        return {**block, "input": {}}, [{"type": "input_json_delta", "partial_json": p} for p in pieces]
    return block, []  # redacted_thinking arrives whole in its start event


def _openai_frames(head: dict, ans: _Answer, calls: list[dict], usage: dict | None) -> Iterator[str | None]:
    def chunk(delta: dict | None, finish_reason: str | None = None, **extra: Any) -> str:
        choices = [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None,
                                             "finish_reason": finish_reason}]
        # With include_usage, every chunk carries "usage": null until the final one.
        data = {**head, "object": "chat.completion.chunk", "choices": choices,
                **({"usage": None} if usage is not None else {}), **extra}
        return f"data: {json.dumps(data)}\n\n"

    yield chunk({"role": "assistant", "content": "", "refusal": None})
    for piece in _PIECE_RE.findall(ans.thinking):  # DeepSeek's shape: reasoning first, content null
        yield None
        yield chunk({"content": None, "reasoning_content": piece})
    for piece in _PIECE_RE.findall(ans.text):
        yield None
        yield chunk({"content": piece})
    for i, call in enumerate(calls):
        fn = call["function"]
        yield chunk({"tool_calls": [{"index": i, "id": call["id"], "type": "function",
                                     "function": {"name": fn["name"], "arguments": ""}}]})
        for piece in _PIECE_RE.findall(fn["arguments"]):
            yield None
            yield chunk({"tool_calls": [{"index": i, "function": {"arguments": piece}}]})
    yield chunk({}, _FINISH[ans.stop])
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
