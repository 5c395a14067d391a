"""One provider answer passing through Envoy: metered, and kept for shadow comparisons (the
answer side of the direct, fallback and shadow paths: paths/base.AnswerSide)."""
from __future__ import annotations

from typing import Callable

from cascade_extproc._proto import external_processor_pb2 as ep
from cascade_extproc.codecs.translate import StreamTap, read_json
from cascade_extproc.extproc.access_log import Logged
from cascade_extproc.extproc import mutations
from cascade_extproc.extproc.mutations import Mode
from cascade_extproc.metering.ledger import RequestRecord
from cascade_extproc.types import Api, Response, Usage


class ResponseSide:
    """Envoy hands us the response headers, then (as we choose) the body whole or in chunks: we
    meter it, and keep the answer (shadow comparisons)."""

    def __init__(self, upstream: Api):
        self.upstream = upstream
        self.status = 0
        self.usage: Usage | None = None
        self.answer: Response | None = None
        self.finished = False
        self._mode = ""  # "stream" | "json"
        self._tap = StreamTap(upstream)
        self.on_settled: Callable[[Response | None], object] | None = None  # shadow: the strong answer

    def on_headers(self, msg: ep.HttpHeaders) -> ep.ProcessingResponse:
        headers = {h.key.lower(): h.raw_value.decode("utf-8", "replace") or h.value for h in msg.headers.headers}
        self.status = int(headers.get(":status", "0") or 0)
        if msg.end_of_stream:
            self.finished = True
            return mutations.response_headers(Mode.NONE)
        if self.status >= 300:
            self.finished = True  # nothing to meter in an error
            return mutations.response_headers(Mode.NONE)
        if headers.get("content-type", "").startswith("text/event-stream"):
            self._mode = "stream"
            return mutations.response_headers(Mode.STREAMED)
        self._mode = "json"
        return mutations.response_headers(Mode.BUFFERED)

    def on_body(self, msg: ep.HttpBody) -> ep.ProcessingResponse:
        end = msg.end_of_stream
        self.finished = self.finished or end
        if self._mode == "stream":
            return self._stream(msg.body, end)
        self.answer = read_json(self.upstream, msg.body)
        self.usage = self.answer.usage if self.answer else None
        return mutations.passthrough("response_body")

    def _stream(self, chunk: bytes, end: bool) -> ep.ProcessingResponse:
        self._tap.feed(chunk, end)
        self.usage = self._tap.usage
        if end:
            self.answer = self._tap.response()
        return mutations.passthrough("response_body")

    def settle(self, rec: RequestRecord) -> bool:
        """The record is being finished: the strong model's usage and the model that answered."""
        if self.usage is not None:
            rec.usage["strong"] = self.usage
            if self.answer is not None and self.answer.model:
                rec.served_model = self.answer.model
        if self.on_settled is not None:
            self.on_settled(self.answer)
        return True


def logged_usage(upstream: Api, logged: Logged) -> tuple[Usage | None, str]:
    """What Envoy metered (its access log, extproc/access_log.py): the usage and the model that
    answered, read by the same decoders as an answer passing through the server, so the numbers
    are the same to the token."""
    if logged.status >= 300 or logged.status == 0 and logged.sse is None and logged.json is None:
        return None, ""
    if logged.sse is not None:
        tap = StreamTap(upstream)
        tap.feed(logged.sse, True)
        answer = tap.response()
        return tap.usage, answer.model if answer else ""
    if logged.json is not None:
        answer = read_json(upstream, logged.json)
        return (answer.usage, answer.model) if answer else (None, "")
    return None, ""
