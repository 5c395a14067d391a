"""Neutral stream events ⇄ complete responses (pure)."""
from __future__ import annotations

import json
from typing import Iterable, Iterator

from cascade_extproc.types import (Block, BlockDelta, BlockStart, BlockStop, Response, StopReason,
                                   StreamEnd, StreamError, StreamEvent, StreamStart, Usage)

# Long text goes out in deltas of this size, so a streaming client sees a real stream.
DELTA_CHARS = 64


def _chunks(s: str) -> list[str]:
    return [s[i:i + DELTA_CHARS] for i in range(0, len(s), DELTA_CHARS)]


def events_of(r: Response) -> Iterator[StreamEvent]:
    """The event sequence a provider would have streamed for `r`."""
    yield StreamStart(r.id, r.model, Usage(r.usage.input_tokens, 0, r.usage.cache_read_tokens,
                                           r.usage.cache_write_tokens))
    for i, b in enumerate(r.blocks):
        if b.type == "redacted_thinking":  # arrives whole, in its start event
            yield BlockStart(i, Block(b.type, text=b.text))
            yield BlockStop(i)
            continue
        yield BlockStart(i, Block(b.type, id=b.id, name=b.name))
        if b.type == "tool_use":
            for c in _chunks(json.dumps(b.input, ensure_ascii=False)):
                yield BlockDelta(i, "json", c)
        elif b.type == "thinking":
            for c in _chunks(b.text):
                yield BlockDelta(i, "thinking", c)
            yield BlockDelta(i, "signature", b.signature)
        else:
            for c in _chunks(b.text):
                yield BlockDelta(i, "text", c)
        yield BlockStop(i)
    yield StreamEnd(r.stop_reason, r.usage)


class StreamFailed(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Assembler:
    """Builds the complete Response from a stream of neutral events."""

    def __init__(self) -> None:
        self.id = ""
        self.model = ""
        self.blocks: dict[int, Block] = {}
        self._json: dict[int, list[str]] = {}
        self.stop_reason: StopReason | None = None
        self.usage = Usage()

    def feed(self, events: Iterable[StreamEvent]) -> None:
        for ev in events:
            self._one(ev)

    def _one(self, ev: StreamEvent) -> None:
        if isinstance(ev, StreamStart):
            self.id, self.model, self.usage = ev.id, ev.model, ev.usage
        elif isinstance(ev, BlockStart):
            self.blocks[ev.index] = Block(ev.block.type, id=ev.block.id, name=ev.block.name,
                                          text=ev.block.text)
            self._json[ev.index] = []
        elif isinstance(ev, BlockDelta):
            b = self.blocks[ev.index]
            if ev.kind == "json":
                self._json[ev.index].append(ev.value)
            elif ev.kind == "signature":
                b.signature += ev.value
            else:
                b.text += ev.value
        elif isinstance(ev, BlockStop):
            parts = self._json.get(ev.index)
            if parts:
                self.blocks[ev.index].input = json.loads("".join(parts))
        elif isinstance(ev, StreamEnd):
            self.stop_reason, self.usage = ev.stop_reason, ev.usage
        elif isinstance(ev, StreamError):
            raise StreamFailed(ev.status, ev.message)

    def response(self) -> Response:
        if self.stop_reason is None:
            raise StreamFailed(502, "stream ended before the response was complete")
        return Response(self.id, self.model, [self.blocks[i] for i in sorted(self.blocks)],
                        self.stop_reason, self.usage)
