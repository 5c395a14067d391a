"""Pure codecs between client/provider wire formats and the neutral types."""
from __future__ import annotations

import json
from typing import Any

import orjson

from cascade_extproc.types import Api, Request

CONTENT_TYPE_JSON = "application/json"


class CodecError(ValueError):
    """The bytes are not a request or response this codec understands."""


def parse_request(api: Api, raw: bytes, headers: dict[str, str]) -> Request:
    """Parse a client request body; raises CodecError on anything but a JSON object."""
    try:
        body = orjson.loads(raw)  # strict RFC 8259: no NaN, no lone surrogates, 64-bit integers
    except orjson.JSONDecodeError as exc:
        raise CodecError(f"body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise CodecError("body is not a JSON object")
    if not isinstance(body.get("messages"), list):
        raise CodecError("body has no messages list")
    return Request(api=api, body=body, headers=headers, raw=raw)


def dumps(obj: Any) -> bytes:
    """Compact JSON, non-ASCII kept as UTF-8 like the providers' own SDKs send it."""
    try:
        return orjson.dumps(obj)
    except TypeError:  # integers past 64 bits (a provider's tool arguments may hold one)
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()
