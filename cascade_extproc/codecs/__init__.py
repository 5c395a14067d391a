"""Pure codecs between client/provider wire formats and the neutral types."""
from __future__ import annotations

import json
from typing import Any

import orjson

from cascade_extproc.types import Api, Request

CONTENT_TYPE_JSON = "application/json"


class CodecError(ValueError):
    """The bytes are not a request or response this codec understands."""


def require(ok: Any, message: str) -> None:
    """A request check: CodecError with `message` unless `ok`."""
    if not ok:
        raise CodecError(message)


def positive_int(value: Any) -> bool:
    return type(value) is int and value >= 1


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
    _CHECKS[api](body)
    # orjson keeps the last of duplicated keys; the provider may refuse them, or read the first.
    splice.check_unique_top_level_keys(raw, body)
    return Request(api=api, body=body, headers=headers, raw=raw)


def dumps(obj: Any) -> bytes:
    """Compact JSON, non-ASCII kept as UTF-8 like the providers' own SDKs send it."""
    try:
        return orjson.dumps(obj)
    except TypeError:  # integers past 64 bits (a provider's tool arguments may hold one)
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


# The per-API request checks (the modules import CodecError and require from here).
from cascade_extproc.codecs import anthropic, openai, splice  # noqa: E402

_CHECKS = {Api.ANTHROPIC: anthropic.check_request, Api.OPENAI: openai.check_request}
