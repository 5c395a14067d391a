"""Rewrite a provider's answer for the client (pure): another API's format, tagged signatures.

Used on the skipped path, where Envoy streams the draft provider's answer to the client and
hands us the body on the way: whole (JSON) or chunk by chunk (SSE).
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from cascade_extproc.codecs import CodecError, anthropic, openai, provenance
from cascade_extproc.codecs.sse import SseParser
from cascade_extproc.types import Api, BlockDelta, BlockStart, BlockStop, StreamEvent

CODECS = {Api.ANTHROPIC: anthropic, Api.OPENAI: openai}


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


class ResponseTranslator:
    def __init__(self, plan: ResponsePlan):
        self.plan = plan
        self._parser = SseParser()
        self._decoder = CODECS[plan.upstream].StreamDecoder()
        self._encoder = (anthropic.StreamEncoder() if plan.client is Api.ANTHROPIC
                         else openai.StreamEncoder(plan.created, plan.include_usage))
        self._thinking: set[int] = set()

    def json_body(self, body: bytes) -> bytes:
        resp = CODECS[self.plan.upstream].parse_response(json.loads(body))
        if self.plan.tag_thinking:
            provenance.tag_response(resp)
        if self.plan.client is Api.ANTHROPIC:
            return anthropic.encode_json(resp)
        return openai.encode_json(resp, self.plan.created)

    def error_body(self, status: int, body: bytes) -> bytes:
        try:
            message = CODECS[self.plan.upstream].error_message(json.loads(body))
        except ValueError:
            message = ""
        return CODECS[self.plan.client].error_body(status, message or f"draft provider error {status}")

    def stream_chunk(self, chunk: bytes, end: bool = False) -> bytes:
        events = self._parser.feed(chunk)
        if end:
            events += self._parser.close()
        out = []
        for sse in events:
            for ev in self._decoder.feed(sse):
                out.extend(self._encoder.encode(e) for e in self._tag(ev))
        return b"".join(out)

    def _tag(self, ev: StreamEvent) -> list[StreamEvent]:
        if not self.plan.tag_thinking:
            return [ev]
        if isinstance(ev, BlockStart) and ev.block.type == "thinking":
            self._thinking.add(ev.index)
        elif isinstance(ev, BlockDelta) and ev.kind == "signature" and ev.index in self._thinking:
            self._thinking.discard(ev.index)  # signatures arrive in one delta: tag it once
            return [BlockDelta(ev.index, "signature", provenance.tag_signature(ev.value))]
        elif isinstance(ev, BlockStop) and ev.index in self._thinking:
            # No signature came (Chat Completions reasoning has none). The block is still the
            # draft's and must say so, as json_body's does: untagged, it would go to the strong
            # provider with an empty signature and be refused.
            self._thinking.discard(ev.index)
            return [BlockDelta(ev.index, "signature", provenance.tag_signature("")), ev]
        return [ev]


def translate_json(plan: ResponsePlan, body: bytes) -> bytes:
    try:
        return ResponseTranslator(plan).json_body(body)
    except (ValueError, KeyError, TypeError, AttributeError, CodecError):
        return body  # not what we expected: let the client see it as it is
