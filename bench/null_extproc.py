"""The floor: an ext_proc server that does nothing (continues every message), on the same
Python gRPC stack as cascade-extproc. bench/overhead.py runs it behind the same Envoy filters,
so (its latency - Envoy alone) is what any Python ext_proc server pays before doing any work.

    .venv/bin/python bench/null_extproc.py unix:/tmp/null.sock
"""
from __future__ import annotations

import asyncio
import sys

import grpc

from cascade_extproc._proto import external_processor_pb2_grpc as ep_grpc
from cascade_extproc.extproc import mutations

LIMIT = 64 << 20


class Continue(ep_grpc.ExternalProcessorServicer):
    async def Process(self, request_iterator, context):
        async for msg in request_iterator:
            if not msg.observability_mode:
                yield mutations.passthrough(msg.WhichOneof("request") or "request_body")


async def serve(address: str) -> None:
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", LIMIT),
                                      ("grpc.max_send_message_length", LIMIT)])
    ep_grpc.add_ExternalProcessorServicer_to_server(Continue(), server)
    server.add_insecure_port(address)
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1]))
