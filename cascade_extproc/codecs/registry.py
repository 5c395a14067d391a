"""One codec per API, and the one lookup that picks it: `for_api(api)` (pure).

Each per-API module (anthropic.py, openai.py) provides what Codec lists; callers ask for_api
rather than choosing a module themselves."""
from __future__ import annotations

from typing import Any, Protocol

import orjson

from cascade_extproc.codecs import anthropic, openai, splice
from cascade_extproc.codecs.base import CodecError
from cascade_extproc.codecs.sse import SseEvent
from cascade_extproc.types import Api, ChatRequest, Request, Response, StreamEvent


class StreamDecoder(Protocol):
    def feed(self, ev: SseEvent) -> list[StreamEvent]: ...


class StreamEncoder(Protocol):
    def encode(self, ev: StreamEvent) -> bytes: ...


class Codec(Protocol):
    """An API's wire format ⇄ the neutral types. `created` and `include_usage` are OpenAI's (the
    answer's timestamp; the usage chunk the client asked for); Anthropic's codec takes and ignores them."""

    def check_request(self, body: dict[str, Any]) -> None: ...
    def decode_request(self, body: dict[str, Any]) -> ChatRequest: ...
    def encode_request(self, req: ChatRequest) -> dict[str, Any]: ...
    def parse_response(self, data: Any) -> Response: ...
    def encode_json(self, r: Response, created: int) -> bytes: ...
    def encode_sse(self, r: Response, created: int, include_usage: bool) -> bytes: ...
    def error_body(self, status: int, message: str) -> bytes: ...
    def error_message(self, data: Any) -> str: ...
    def StreamDecoder(self) -> StreamDecoder: ...  # noqa: N802 (a class in each module)
    def StreamEncoder(self, created: int, include_usage: bool) -> StreamEncoder: ...  # noqa: N802


_CODECS: dict[Api, Codec] = {Api.ANTHROPIC: anthropic, Api.OPENAI: openai}  # type: ignore[dict-item]


def for_api(api: Api) -> Codec:
    return _CODECS[api]


def parse_request(api: Api, raw: bytes, headers: dict[str, str]) -> Request:
    """Parse a client request body. Raises CodecError on anything the provider's API would
    refuse that the router or the paths read (not JSON, not an object, a field of the wrong
    shape, a duplicated top-level key): such a request is not ours to route, it goes to the
    strong provider as it is and gets the provider's own answer."""
    try:
        body = orjson.loads(raw)  # strict RFC 8259: no NaN, no lone surrogates, 64-bit integers
    except orjson.JSONDecodeError as exc:
        raise CodecError(f"body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise CodecError("body is not a JSON object")
    for_api(api).check_request(body)
    # orjson keeps the last of duplicated keys; the provider may refuse them, or read the first.
    splice.check_unique_top_level_keys(raw, body)
    return Request(api=api, body=body, headers=headers, raw=raw)
