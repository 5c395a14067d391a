"""Server-sent events: an incremental parser and a frame encoder (pure)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cascade_extproc.codecs.base import dumps

CONTENT_TYPE = "text/event-stream; charset=utf-8"


@dataclass(frozen=True)
class SseEvent:
    event: str  # "message" when the frame named none
    data: str


def frame(data: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    payload = data if isinstance(data, bytes) else dumps(data)
    return head + b"data: " + payload + b"\n\n"


class WholeFrames:
    """A stream passed through as it comes, cut at frame ends: what `feed` returns ends with a
    whole frame, the rest waits for the next chunk. So an event added to the stream (an early end,
    an error) lands between two frames, never inside one."""

    _ENDS = (b"\n\n", b"\r\n\r\n", b"\r\r")

    def __init__(self) -> None:
        self._rest = b""

    def feed(self, chunk: bytes) -> bytes:
        buf = self._rest + chunk if self._rest else chunk
        end = max((i + len(e) for e in self._ENDS if (i := buf.rfind(e)) != -1), default=0)
        self._rest = buf[end:]
        return buf[:end]

    def rest(self) -> bytes:
        """What is left at the end of the stream (a last frame without its blank line)."""
        rest, self._rest = self._rest, b""
        return rest


class SseParser:
    """Feed bytes as they arrive, split anywhere; get back the complete events.

    Follows the WHATWG rules that matter here: CRLF, CR or LF line ends, multi-line data joined
    with newlines, comments (":") ignored, a single space after the colon dropped.
    """

    def __init__(self) -> None:
        self._buf = b""
        self._event = ""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[SseEvent]:
        # Walk an offset instead of re-slicing and re-searching the whole buffer per line: that
        # made one large chunk (a buffered stream) quadratic.
        buf = self._buf + chunk if self._buf else chunk
        out: list[SseEvent] = []
        pos = 0
        while True:
            lf = buf.find(b"\n", pos)
            cr = buf.find(b"\r", pos, len(buf) if lf == -1 else lf)
            if cr == -1 and lf == -1:
                break
            if cr == -1:
                line, pos = buf[pos:lf], lf + 1
            elif cr == len(buf) - 1:
                break  # a CR at the end may be the first half of CRLF: wait
            else:
                line, pos = buf[pos:cr], cr + 2 if buf[cr + 1:cr + 2] == b"\n" else cr + 1
            self._line(line.decode("utf-8", "replace"), out)
        self._buf = buf[pos:]
        return out

    def _line(self, line: str, out: list[SseEvent]) -> None:
        if not line:
            if self._data:
                out.append(SseEvent(self._event or "message", "\n".join(self._data)))
            self._event, self._data = "", []
            return
        if line.startswith(":"):
            return
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)

    def close(self) -> list[SseEvent]:
        """End of input: a last event without its blank line still counts."""
        out: list[SseEvent] = []
        if self._buf:
            self._line(self._buf.rstrip(b"\r").decode("utf-8", "replace"), out)
            self._buf = b""
        self._line("", out)
        return out
