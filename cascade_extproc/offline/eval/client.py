"""One model call as a client makes it: a neutral ChatRequest encoded for the client API, POSTed
to a base URL (a provider, or the stack's Envoy), the answer parsed back; with what the eval
reads beside it: HTTP status, x-cascade-path, latency, usage."""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import aiohttp
import orjson

from cascade_extproc import codecs
from cascade_extproc.types import Api, ChatRequest, Response, Usage

# Where each API's model call lives under a base URL, as the SDKs have it: the Anthropic base URL
# has no /v1 (http://host:10000), the OpenAI one ends in it (http://host:10000/openai/v1).
CALL_PATH = {Api.ANTHROPIC: "/v1/messages", Api.OPENAI: "/chat/completions"}
PATH_HEADER = "x-cascade-path"
NO_PATH = "strong"  # the path of an answer that says none (a provider called directly)


@dataclass
class Call:
    """One model call's record."""

    status: int  # 0: no HTTP answer (connection refused, timeout)
    path: str
    latency_s: float
    response: Response | None = None
    error: str = ""

    @property
    def usage(self) -> Usage:
        return self.response.usage if self.response else Usage()


class Client:
    def __init__(self, api: Api, base_url: str, api_key: str, session: aiohttp.ClientSession,
                 timeout_s: float = 300.0, seed: int | None = None, headers: dict[str, str] | None = None):
        self.api, self.url, self.session = api, base_url.rstrip("/") + CALL_PATH[api], session
        self.codec = codecs.for_api(api)
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.seed = seed
        auth = ({"x-api-key": api_key, "anthropic-version": "2023-06-01"} if api is Api.ANTHROPIC
                else {"authorization": f"Bearer {api_key}"})
        self.headers = {"content-type": "application/json", **auth, **(headers or {})}

    def body(self, req: ChatRequest) -> dict:
        body = self.codec.encode_request(req)
        if self.seed is not None and self.api is Api.OPENAI:
            body["seed"] = self.seed  # Anthropic's API has no seed: temperature 0 is what it has
        return body

    async def send(self, req: ChatRequest) -> Call:
        started = time.monotonic()
        try:
            async with self.session.post(self.url, data=orjson.dumps(self.body(req)), headers=self.headers,
                                         timeout=self.timeout) as r:
                raw = await r.read()
                path = r.headers.get(PATH_HEADER, NO_PATH)
                status = r.status
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            return Call(0, "none", time.monotonic() - started, error=f"{type(exc).__name__}: {exc}"[:300])
        latency = time.monotonic() - started
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return Call(status, path, latency, error=f"HTTP {status}: not JSON: {raw[:200]!r}")
        if status != 200:
            return Call(status, path, latency, error=f"HTTP {status}: {self.codec.error_message(data)}"[:300])
        try:
            return Call(status, path, latency, self.codec.parse_response(data))
        except (codecs.CodecError, KeyError, TypeError, ValueError) as exc:
            return Call(status, path, latency, error=f"unreadable answer: {exc}"[:300])
