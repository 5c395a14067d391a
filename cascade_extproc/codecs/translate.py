"""Read, meter and rewrite a provider's answer on its way to the client (pure).

Used where Envoy streams a provider's answer to the client and hands it to us on the way:
whole (JSON) or chunk by chunk (SSE). We take the usage from it (metering), may keep the whole
answer (shadow comparisons), and may rewrite it: into the client's API, with the draft's thinking
signatures tagged. (The usage chunk we ask for on an OpenAI client's behalf is dropped by Envoy
itself, after us: cascade_extproc/lua/usage_chunk.lua.)
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from cascade_extproc.codecs import CodecError, anthropic, openai, provenance
from cascade_extproc.codecs.sse import SseParser
from cascade_extproc.codecs.stream import Assembler, StreamFailed
from cascade_extproc.types import (Api, BlockDelta, BlockStart, BlockStop, Response, StreamEnd,
                                   StreamEvent, StreamStart, Usage)

CODECS = {Api.ANTHROPIC: anthropic, Api.OPENAI: openai}
_PARSE_ERRORS = (ValueError, KeyError, TypeError, AttributeError, CodecError)


@dataclass(frozen=True)
class ResponsePlan:
    client: Api  # the format the client expects
    upstream: Api  # the format the provider answers in
    tag_thinking: bool  # mark the draft's thinking signatures (see provenance)
    include_usage: bool  # OpenAI clients: did they ask for the usage chunk
    created: int

    @property
    def translating(self) -> bool:
        return self.client is not self.upstream

    @property
    def rewriting(self) -> bool:
        return self.translating or self.tag_thinking


class StreamTap:
    """Decodes an SSE stream as it passes: its events, its usage and, at the end, the answer."""

    def __init__(self, api: Api):
        self._parser = SseParser()
        self._decoder = CODECS[api].StreamDecoder()
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
        return CODECS[api].parse_response(json.loads(body))
    except _PARSE_ERRORS:
        return None


class ResponseTranslator:
    """Rewrites the answer into the client's API, tagging the draft's thinking on the way."""

    def __init__(self, plan: ResponsePlan):
        self.plan = plan
        self.tap = StreamTap(plan.upstream)
        self._encoder = (anthropic.StreamEncoder() if plan.client is Api.ANTHROPIC
                         else openai.StreamEncoder(plan.created, plan.include_usage))
        self._thinking: set[int] = set()
        self._signed: set[int] = set()

    def json_body(self, resp: Response) -> bytes:
        if self.plan.tag_thinking:
            provenance.tag_response(resp)
        if self.plan.client is Api.ANTHROPIC:
            return anthropic.encode_json(resp)
        return openai.encode_json(resp, self.plan.created)

    def stream_chunk(self, chunk: bytes, end: bool = False) -> bytes:
        return b"".join(self._encoder.encode(out) for ev in self.tap.feed(chunk, end) for out in self._tag(ev))

    def _tag(self, ev: StreamEvent) -> list[StreamEvent]:
        if not self.plan.tag_thinking:
            return [ev]
        if isinstance(ev, BlockStart) and ev.block.type == "thinking":
            self._thinking.add(ev.index)
        elif isinstance(ev, BlockDelta) and ev.kind == "signature" and ev.index in self._thinking:
            self._signed.add(ev.index)
            return [BlockDelta(ev.index, "signature", provenance.tag_signature(ev.value))]
        elif isinstance(ev, BlockStop) and ev.index in self._thinking and ev.index not in self._signed:
            # Chat Completions reasoning has no signature: give it the draft tag all the same,
            # so the next turn does not hand an unsigned block to the strong provider.
            return [BlockDelta(ev.index, "signature", provenance.tag_signature("")), ev]
        return [ev]
