"""What every codec shares (pure): the error they raise, the request-check helpers, compact JSON."""
from __future__ import annotations

import json
from typing import Any

import orjson

CONTENT_TYPE_JSON = "application/json"


class CodecError(ValueError):
    """The bytes are not a request or response this codec understands."""


def require(ok: Any, message: str) -> None:
    """A request check: CodecError with `message` unless `ok`."""
    if not ok:
        raise CodecError(message)


def positive_int(value: Any) -> bool:
    return type(value) is int and value >= 1


def dumps(obj: Any) -> bytes:
    """Compact JSON, non-ASCII kept as UTF-8 like the providers' own SDKs send it."""
    try:
        return orjson.dumps(obj)
    except TypeError:  # integers past 64 bits (a provider's tool arguments may hold one)
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()
