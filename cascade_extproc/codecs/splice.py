"""Edit a JSON request body in place, byte for byte, without re-serializing it (pure).

Prompt caches key on the exact prefix the provider sees. Re-encoding a body (key order,
whitespace, unicode escapes) can change bytes the client's cache entries were built from, so
requests derived from the client's (the verify request, a model swap) are made by splicing.
"""
from __future__ import annotations

import json
import re
from typing import Any

import orjson

from cascade_extproc.codecs.base import CodecError

# A JSON string (unrolled loop: fast on long strings) or a bracket.
_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.S)
_SCALAR = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[^,}\]\s]+', re.S)
_WS = b" \t\r\n"


def check_unique_top_level_keys(raw: bytes, body: dict[str, Any]) -> None:
    """CodecError when the JSON object `raw` (parsed as `body`, which kept the last of any
    duplicated key) holds a top-level key twice.

    Scanning the raw bytes for the top-level keys with the tokenizer above costs ~10 parses (it
    runs per string), so, cheapest first:
    - `body` serialized again is `raw` (compact JSON, what SDKs and Claude Code send): no
      duplicate, as one would be a member more. Costs a serialization.
    - the same, whitespace aside (spaced JSON): strings keep theirs in both.
    - otherwise (escapes, number spellings): every occurrence of a top-level key's name is renamed
      to a unique one and the result parsed again: the top level then shows each occurrence.
    - key names that cannot be renamed safely: a parse that keeps every pair (slowest)."""
    canonical = orjson.dumps(body)
    if canonical == raw:
        return
    # Tried on what looks spaced from its first bytes (two copies of the body cost ~1/2 parse);
    # a `raw` no longer than `canonical` cannot match that way.
    if (len(raw) > len(canonical) and (b'": ' in raw[:256] or b'", ' in raw[:256])
            and canonical.translate(None, _WS) == raw.translate(None, _WS)):
        return
    names = _renamed_top_level_keys(raw, body)
    if names is None:
        try:
            names = [k for k, _ in json.loads(raw, object_pairs_hook=list)]
        except (ValueError, RecursionError):  # past the json module's nesting limit
            raise CodecError("body could not be checked for duplicate keys") from None
    if len(names) != len(set(names)):
        seen: set[str] = set()
        raise CodecError(f"duplicate top-level key {next(k for k in names if k in seen or seen.add(k))!r}")


_SAFE_KEY = re.compile(r"[A-Za-z0-9_.-]+")


def _renamed_top_level_keys(raw: bytes, body: dict[str, Any]) -> list[str] | None:
    """The top-level key of every top-level member of `raw`, in order, or None when this way
    cannot tell. Each `"name"` (a top-level key's name, in quotes) becomes `"\\u0001<n>"`, n
    unique: a quote inside a string is escaped, so such a match is a whole string (or sits
    inside one, where the rename keeps it one), and the top level of the result holds one
    renamed key per top-level member, duplicates included."""
    if not body or not all(_SAFE_KEY.fullmatch(k) for k in body):
        return None
    found: list[str] = []

    def rename(m: re.Match[bytes]) -> bytes:
        found.append(m.group(1).decode())
        return b'"\\u0001%d"' % (len(found) - 1)

    pattern = re.compile(b'"(' + b"|".join(re.escape(k.encode()) for k in body) + b')"')
    try:
        renamed = orjson.loads(pattern.sub(rename, raw))
    except orjson.JSONDecodeError:
        return None
    if not isinstance(renamed, dict) or not all(k.startswith("\x01") for k in renamed):
        return None  # a key written another way (escaped): not renamed
    return [found[int(k[1:])] for k in renamed]


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
