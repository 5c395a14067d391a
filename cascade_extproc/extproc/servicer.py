"""The gRPC ext_proc stream loop. Decisions live in handler.Exchange.

Envoy runs three ext_proc filters against this one service (envoy_config._ext_proc_filters):
a stream opened with a request body comes from the request filter; one opened with response
headers or body comes from the answer or meter filter and names its request by the `xid` the
request filter's metadata carried. Envoy ignores what we send on a meter stream
(observability mode), so we send nothing there."""
from __future__ import annotations

import secrets
import time
from typing import AsyncIterator, Callable

from cascade_extproc._proto import external_processor_pb2 as ep
from cascade_extproc._proto import external_processor_pb2_grpc as ep_grpc
from cascade_extproc.extproc import mutations
from cascade_extproc.extproc.handler import Exchange, Runtime, headers_from
from cascade_extproc.headers import ANSWER_KEY, ANSWER_METER, ANSWER_REWRITE, METADATA_NAMESPACE, RESPONSE_CODE
from cascade_extproc.ledger import Ledger

XID_KEY = "xid"
# Envoy gives up on an answer after the route timeout (600 s); a request still waiting for its
# answer after this long lost it (client gone before the headers): it is recorded as it stands.
MAX_WAIT_S = 660.0


class AwaitingAnswers:
    """Exchanges whose answer the server asked to see, by xid, until that answer's stream opens."""

    def __init__(self, max_wait_s: float = MAX_WAIT_S):
        self.max_wait_s = max_wait_s
        self._items: dict[str, tuple[float, Exchange]] = {}

    def add(self, exchange: Exchange) -> str:
        self.expire()
        xid = secrets.token_hex(8)
        self._items[xid] = (time.monotonic(), exchange)
        return xid

    def take(self, xid: str) -> Exchange | None:
        item = self._items.pop(xid, None)
        return item[1] if item else None

    def expire(self) -> None:
        cutoff = time.monotonic() - self.max_wait_s
        while self._items:
            xid = next(iter(self._items))  # the oldest: dicts keep insertion order
            since, exchange = self._items[xid]
            if since > cutoff:
                break
            del self._items[xid]
            exchange.finish()

    def __len__(self) -> int:
        return len(self._items)


class ExternalProcessor(ep_grpc.ExternalProcessorServicer):
    def __init__(self, runtime: Callable[[], Runtime], ledger: Ledger):
        self._runtime = runtime  # a getter, so a config reload applies to the next request
        self._ledger = ledger
        self.awaiting = AwaitingAnswers()
        counter = ledger.metrics.extproc_messages
        kinds = [f.name for f in ep.ProcessingRequest.DESCRIPTOR.oneofs_by_name["request"].fields]
        self._counters = {(kind, observe): counter.labels(kind, "observing" if observe else "blocking")
                          for kind in kinds for observe in (False, True)}

    async def Process(self, request_iterator: AsyncIterator[ep.ProcessingRequest],
                      context) -> AsyncIterator[ep.ProcessingResponse]:
        messages = self._counted(request_iterator)
        first = await anext(messages, None)
        if first is None:
            return
        kind = first.WhichOneof("request")
        if kind == "request_body":
            stream = self._request(first, messages)
        elif kind in ("response_headers", "response_body"):
            stream = self._answer(first, messages)
        else:
            stream = self._untouched(first, messages)
        async for resp in stream:
            yield resp

    async def _counted(self, messages: AsyncIterator[ep.ProcessingRequest]) -> AsyncIterator[ep.ProcessingRequest]:
        async for msg in messages:
            counter = self._counters.get((msg.WhichOneof("request"), msg.observability_mode))
            if counter is not None:
                counter.inc()
            yield msg

    async def _request(self, first: ep.ProcessingRequest, rest: AsyncIterator[ep.ProcessingRequest]
                       ) -> AsyncIterator[ep.ProcessingResponse]:
        exchange = Exchange(self._runtime(), self._ledger, headers_from(first.attributes))
        handed_over = False
        try:
            async for resp in exchange.on_body(first.request_body):
                if exchange.response is not None and resp.WhichOneof("response") == "request_body":
                    # The answer comes on another stream: tell Envoy which filter, and which request.
                    mode = ANSWER_REWRITE if exchange.response.changes_answer else ANSWER_METER
                    resp.dynamic_metadata.fields[METADATA_NAMESPACE].struct_value.update(
                        {ANSWER_KEY: mode, XID_KEY: self.awaiting.add(exchange)})
                    handed_over = True
                yield resp
            async for msg in rest:
                yield mutations.passthrough(msg.WhichOneof("request") or "request_body")
        finally:
            if not handed_over:
                exchange.finish()  # recorded now (recording twice is a no-op)

    async def _answer(self, first: ep.ProcessingRequest, rest: AsyncIterator[ep.ProcessingRequest]
                      ) -> AsyncIterator[ep.ProcessingResponse]:
        observe = first.observability_mode
        md = first.metadata_context.filter_metadata.get(METADATA_NAMESPACE)
        xid = md.fields[XID_KEY].string_value if md is not None and XID_KEY in md.fields else ""
        exchange = self.awaiting.take(xid) if xid else None
        if exchange is not None and kind_of(first) == "response_body":
            status = response_code(first)
            if status:
                exchange.on_response_status(status)
        try:
            msg: ep.ProcessingRequest | None = first
            while msg is not None:
                kind = msg.WhichOneof("request")
                if exchange is None:
                    replies = _one(mutations.passthrough(kind or "response_body"))
                elif kind == "response_headers":
                    replies = exchange.on_response_headers(msg.response_headers)
                elif kind == "response_body":
                    replies = exchange.on_response_body(msg.response_body)
                else:
                    replies = _one(mutations.passthrough(kind or "response_body"))
                async for resp in replies:
                    if not observe:
                        yield resp
                if observe and (exchange is None or exchange.recorded):
                    return  # nothing more to read: close, so Envoy need not hold the stream
                msg = await anext(rest, None)
        finally:
            if exchange is not None:
                # The stream ended before the answer did (client gone, upstream reset): record what we know.
                exchange.finish()

    async def _untouched(self, first: ep.ProcessingRequest, rest: AsyncIterator[ep.ProcessingRequest]
                         ) -> AsyncIterator[ep.ProcessingResponse]:
        """A phase our filters do not send (an older bootstrap): continue, change nothing."""
        msg: ep.ProcessingRequest | None = first
        while msg is not None:
            if not msg.observability_mode:
                yield mutations.passthrough(msg.WhichOneof("request") or "request_body")
            msg = await anext(rest, None)


def kind_of(msg: ep.ProcessingRequest) -> str | None:
    return msg.WhichOneof("request")


def response_code(msg: ep.ProcessingRequest) -> int:
    """The `response.code` attribute (sent with the first message when there is no headers one)."""
    for struct in msg.attributes.values():
        value = struct.fields.get(RESPONSE_CODE)
        if value is not None and value.WhichOneof("kind") == "number_value":
            return int(value.number_value)
    return 0


async def _one(resp: ep.ProcessingResponse) -> AsyncIterator[ep.ProcessingResponse]:
    yield resp
