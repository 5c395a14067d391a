"""HTTP clients for LLM providers. Foreign errors are mapped to ProviderError here, at the edge."""
from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any, AsyncIterator

import aiohttp

from cascade_extproc.codecs import CodecError, anthropic, dumps, openai
from cascade_extproc.codecs.sse import SseParser
from cascade_extproc.codecs.stream import Assembler, StreamFailed
from cascade_extproc.headers import API_PATH
from cascade_extproc.types import Api, Response

CODECS = {Api.ANTHROPIC: anthropic, Api.OPENAI: openai}


class ProviderError(Exception):
    """A provider call failed: transport, timeout, non-2xx status or unparseable answer."""

    def __init__(self, reason: str, status: int = 0, message: str = ""):
        super().__init__(f"{reason} (status {status})" if status else reason)
        self.reason = reason
        self.status = status
        self.message = message  # the provider's own error message, when it sent one


class Upstream:
    """A provider's answer as it arrives: status, type and body chunks, each awaited for at most
    `idle_timeout_s` (a provider that goes quiet mid-answer raises ProviderError("stalled"))."""

    def __init__(self, resp: aiohttp.ClientResponse, idle_timeout_s: float):
        self._resp = resp
        self.idle_timeout_s = idle_timeout_s
        self.status = resp.status
        self.sse = resp.content_type == "text/event-stream"

    async def chunks(self) -> AsyncIterator[bytes]:
        while True:
            try:
                async with asyncio.timeout(self.idle_timeout_s):
                    chunk = await self._resp.content.readany()
            except TimeoutError:
                raise ProviderError("stalled") from None
            except aiohttp.ClientError as exc:
                raise ProviderError(f"transport: {type(exc).__name__}") from None
            if not chunk:
                return
            yield chunk

    async def read(self) -> bytes:
        return b"".join([c async for c in self.chunks()])


class HttpProvider:
    """One provider endpoint speaking `api`. Answers may be JSON or an SSE stream."""

    def __init__(self, api: Api, base_url: str, session: aiohttp.ClientSession):
        self.api = api
        self.url = base_url.rstrip("/") + API_PATH[api]
        self._session = session

    async def complete(self, body: bytes | dict[str, Any], headers: dict[str, str],
                       timeout_s: float) -> Response:
        data = body if isinstance(body, bytes) else dumps(body)
        hdrs = {**headers, "content-type": "application/json"}
        try:
            async with asyncio.timeout(timeout_s):
                async with self._session.post(self.url, data=data, headers=hdrs) as resp:
                    if resp.status >= 300:
                        raise ProviderError("http error", resp.status, self._message(await resp.read()))
                    if resp.content_type == "text/event-stream":
                        return await self._read_stream(resp)
                    raw = await resp.read()
        except TimeoutError:
            raise ProviderError("timeout") from None
        except aiohttp.ClientError as exc:
            raise ProviderError(f"transport: {type(exc).__name__}") from None
        try:
            return CODECS[self.api].parse_response(json.loads(raw))
        except (ValueError, KeyError, TypeError, AttributeError, CodecError):
            raise ProviderError("malformed response", 200) from None

    @contextlib.asynccontextmanager
    async def open(self, body: bytes, headers: dict[str, str], timeout_s: float) -> AsyncIterator[Upstream]:
        """The answer, to read as it comes: connecting and the response headers within
        `timeout_s`, then each chunk within `timeout_s` of the last. A status of 400 or more is
        raised as ProviderError with the provider's own message."""
        hdrs = {**headers, "content-type": "application/json"}
        try:
            async with asyncio.timeout(timeout_s):
                resp = await self._session.post(self.url, data=body, headers=hdrs)
                if resp.status >= 400:
                    try:
                        raise ProviderError("http error", resp.status, self._message(await resp.read()))
                    finally:
                        resp.release()
        except TimeoutError:
            raise ProviderError("timeout") from None
        except aiohttp.ClientError as exc:
            raise ProviderError(f"transport: {type(exc).__name__}") from None
        try:
            yield Upstream(resp, timeout_s)
        finally:
            resp.close()  # not release(): an answer we stopped reading must not go back to the pool

    def _message(self, body: bytes) -> str:
        try:
            return CODECS[self.api].error_message(json.loads(body))
        except ValueError:
            return ""

    async def _read_stream(self, resp: aiohttp.ClientResponse) -> Response:
        parser, decoder, assembler = SseParser(), CODECS[self.api].StreamDecoder(), Assembler()
        try:
            async for chunk in resp.content.iter_any():
                for ev in parser.feed(chunk):
                    assembler.feed(decoder.feed(ev))
            for ev in parser.close():
                assembler.feed(decoder.feed(ev))
            return assembler.response()
        except StreamFailed as exc:
            raise ProviderError(f"stream: {exc}", exc.status) from None
        except (ValueError, KeyError, TypeError, AttributeError, CodecError):
            raise ProviderError("malformed stream", 200) from None
