"""The HTTP client for LLM providers (aiohttp). Foreign errors are mapped onto errors.py's
ProviderError kinds here, at the edge."""
from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any, AsyncIterator

import aiohttp

from cascade_extproc.codecs import CodecError, dumps, for_api
from cascade_extproc.codecs.sse import SseParser
from cascade_extproc.codecs.stream import Assembler, StreamFailed
from cascade_extproc.headers import API_PATH
from cascade_extproc.providers.errors import (ProviderDeadline, ProviderMalformed, ProviderStalled, ProviderStatus,
                                              ProviderTimeout, ProviderTransport)
from cascade_extproc.types import Api, Response

def _wait(timeout_s: float, deadline: float | None) -> tuple[float, bool]:
    """How long the next wait may take, and whether the deadline (time.monotonic()) is what ends it."""
    if deadline is None:
        return timeout_s, False
    left = max(deadline - time.monotonic(), 0.0)
    return (left, True) if left <= timeout_s else (timeout_s, False)


class Upstream:
    """A provider's answer as it arrives: status, type and body chunks, each awaited for at most
    `idle_timeout_s` (a provider that goes quiet mid-answer raises ProviderStalled), and none
    past `deadline` (ProviderDeadline)."""

    def __init__(self, resp: aiohttp.ClientResponse, idle_timeout_s: float, deadline: float | None = None):
        self._resp = resp
        self.idle_timeout_s = idle_timeout_s
        self.deadline = deadline
        self.status = resp.status
        self.sse = resp.content_type == "text/event-stream"

    async def chunks(self) -> AsyncIterator[bytes]:
        while True:
            wait, late = _wait(self.idle_timeout_s, self.deadline)
            if late and wait <= 0:  # checked first: a chunk already buffered would beat a zero timeout
                raise ProviderDeadline()
            try:
                async with asyncio.timeout(wait):
                    chunk = await self._resp.content.readany()
            except TimeoutError:
                raise (ProviderDeadline() if late else ProviderStalled()) from None
            except aiohttp.ClientError as exc:
                raise ProviderTransport(exc) from None
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
                        raise ProviderStatus(resp.status, self._message(await resp.read()))
                    if resp.content_type == "text/event-stream":
                        return await self._read_stream(resp)
                    raw = await resp.read()
        except TimeoutError:
            raise ProviderTimeout() from None
        except aiohttp.ClientError as exc:
            raise ProviderTransport(exc) from None
        try:
            return for_api(self.api).parse_response(json.loads(raw))
        except (ValueError, KeyError, TypeError, AttributeError, CodecError):
            raise ProviderMalformed("response") from None

    @contextlib.asynccontextmanager
    async def open(self, body: bytes, headers: dict[str, str], timeout_s: float,
                   deadline: float | None = None) -> AsyncIterator[Upstream]:
        """The answer, to read as it comes: connecting and the response headers within
        `timeout_s`, then each chunk within `timeout_s` of the last; with a `deadline`
        (time.monotonic()), nothing after it (ProviderDeadline). A status of 400 or more is
        raised as ProviderStatus with the provider's own message."""
        hdrs = {**headers, "content-type": "application/json"}
        wait, late = _wait(timeout_s, deadline)
        try:
            async with asyncio.timeout(wait):
                resp = await self._session.post(self.url, data=body, headers=hdrs)
                if resp.status >= 400:
                    try:
                        raise ProviderStatus(resp.status, self._message(await resp.read()))
                    finally:
                        resp.release()
        except TimeoutError:
            raise (ProviderDeadline() if late else ProviderTimeout()) from None
        except aiohttp.ClientError as exc:
            raise ProviderTransport(exc) from None
        try:
            yield Upstream(resp, timeout_s, deadline)
        finally:
            resp.close()  # not release(): an answer we stopped reading must not go back to the pool

    def _message(self, body: bytes) -> str:
        try:
            return for_api(self.api).error_message(json.loads(body))
        except ValueError:
            return ""

    async def _read_stream(self, resp: aiohttp.ClientResponse) -> Response:
        parser, decoder, assembler = SseParser(), for_api(self.api).StreamDecoder(), Assembler()
        try:
            async for chunk in resp.content.iter_any():
                for ev in parser.feed(chunk):
                    assembler.feed(decoder.feed(ev))
            for ev in parser.close():
                assembler.feed(decoder.feed(ev))
            return assembler.response()
        except StreamFailed as exc:
            raise ProviderStatus(exc.status, reason=f"stream: {exc}") from None
        except (ValueError, KeyError, TypeError, AttributeError, CodecError):
            raise ProviderMalformed("stream") from None
