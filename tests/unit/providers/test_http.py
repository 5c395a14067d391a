"""The HTTP client maps every failure onto one kind of ProviderError (providers/errors.py), at the
edge, with the reason and status the metrics and the fallback reasons are made of."""
from __future__ import annotations

import asyncio
import socket
import time

import aiohttp
import pytest

from cascade_extproc.providers import (HttpProvider, ProviderDeadline, ProviderError, ProviderMalformed, ProviderStalled, ProviderStatus,
                                       ProviderTimeout, ProviderTransport)
from cascade_extproc.sim import SimProvider
from cascade_extproc.types import Api

BODY = b'{"model": "m", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}'
STREAM = BODY[:-1] + b', "stream": true}'
HEADERS = {"x-api-key": "k", "anthropic-version": "2023-06-01"}


def fail(fault, body=BODY, streamed=False, timeout_s=5.0) -> ProviderError:
    async def main():
        sim = SimProvider("anthropic")
        await sim.start()
        try:
            if fault:
                sim.fail_next(fault)
            async with aiohttp.ClientSession() as session:
                provider = HttpProvider(Api.ANTHROPIC, sim.url, session)
                with pytest.raises(ProviderError) as info:
                    if streamed:
                        async with provider.open(body, HEADERS, timeout_s) as up:
                            await up.read()
                    else:
                        await provider.complete(body, HEADERS, timeout_s)
                return info.value
        finally:
            await sim.stop()
    return asyncio.run(main())


def test_an_error_status_keeps_the_providers_status_and_message():
    for streamed in (False, True):
        err = fail(529, streamed=streamed)
        assert type(err) is ProviderStatus and (err.reason, err.status) == ("http error", 529)
        assert err.message == "simulated failure (529)"


def test_an_answer_that_is_not_one_is_malformed():
    err = fail("malformed")
    assert type(err) is ProviderMalformed and (err.reason, err.status) == ("malformed response", 200)


def test_a_quiet_stream_is_stalled_and_no_answer_in_time_a_timeout():
    assert type(fail("stall", STREAM, streamed=True, timeout_s=0.3)) is ProviderStalled
    err = fail("stall", BODY, timeout_s=0.3)
    assert type(err) is ProviderTimeout and err.reason == "timeout"


def test_a_failed_connection_is_transport():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed

    async def main():
        async with aiohttp.ClientSession() as session:
            with pytest.raises(ProviderError) as info:
                await HttpProvider(Api.ANTHROPIC, f"http://127.0.0.1:{port}", session).complete(BODY, HEADERS, 5)
            return info.value
    err = asyncio.run(main())
    assert type(err) is ProviderTransport and err.reason == "transport: ClientConnectorError"


def read_until(deadline_in_s: float, timeout_s: float, ttft_s: float = 0.0, tokens_per_s: float = 0.0):
    """Read a streamed answer with a deadline (from now): the error it ends with, or None, and
    how long it took."""
    async def main():
        sim = SimProvider("anthropic")
        sim.latency.ttft_s, sim.latency.tokens_per_s = ttft_s, tokens_per_s
        await sim.start()
        t0 = time.monotonic()
        try:
            async with aiohttp.ClientSession() as session:
                provider = HttpProvider(Api.ANTHROPIC, sim.url, session)
                try:
                    async with provider.open(STREAM, HEADERS, timeout_s, deadline=t0 + deadline_in_s) as up:
                        await up.read()
                except ProviderError as exc:
                    return exc, time.monotonic() - t0
                return None, time.monotonic() - t0
        finally:
            await sim.stop()
    return asyncio.run(main())


def test_past_the_callers_deadline_nothing_more_is_read():
    """A steady stream that would take ~2 s, every chunk in time: the deadline ends it."""
    err, took = read_until(0.5, timeout_s=5, tokens_per_s=10)
    assert type(err) is ProviderDeadline and err.reason == "deadline"
    assert 0.4 < took < 1.5
    # Waiting for the first token: the deadline, when it comes before the idle timeout
    err, took = read_until(0.3, timeout_s=5, ttft_s=2)
    assert type(err) is ProviderDeadline and took < 1.5
    # The idle timeout still wins when it comes first
    err, _ = read_until(5, timeout_s=0.3, ttft_s=2)
    assert type(err) is ProviderStalled
    assert read_until(5, timeout_s=5)[0] is None  # in time: no error


def test_the_deadline_holds_against_a_provider_that_never_pauses():
    """Chunks always waiting in the buffer (a fast runaway answer): reading them never suspends,
    so a zero timeout alone would never fire; the deadline is checked before each read."""
    from types import SimpleNamespace

    from cascade_extproc.providers.http import Upstream

    class Endless:
        async def readany(self):
            return b"data: {}\n\n"  # returns without ever suspending

    async def main():
        resp = SimpleNamespace(status=200, content_type="text/event-stream", content=Endless())
        up = Upstream(resp, 5, deadline=time.monotonic() + 0.05)  # type: ignore[arg-type]
        n = 0
        with pytest.raises(ProviderDeadline):
            async for _ in up.chunks():
                n += 1
                if n % 1000 == 0:
                    await asyncio.sleep(0.01)
                assert n < 10_000_000
        return n
    assert asyncio.run(main()) > 0
