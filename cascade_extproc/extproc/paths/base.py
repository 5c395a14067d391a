"""What every path shares: the protocol a path implements (PathHandler), what it returns (Taken:
the answer for Envoy and the facts to record), and how it says it will take a while (Pending) or
that the strong model must answer (FallBack).

A path does not yield: it returns its response, or a Pending the shell awaits, so the servicer's
loop stays flat (each extra async-generator layer cost about 0.3 ms per stream, servicer.py). It
reaches the providers through their Protocol, so its logic runs against providers.mock in tests.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Protocol

from cascade_extproc import codecs
from cascade_extproc._proto import external_processor_pb2 as ep
from cascade_extproc.codecs import splice, sse
from cascade_extproc.config import Config
from cascade_extproc.extproc.relay import Relay
from cascade_extproc.metering.ledger import Ledger, RequestRecord
from cascade_extproc.metering.prices import PriceTable
from cascade_extproc.providers import HttpProvider
from cascade_extproc.routing.router import Router
from cascade_extproc.types import Api, Decision, Path, Request, Response, Usage


class Runtime(Protocol):
    """What a request reads from the runtime app.py builds from a Config (app.Runtime)."""

    cfg: Config
    router: Router
    prices: PriceTable
    providers: dict[tuple[Api, str], HttpProvider]  # (client api, "draft" | "strong")
    relay: Relay
    shadow_slots: asyncio.Semaphore
    cascade_slots: asyncio.Semaphore


@dataclass
class Facts:
    """What to record about a request (the shell puts it in the ledger's RequestRecord)."""

    path: Path
    served_model: str = ""  # what answered; empty: the model the client asked for
    usage: dict[str, Usage] = field(default_factory=dict)  # "strong" / "draft" → usage
    fallback_reason: str = ""
    error: str = ""
    shadow_route: str = ""


class AnswerSide(Protocol):
    """The provider's answer on its way back through Envoy: its headers, then (as asked) its body.
    extproc/response.py meters it; the skip path's watches the relay's."""

    finished: bool  # the answer is over: the shell finishes the record
    status: int

    def on_headers(self, msg: ep.HttpHeaders) -> ep.ProcessingResponse | Pending: ...

    def on_body(self, msg: ep.HttpBody) -> ep.ProcessingResponse: ...

    def settle(self, rec: RequestRecord) -> bool:
        """The record is being finished: complete it from what passed. False: it is not the
        shell's to hand over (the relay reports it later)."""
        ...


@dataclass
class Taken:
    """What a path did with a request: the answer for Envoy, and what to record."""

    response: ep.ProcessingResponse
    facts: Facts
    status: int = 0  # answered here (an ImmediateResponse): the record is finished at once
    answer: AnswerSide | None = None  # watches the answer on its way back; None: Envoy skips it
    # The request goes on to the strong provider and nothing here reads its answer: with metering
    # on, Envoy meters it and its access log brings the usage back (extproc/access_log.py).
    meter: bool = False


@dataclass
class Pending:
    """An answer that takes a while: the shell first extends Envoy's message timeout by `wait_s`,
    applies `facts` (what is true meanwhile), then awaits `run()`."""

    wait_s: float
    run: Callable[[], Awaitable[Taken]]
    facts: Facts | None = None


class FallBack(Exception):
    """The path cannot serve the request: the strong model answers the original (path fallback)."""

    def __init__(self, reason: str, usage: dict[str, Usage] | None = None):
        super().__init__(reason)
        self.reason = reason  # the fallback reason, in the metrics
        self.usage = usage or {}  # what the path spent before it gave up (a draft's tokens), metered too


class PathHandler(Protocol):
    """One path a request can take, built for one request (PathFactory)."""

    def take(self, req: Request, decision: Decision, draft_key: str) -> Taken | Pending: ...


Report = Callable[[Facts, int], None]  # facts learned after the body phase, and the answer's status
# How the shell builds a path for a request: (runtime, ledger, report). `report` is for what is
# known only later (the relay finished a skipped request); the shell records it.
PathFactory = Callable[[Runtime, Ledger, Report], PathHandler]


def needs_usage_chunk(req: Request, cfg: Config) -> bool:
    """An OpenAI stream reports usage only when asked; we ask to meter it (and Envoy's usage
    filter hides the answer from the client)."""
    return (cfg.metering and req.api is Api.OPENAI and req.stream
            and not req.wants_usage_chunk)


def ask_usage(body: bytes) -> bytes:
    return splice.replace_value(body, "stream_options", {"include_usage": True})


def encode_answer(req: Request, resp: Response) -> tuple[bytes, str]:
    """An answer in the client's API and format (JSON, or a complete SSE stream): body, content type."""
    codec, created = codecs.for_api(req.api), int(time.time())
    if req.stream:
        return codec.encode_sse(resp, created, req.wants_usage_chunk), sse.CONTENT_TYPE
    return codec.encode_json(resp, created), codecs.CONTENT_TYPE_JSON
