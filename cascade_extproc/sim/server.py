"""One simulated provider (a SIMULATION: no model runs here): a loopback aiohttp server speaking
the Anthropic Messages API or the OpenAI Chat Completions API, JSON and SSE, that records what
it receives, validates it as the real API would (validate.py), and can be told to be slow or
to fail (`fail_next`)."""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any, Iterator

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from cascade_extproc.sim.answers import (CREATED, FINISH, Answer, _ntok, anthropic_conv, anthropic_frames,
                                         openai_conv, openai_frames, respond)
from cascade_extproc.sim.cache import SimCache, anthropic_blocks, openai_blocks
from cascade_extproc.sim.validate import (BadRequest, check_anthropic, check_openai, check_unique_keys, need,
                                          redacted_prefix, thinking_enabled, thinking_signature)

log = logging.getLogger("cascade_extproc.sim")

_ANTHROPIC_ERRORS = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                     404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
                     529: "overloaded_error"}


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


class SimProvider:
    """One simulated provider speaking `api` ('anthropic' or 'openai')."""

    def __init__(self, api: str, *, name: str = "", latency: Latency | None = None,
                 api_keys: set[str] | None = None, base_path: str = "", cache: str = "",
                 cache_ttl_s: float = 300.0):
        """`base_path`: served under this path prefix, as DeepSeek serves its Anthropic API
        under /anthropic. `cache`: how it caches prompts (sim/cache.py): "explicit" (Anthropic's
        `cache_control`, the default for the Anthropic API), "automatic" (DeepSeek's, OpenAI's:
        the default for the OpenAI API; `cache_ttl_s` its retention) or "off"."""
        if api not in ("anthropic", "openai"):
            raise ValueError(f"unknown api {api!r}")
        self.api, self.name = api, name or f"sim-{api}"
        self.latency = latency or Latency()
        self.api_keys = api_keys
        self.base_path = base_path.rstrip("/")
        self.cache = SimCache(cache or ("explicit" if api == "anthropic" else "automatic"), cache_ttl_s)
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
        """Forget what it received, its pending faults and its prompt cache."""
        self.received.clear()
        self._faults.clear()
        self.cache.clear()

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

    async def _json(self, request: web.Request, payload: dict, ans: Answer, cut: str) -> web.StreamResponse:
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
        return web.json_response({"input_tokens": anthropic_conv(body).input_tokens()})

    async def _anthropic_messages(self, request: web.Request) -> web.StreamResponse:
        fault, body, cut = await self._model_call(request)
        if fault:
            return fault
        check_anthropic(body, generating=True, name=self.name)
        conv = anthropic_conv(body)
        ans = respond(conv, body["model"], body["max_tokens"], think=thinking_enabled(body))
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
        cached = self.cache.use(body["model"], anthropic_blocks(body, _ntok))
        n_in = conv.input_tokens()
        read, write = min(cached.read, n_in), min(cached.write, max(n_in - cached.read, 0))
        msg = {"id": f"msg_sim_{digest[:24]}", "type": "message", "role": "assistant", "model": body["model"],
               "content": blocks, "stop_reason": ans.stop, "stop_sequence": None,
               "usage": {"input_tokens": n_in - read - write, "output_tokens": ans.output_tokens,
                         "cache_creation_input_tokens": write, "cache_read_input_tokens": read,
                         "cache_creation": {"ephemeral_5m_input_tokens": write - min(cached.write_1h, write),
                                            "ephemeral_1h_input_tokens": min(cached.write_1h, write)}}}
        if body.get("stream"):
            return await self._stream(request, anthropic_frames(msg), cut)
        return await self._json(request, msg, ans, cut)

    # -- OpenAI --

    async def _openai_chat(self, request: web.Request) -> web.StreamResponse:
        fault, body, cut = await self._model_call(request)
        if fault:
            return fault
        check_openai(body)
        conv = openai_conv(body)
        ans = respond(conv, body["model"], body.get("max_completion_tokens") or body.get("max_tokens"),
                      think=body.get("reasoning_effort") not in (None, "none"))
        digest, n_in = _digest(body), conv.input_tokens()
        read = min(self.cache.use(body["model"], openai_blocks(body, _ntok)).read, n_in)
        calls = [{"id": f"call_sim_{digest[24:48]}", "type": "function",
                  "function": {"name": ans.tool[0], "arguments": json.dumps(ans.tool[1])}}] if ans.tool else []
        usage = {"prompt_tokens": n_in, "completion_tokens": ans.output_tokens,
                 "total_tokens": n_in + ans.output_tokens, "prompt_tokens_details": {"cached_tokens": read}}
        if ans.thinking:
            usage["completion_tokens_details"] = {"reasoning_tokens": ans.thinking_tokens}
        head = {"id": f"chatcmpl-sim{digest[:24]}", "created": CREATED, "model": body["model"]}
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            frames = openai_frames(head, ans, calls, usage if include_usage else None)
            return await self._stream(request, frames, cut)
        message = {"role": "assistant", "content": (ans.text or None) if calls else ans.text, "refusal": None}
        if ans.thinking:
            message["reasoning_content"] = ans.thinking
        if calls:
            message["tool_calls"] = calls
        choice = {"index": 0, "message": message, "finish_reason": FINISH[ans.stop], "logprobs": None}
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
