"""Server-sent events: encode frames."""
from __future__ import annotations

from typing import Any

from cascade_extproc.codecs import dumps

CONTENT_TYPE = "text/event-stream; charset=utf-8"


def frame(data: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    payload = data if isinstance(data, bytes) else dumps(data)
    return head + b"data: " + payload + b"\n\n"
