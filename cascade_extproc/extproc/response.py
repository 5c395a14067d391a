"""One provider answer passing through Envoy: metered, kept or rewritten for the client."""
from __future__ import annotations

from cascade_extproc import codecs
from cascade_extproc._proto import external_processor_pb2 as ep
from cascade_extproc.codecs import anthropic, openai, sse
from cascade_extproc.codecs.translate import ResponsePlan, ResponseTranslator, StreamTap, read_json
from cascade_extproc.extproc import mutations
from cascade_extproc.extproc.mutations import Mode
from cascade_extproc.types import Api, Response, StreamError, Usage


# A draft's error is never the client's to see: the client's own credentials and provider were not
# used (a refused draft key, a draft's smaller context window, its overload). From this status
# on, the strong model answers instead: with the answer, or with its own, authoritative error.
RECOVER_FROM = 400


class ResponseSide:
    """Envoy hands us the response headers, then (as we choose) the body whole or in chunks.

    With `recover` (the skipped path), a failed draft is not the end: `needs_recovery` tells the
    exchange to answer from the strong model instead, and a stream cut short is ended with an
    error event in the client's format rather than left looking complete."""

    def __init__(self, upstream: Api, plan: ResponsePlan | None = None, recover: bool = False,
                 client: Api | None = None):
        self.upstream = upstream
        self.plan = plan if plan is not None and plan.rewriting else None
        self.status = 0
        self.usage: Usage | None = None
        self.answer: Response | None = None
        self.finished = False
        self.recover = recover
        self.client = client or upstream
        self.needs_recovery = False
        self._mode = ""  # "stream" | "json"
        self._translator = ResponseTranslator(self.plan) if self.plan else None
        self._tap = self._translator.tap if self._translator else StreamTap(upstream)

    def on_headers(self, msg: ep.HttpHeaders) -> ep.ProcessingResponse:
        headers = {h.key.lower(): h.raw_value.decode("utf-8", "replace") or h.value for h in msg.headers.headers}
        self.status = int(headers.get(":status", "0") or 0)
        if self.recover and self.status >= RECOVER_FROM:
            self.needs_recovery = True
            return mutations.passthrough("response_headers")  # not sent: the exchange answers instead
        if msg.end_of_stream:
            self.finished = True
            return mutations.response_headers(Mode.NONE)
        # A body that changes size loses its content-length: Envoy refuses a mismatch.
        if self.status >= 300:
            self.finished = True  # nothing to meter in an error, nothing to rewrite
            return mutations.response_headers(Mode.NONE)
        if headers.get("content-type", "").startswith("text/event-stream"):
            self._mode = "stream"
            if self.plan:
                return mutations.response_headers(Mode.STREAMED, {"content-type": sse.CONTENT_TYPE},
                                                  ["content-length"])
            return mutations.response_headers(Mode.STREAMED)
        self._mode = "json"
        if self.plan:
            return mutations.response_headers(Mode.BUFFERED, {"content-type": codecs.CONTENT_TYPE_JSON},
                                              ["content-length"])
        return mutations.response_headers(Mode.BUFFERED)

    def on_body(self, msg: ep.HttpBody) -> ep.ProcessingResponse:
        end = msg.end_of_stream
        self.finished = self.finished or end
        if self._mode == "stream":
            return self._stream(msg.body, end)
        self.answer = read_json(self.upstream, msg.body)
        self.usage = self.answer.usage if self.answer else None
        if self.answer is None and self.recover:
            self.needs_recovery = True  # a 200 that is not an answer
            return mutations.passthrough("response_body")
        if self._translator is None or self.answer is None:
            return mutations.passthrough("response_body")  # unparseable: the client sees it as it is
        return mutations.response_body(self._translator.json_body(self.answer))

    def _stream(self, chunk: bytes, end: bool) -> ep.ProcessingResponse:
        if self._translator is not None:
            try:
                out = self._translator.stream_chunk(chunk, end)
            except Exception:
                # Mid-stream there is no way back: end the stream the client's way.
                out = _stream_error(self._translator.plan)
        else:
            self._tap.feed(chunk, end)
            out = None
        self.usage = self._tap.usage
        if end:
            self.answer = self._tap.response()
            if self.recover and not self._tap.complete:
                # The draft's stream stopped short: say so, so no SDK takes it for a whole answer.
                out = (chunk if out is None else out) + _stream_error(self.client, "the draft provider's stream ended early")
        return mutations.passthrough("response_body") if out is None else mutations.response_body(out)


def _stream_error(client: Api | ResponsePlan, message: str = "the draft provider's stream could not be translated") -> bytes:
    api = client.client if isinstance(client, ResponsePlan) else client
    enc = anthropic.StreamEncoder() if api is Api.ANTHROPIC else openai.StreamEncoder(0, False)
    return enc.encode(StreamError(502, message))
