"""HTTP clients for LLM providers. Foreign errors are mapped to ProviderError here, at the edge."""
from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from cascade_extproc.codecs import CodecError, anthropic, dumps, openai
from cascade_extproc.types import Api, Response

# Path appended to a provider's base URL, per API. SDK conventions: the Anthropic base URL
# has no /v1, the OpenAI one ends in /v1.
API_PATH = {Api.ANTHROPIC: "/v1/messages", Api.OPENAI: "/chat/completions"}


class ProviderError(Exception):
    """A provider call failed: transport, timeout, non-2xx status or unparseable answer."""

    def __init__(self, reason: str, status: int = 0):
        super().__init__(f"{reason} (status {status})" if status else reason)
        self.reason = reason
        self.status = status


class HttpProvider:
    """One provider endpoint speaking `api`; non-streaming calls only."""

    def __init__(self, api: Api, base_url: str, session: aiohttp.ClientSession):
        self.api = api
        self.url = base_url.rstrip("/") + API_PATH[api]
        self._session = session

    async def complete(self, body: dict[str, Any], headers: dict[str, str], timeout_s: float) -> Response:
        hdrs = {**headers, "content-type": "application/json"}
        try:
            async with asyncio.timeout(timeout_s):
                async with self._session.post(self.url, data=dumps(body), headers=hdrs) as resp:
                    raw = await resp.read()
                    status = resp.status
        except TimeoutError:
            raise ProviderError("timeout") from None
        except aiohttp.ClientError as exc:
            raise ProviderError(f"transport: {type(exc).__name__}") from None
        if status >= 300:
            raise ProviderError("http error", status)
        try:
            data = json.loads(raw)
            codec = anthropic if self.api is Api.ANTHROPIC else openai
            return codec.parse_response(data)
        except (ValueError, KeyError, TypeError, AttributeError, CodecError):
            raise ProviderError("malformed response", status) from None
