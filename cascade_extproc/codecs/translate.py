"""Read, meter and rewrite a provider's answer on its way to the client (pure).

Used where a provider's answer passes on its way to the client: whole (JSON) or chunk by chunk
(SSE). We take the usage from it (metering), may keep the whole answer (shadow comparisons), and
may rewrite it: into the client's API, without the draft's reasoning. (The usage chunk asked for
on an OpenAI client's behalf is dropped by Envoy itself: cascade_extproc/deploy/lua/usage_chunk.lua.)
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from cascade_extproc.codecs.base import CodecError
from cascade_extproc.codecs.registry import for_api
from cascade_extproc.codecs.sse import SseParser
from cascade_extproc.codecs.stream import Assembler, StreamFailed
from cascade_extproc.types import (Api, BlockDelta, BlockStart, BlockStop, Response, StopReason, StreamEnd,
                                   StreamEvent, StreamStart, Usage)

_PARSE_ERRORS = (ValueError, KeyError, TypeError, AttributeError, CodecError)


@dataclass(frozen=True)
class ResponsePlan:
    client: Api  # the format the client expects
    upstream: Api  # the format the provider answers in
    strip_thinking: bool  # drop the draft's reasoning (see provenance: never shown to the client)
    include_usage: bool  # OpenAI clients: did they ask for the usage chunk
    created: int

    @property
    def translating(self) -> bool:
        return self.client is not self.upstream

    @property
    def rewriting(self) -> bool:
        return self.translating or self.strip_thinking


class StreamTap:
    """Decodes an SSE stream as it passes: its events, its usage and, at the end, the answer."""

    def __init__(self, api: Api):
        self._parser = SseParser()
        self._decoder = for_api(api).StreamDecoder()
        self._assembler = Assembler()
        self.usage: Usage | None = None
        self.complete = False  # the stream's own end event arrived
        self.broken = False  # a frame we could not decode: metering gives up, the stream goes on

    def feed(self, chunk: bytes, end: bool = False) -> list[StreamEvent]:
        if self.broken:
            return []
        try:
            sse = self._parser.feed(chunk) + (self._parser.close() if end else [])
            events = [ev for e in sse for ev in self._decoder.feed(e)]
            self._assembler.feed(events)
        except (*_PARSE_ERRORS, StreamFailed):
            self.broken = True
            return []
        for ev in events:
            if isinstance(ev, (StreamStart, StreamEnd)):
                self.usage = ev.usage
            self.complete = self.complete or isinstance(ev, StreamEnd)
        return events

    def response(self) -> Response | None:
        try:
            return None if self.broken else self._assembler.response()
        except (*_PARSE_ERRORS, StreamFailed):
            return None


def read_json(api: Api, body: bytes) -> Response | None:
    """The answer in a JSON body, or None when it is not one."""
    try:
        return for_api(api).parse_response(json.loads(body))
    except _PARSE_ERRORS:
        return None


class ResponseTranslator:
    """Rewrites the answer into the client's API, without the draft's reasoning blocks."""

    def __init__(self, plan: ResponsePlan):
        self.plan = plan
        self.tap = StreamTap(plan.upstream)
        self.encoder = for_api(plan.client).StreamEncoder(plan.created, plan.include_usage)
        self._index: dict[int, int] = {}  # upstream block index -> the client's (reasoning dropped)
        self._dropped: set[int] = set()

    def json_body(self, resp: Response) -> bytes:
        if self.plan.strip_thinking:
            resp.blocks = [b for b in resp.blocks if b.type not in REASONING]
        return for_api(self.plan.client).encode_json(resp, self.plan.created)

    def stream_chunk(self, chunk: bytes, end: bool = False) -> bytes:
        return self.encode(self.tap.feed(chunk, end))

    def encode(self, events: list[StreamEvent]) -> bytes:
        return self.encode_shown(self.shown(events))

    def shown(self, events: list[StreamEvent]) -> list[StreamEvent]:
        """The events the client is to see: without the draft's reasoning (once per event)."""
        return [out for ev in events for out in self._strip(ev)]

    def encode_shown(self, events: list[StreamEvent]) -> bytes:
        return b"".join(self.encoder.encode(ev) for ev in events)

    def _strip(self, ev: StreamEvent) -> list[StreamEvent]:
        if not self.plan.strip_thinking or not isinstance(ev, (BlockStart, BlockDelta, BlockStop)):
            return [ev]
        if isinstance(ev, BlockStart):
            if ev.block.type in REASONING:
                self._dropped.add(ev.index)
                return []
            self._index[ev.index] = len(self._index)
        if ev.index in self._dropped:
            return []
        index = self._index.get(ev.index, ev.index)
        if index == ev.index:
            return [ev]
        if isinstance(ev, BlockStart):
            return [BlockStart(index, ev.block)]
        if isinstance(ev, BlockDelta):
            return [BlockDelta(index, ev.kind, ev.value)]
        return [BlockStop(index)]


class StreamCloser:
    """Ends the client's stream early, the way its API ends a stream stopped for length: the open
    blocks stopped, then Anthropic's message_delta (stop_reason max_tokens) and message_stop, or
    OpenAI's last chunk (finish_reason length; the usage chunk if the client asked for it) and
    [DONE]. Fed what the client was shown, in its own block numbering (`seen`)."""

    def __init__(self, plan: ResponsePlan, translator: ResponseTranslator | None = None):
        self.plan = plan
        self._encoder = translator.encoder if translator else None  # it has seen the stream it encoded
        self._start: StreamStart | None = None
        self._open: list[int] = []

    def seen(self, events: list[StreamEvent]) -> None:
        for ev in events:
            if isinstance(ev, StreamStart):
                self._start = ev
            elif isinstance(ev, BlockStart):
                self._open.append(ev.index)
            elif isinstance(ev, BlockStop) and ev.index in self._open:
                self._open.remove(ev.index)

    def close(self, usage: Usage, stop: StopReason = StopReason.MAX_TOKENS) -> bytes:
        enc = self._encoder
        if enc is None:  # passed through as the provider sent it: an encoder told how it started
            enc = for_api(self.plan.client).StreamEncoder(self.plan.created, self.plan.include_usage)
            if self._start is not None:
                enc.encode(self._start)
        events = [*(BlockStop(i) for i in self._open), StreamEnd(stop, usage)]
        self._open = []
        return b"".join(enc.encode(ev) for ev in events)


REASONING = ("thinking", "redacted_thinking")
