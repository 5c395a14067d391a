"""The gRPC ext_proc stream loop. Decisions live in handler.Exchange."""
from __future__ import annotations

from typing import AsyncIterator, Callable

from cascade_extproc._proto import external_processor_pb2 as ep
from cascade_extproc._proto import external_processor_pb2_grpc as ep_grpc
from cascade_extproc.extproc import mutations
from cascade_extproc.extproc.handler import Exchange, Runtime
from cascade_extproc.ledger import Ledger


class ExternalProcessor(ep_grpc.ExternalProcessorServicer):
    def __init__(self, runtime: Callable[[], Runtime], ledger: Ledger):
        self._runtime = runtime  # a getter, so a config reload applies to the next request
        self._ledger = ledger

    async def Process(self, request_iterator: AsyncIterator[ep.ProcessingRequest],
                      context) -> AsyncIterator[ep.ProcessingResponse]:
        exchange = Exchange(self._runtime(), self._ledger)
        try:
            async for msg in request_iterator:
                kind = msg.WhichOneof("request")
                if kind == "request_headers":
                    yield exchange.on_headers(msg.request_headers)
                elif kind == "request_body":
                    async for resp in exchange.on_body(msg.request_body):
                        yield resp
                elif kind == "response_headers":
                    async for resp in exchange.on_response_headers(msg.response_headers):
                        yield resp
                elif kind == "response_body":
                    async for resp in exchange.on_response_body(msg.response_body):
                        yield resp
                elif kind is not None:
                    yield mutations.passthrough(kind)
        finally:
            # The stream ended before the answer did (client gone, upstream reset): record what we know.
            exchange.finish()
