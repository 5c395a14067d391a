"""Edit a JSON request body in place, byte for byte, without re-serializing it (pure).

Prompt caches key on the exact prefix the provider sees. Re-encoding a body (key order,
whitespace, unicode escapes) can change bytes the client's cache entries were built from, so
requests derived from the client's (the verify request, a model swap) are made by splicing.
"""
from __future__ import annotations

import json
import re
from typing import Any

from cascade_extproc.codecs import CodecError

# A JSON string (unrolled loop: fast on long strings) or a bracket.
_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.S)
_SCALAR = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[^,}\]\s]+', re.S)
_WS = b" \t\r\n"


def _top_level_value(raw: bytes, key: str) -> tuple[int, int]:
    """(start, end) offsets of the value of top-level `key` in the JSON object `raw`."""
    want = json.dumps(key).encode()
    depth = 0
    for m in _TOKEN.finditer(raw):
        tok = m.group()
        if tok[0] == 0x22:  # a string
            if depth == 1 and tok == want:
                colon = _skip_ws(raw, m.end())
                if raw[colon:colon + 1] == b":":
                    start = _skip_ws(raw, colon + 1)
                    return start, _value_end(raw, start)
            continue
        depth += 1 if tok in (b"[", b"{") else -1
    raise CodecError(f"no top-level {key!r}")


def _skip_ws(raw: bytes, i: int) -> int:
    while i < len(raw) and raw[i] in _WS:
        i += 1
    return i


def _value_end(raw: bytes, start: int) -> int:
    """End offset (exclusive) of the JSON value that starts at `start`."""
    if raw[start:start + 1] not in (b"[", b"{"):
        m = _SCALAR.match(raw, start)
        if not m:
            raise CodecError("bad JSON value")
        return m.end()
    depth = 0
    for m in _TOKEN.finditer(raw, start):
        tok = m.group()
        if tok[0] == 0x22:
            continue
        depth += 1 if tok in (b"[", b"{") else -1
        if depth == 0:
            return m.end()
    raise CodecError("unterminated JSON value")


def append_message(raw: bytes, message: dict[str, Any]) -> bytes:
    """`raw` with `message` appended to its top-level `messages` array; every other byte kept."""
    start, end = _top_level_value(raw, "messages")
    if raw[start:start + 1] != b"[":
        raise CodecError("messages is not an array")
    close = end - 1
    empty = raw[start + 1:close].strip(_WS) == b""
    encoded = json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode()
    return raw[:close] + (b"" if empty else b",") + encoded + raw[close:]


def replace_value(raw: bytes, key: str, value: Any) -> bytes:
    """`raw` with top-level `key` set to `value` (added at the end when absent)."""
    encoded = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
    try:
        start, end = _top_level_value(raw, key)
    except CodecError:
        close = raw.rstrip(_WS).rfind(b"}")
        empty = raw[raw.find(b"{") + 1:close].strip(_WS) == b""
        return raw[:close] + (b"" if empty else b",") + json.dumps(key).encode() + b":" + encoded + raw[close:]
    return raw[:start] + encoded + raw[end:]
