"""Metering off the critical path: the answers Envoy meters itself, brought back by its access log.

For a direct or fallback call the server answers the request body and ends the ext_proc stream
(one message per call). Envoy's usage filter (deploy/lua/usage_chunk.lua) keeps what the usage
needs in dynamic metadata as the answer passes (the SSE events that carry it, or a JSON answer's
model and usage), and Envoy's gRPC access log (envoy.access_loggers.http_grpc, batched, only for
requests the server flagged with METER_KEY) streams the finished request's entry here. The entry
is joined to the waiting record by the server's own token (not the request id, which a client
may choose); a record whose entry never comes (Envoy restarted, the log dropped under load) is
finished without usage after EXPIRE_S, and at most MAX_WAITING wait at once."""
from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import secrets
import time
from dataclasses import dataclass
from typing import AsyncIterator, Callable

from cascade_extproc._proto import als_pb2 as als
from cascade_extproc._proto import als_pb2_grpc as als_grpc
from cascade_extproc.headers import ANSWER_JSON_KEY, ANSWER_SSE_KEY, METADATA_NAMESPACE, METER_KEY

log = logging.getLogger("cascade_extproc.access_log")

# The longest an answer can take (the routes' 600 s timeout) and some: a record waits no longer.
EXPIRE_S = 660.0
MAX_WAITING = 1 << 16


@dataclass
class Logged:
    """What Envoy's access log says of a finished answer."""

    status: int = 0
    latency_s: float | None = None  # from the request's last byte in to the answer's last byte out
    sse: bytes | None = None  # the SSE events that carry usage, as they passed
    json: bytes | None = None  # a JSON answer's model and usage


Done = Callable[[Logged | None], None]  # None: the entry never came


class AwaitingLog:
    """Records waiting for their access log entry: bounded, expiring, keyed by the server's token."""

    def __init__(self, expire_s: float = EXPIRE_S, max_waiting: int = MAX_WAITING,
                 clock: Callable[[], float] = time.monotonic):
        self._waiting: collections.OrderedDict[str, tuple[float, Done]] = collections.OrderedDict()
        self._expire_s = expire_s
        self._max = max_waiting
        self._clock = clock
        self._prefix = secrets.token_hex(4)  # tokens of an earlier server process never match
        self._ids = itertools.count(1)

    def __len__(self) -> int:
        return len(self._waiting)

    def expect(self, done: Done) -> str:
        now = self._clock()
        self._expire(now)
        token = f"{self._prefix}-{next(self._ids)}"
        self._waiting[token] = (now, done)
        return token

    def deliver(self, token: str, logged: Logged | None) -> bool:
        item = self._waiting.pop(token, None)
        if item is None:
            return False
        _call(item[1], logged)
        return True

    def _expire(self, now: float) -> None:
        w = self._waiting
        while w:
            token, (since, done) = next(iter(w.items()))
            if len(w) < self._max and now - since < self._expire_s:
                return
            del w[token]
            _call(done, None)

    def close(self) -> None:
        """Shutting down: whatever still waits is recorded with what is known."""
        while self._waiting:
            _, (_, done) = self._waiting.popitem(last=False)
            _call(done, None)


def _call(done: Done, logged: Logged | None) -> None:
    try:
        done(logged)
    except Exception:  # one bad record must not stop the log stream
        log.exception("finishing a metered record failed")


def _seconds(d) -> float:
    return d.seconds + d.nanos / 1e9


def logged_of(entry) -> tuple[str, Logged] | None:
    """An access log entry → (token, what it says); None when it is not one of ours."""
    meta = entry.common_properties.metadata.filter_metadata.get(METADATA_NAMESPACE)
    if meta is None or METER_KEY not in meta.fields:
        return None
    fields = meta.fields
    common = entry.common_properties
    latency = None
    if common.HasField("time_to_last_downstream_tx_byte"):
        latency = _seconds(common.time_to_last_downstream_tx_byte) - _seconds(common.time_to_last_rx_byte)
    elif common.HasField("duration"):
        latency = _seconds(common.duration)
    sse = fields[ANSWER_SSE_KEY].string_value.encode() if ANSWER_SSE_KEY in fields else None
    body = fields[ANSWER_JSON_KEY].string_value.encode() if ANSWER_JSON_KEY in fields else None
    return fields[METER_KEY].string_value, Logged(entry.response.response_code.value, latency, sse, body)


class AccessLogSink(als_grpc.AccessLogServiceServicer):
    """envoy.service.accesslog.v3.AccessLogService on the sidecar's gRPC server: one long stream
    per Envoy worker, entries in batches."""

    def __init__(self, awaiting: AwaitingLog):
        self.awaiting = awaiting
        self._streams: set[asyncio.Task] = set()

    async def StreamAccessLogs(self, request_iterator: AsyncIterator[als.StreamAccessLogsMessage],
                               context) -> als.StreamAccessLogsResponse:
        task = asyncio.current_task()
        if task is not None:
            self._streams.add(task)
        try:
            async for msg in request_iterator:
                for entry in msg.http_logs.log_entry:
                    found = logged_of(entry)
                    if found is not None:
                        self.awaiting.deliver(*found)
        finally:
            self._streams.discard(task)  # type: ignore[arg-type]
        return als.StreamAccessLogsResponse()

    async def close(self, drain_s: float) -> None:
        """Shutting down: the entries of answers just finished still arrive for `drain_s` (Envoy
        flushes its batches every FLUSH_INTERVAL), then the log streams end (Envoy never ends
        them, so they would hold the server's graceful stop for its whole grace) and what still
        waits is recorded without usage."""
        await asyncio.sleep(drain_s)
        for task in list(self._streams):
            task.cancel()
        self.awaiting.close()
