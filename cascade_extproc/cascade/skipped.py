"""The skipped path, served by the sidecar's relay: the draft answers alone.

Envoy sends a skipped request to the relay (extproc/relay.py), which asks the draft provider
itself and streams the answer back to the client through Envoy. Owning the client's stream is
what lets it keep the promises Envoy alone could not:
- nothing reaches the client before the draft's first content: a draft that fails, stalls or
  answers garbage before that is answered by the strong model instead (path `fallback`);
- a draft that stalls or breaks after that ends the stream with an error event in the client's
  format, never a cut connection;
- a draft is asked for at most the output budget (cascade.draft_max_tokens) and has until the
  time limit (cascade.skipped_max_s, from the request): one that loops (repetition.py), or runs
  out of either, before the client has a word is answered by the strong model instead (a JSON
  answer is held whole, so always before); after that, the sidecar ends the stream itself as the
  client's API ends a stream stopped for length, and closes the draft's connection;
- the draft's reasoning is never shown to the client (provenance), its answer is translated
  into the client's API when the draft speaks the other one, and its usage is metered here (a
  usage chunk asked for on an OpenAI client's behalf is dropped by Envoy, as on every path);
- the draft gets the sidecar's key and an allow-list of headers, nothing else of the client's.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

from aiohttp import web

from cascade_extproc import codecs
from cascade_extproc.cascade import draft_checks
from cascade_extproc.cascade.draft_checks import DraftWatch
from cascade_extproc.codecs import sse
from cascade_extproc.codecs.translate import ResponsePlan, ResponseTranslator, StreamCloser, StreamTap, read_json
from cascade_extproc.providers import HttpProvider, ProviderDeadline, ProviderError, ProviderStalled, Upstream
from cascade_extproc.types import Api, BlockDelta, Path, Request, StreamEnd, StreamError, Usage

log = logging.getLogger("cascade_extproc.skipped")


@dataclass
class SkipCall:
    """One skipped request: what to send, to whom, and (filled as it goes) what happened."""

    req: Request
    body: bytes  # the draft request
    plan: ResponsePlan
    draft: HttpProvider
    draft_headers: dict[str, str]  # the sidecar's key and an allow-list, nothing of the client's
    strong: HttpProvider
    strong_headers: dict[str, str]  # the client's own credentials, for the strong model's answer
    strong_body: bytes
    timeout_s: float  # the draft: to answer, and between two chunks
    strong_timeout_s: float
    on_done: Callable[["SkipCall"], None]
    deadline: float | None = None  # time.monotonic() past which the draft's answer ends (skipped_max_s)
    limited: bool = False  # the draft's output limit is ours (the budget), not the client's own
    detect_repetition: bool = False
    path: Path = Path.SKIPPED
    status: int = 0
    reason: str = ""  # why the strong model answered (path fallback)
    error: str = ""  # how the answer broke after the client had part of it, or "client-gone"
    served_model: str = ""
    usage: dict[str, Usage] = field(default_factory=dict)
    taken: bool = False  # the relay has it (it then finishes the record)


async def serve(call: SkipCall, request: web.Request) -> web.StreamResponse:
    """Answer `request` (Envoy's, for the client) from the draft, else from the strong model."""
    try:
        async with call.draft.open(call.body, call.draft_headers, call.timeout_s, call.deadline) as up:
            resp = await (_draft_stream(call, request, up) if up.sse else _draft_json(call, request, up))
        if resp is not None:
            return resp
    except ProviderError as exc:
        call.reason = _reason(exc)
    except ConnectionError:
        return _client_gone(call)
    return await _from_strong(call, request)


def _how(exc: ProviderError) -> str:
    """What happened to a stream, in words for the client (no library's class names)."""
    return "stalled" if isinstance(exc, ProviderStalled) else "broke off"


def _reason(exc: ProviderError, who: str = "draft") -> str:
    if exc.status:
        return f"{who}-http-{exc.status}"
    return f"{who}-" + exc.reason.split(":")[0].replace(" ", "-")


async def _start(request: web.Request, content_type: str) -> web.StreamResponse:
    resp = web.StreamResponse(status=200, headers={"content-type": content_type, "cache-control": "no-cache"})
    await resp.prepare(request)
    return resp


async def _draft_stream(call: SkipCall, request: web.Request, up: Upstream) -> web.StreamResponse | None:
    """Relay the draft's SSE stream; None (nothing sent) when the strong model should answer."""
    translator = ResponseTranslator(call.plan) if call.plan.rewriting else None
    tap = translator.tap if translator else StreamTap(call.plan.upstream)
    whole = None if translator else sse.WholeFrames()  # passed through: cut at frame ends
    closer = StreamCloser(call.plan, translator)
    watch = DraftWatch(limited=call.limited, detect_repetition=call.detect_repetition)
    held: list[bytes] = []  # what the client gets once the draft has shown it can answer
    resp: web.StreamResponse | None = None
    try:
        chunks = up.chunks()
        async for chunk in chunks:
            events = tap.feed(chunk)
            shown = translator.shown(events) if translator else events  # the draft's reasoning stripped
            out = translator.encode_shown(shown) if translator else whole.feed(chunk)  # type: ignore[union-attr]
            if tap.broken:
                break
            closer.seen(shown)
            failed = watch.see(events)
            if resp is None and failed:  # the client has nothing yet: the strong model answers
                call.reason, call.usage["draft"] = failed, watch.usage(tap.usage)
                return None
            if resp is not None:
                if out:
                    await resp.write(out)
            else:
                held.append(out)
                # The client's answer starts with the first content it is to see (not reasoning it never will).
                if any(isinstance(ev, (BlockDelta, StreamEnd)) for ev in shown):
                    resp = await _start(request, sse.CONTENT_TYPE)
                    await resp.write(b"".join(held))
            if watch.looping and not tap.complete:
                return await _stopped(call, resp, closer, watch.usage(tap.usage), draft_checks.DEGENERATE)
        events = tap.feed(b"", end=True)
        closer.seen(events)
        tail = translator.encode(events) if translator else whole.rest()  # type: ignore[union-attr]
    except ProviderError as exc:
        if resp is None:
            call.reason = _reason(exc)
            if isinstance(exc, ProviderDeadline):
                call.usage["draft"] = watch.usage(tap.usage)
            return None
        if isinstance(exc, ProviderDeadline):  # our time limit, not a fault: a proper end
            return await _stopped(call, resp, closer, watch.usage(tap.usage), draft_checks.DEADLINE)
        return await _broken(call, resp, f"the draft provider's stream {_how(exc)}", _reason(exc))
    except ConnectionError:
        return _client_gone(call, resp)
    if resp is None:
        if not tap.complete:  # it ended, or went wrong, before a word: not an answer
            call.reason = "draft-malformed" if tap.broken else "draft-ended-early"
            return None
        resp = await _start(request, sse.CONTENT_TYPE)
        await resp.write(b"".join(held))
    try:
        if tail:
            await resp.write(tail)
        if not tap.complete:  # cut short after the client had part: say so, never end quietly
            return await _broken(call, resp, "the draft provider's stream ended early", "draft-ended-early")
        await resp.write_eof()
    except ConnectionError:
        return _client_gone(call, resp)
    call.status, call.usage["draft"] = 200, tap.usage or Usage()
    # Whole, but not what the client would want: a length stop under our budget, or a loop that
    # ended on its own after the client had part of it.
    call.error = draft_checks.DEGENERATE if watch.looping else watch.ended_by_us
    return resp


async def _stopped(call: SkipCall, resp: web.StreamResponse | None, closer: StreamCloser, usage: Usage,
                   reason: str) -> web.StreamResponse:
    """The client has part of the draft's answer, and the sidecar ends it here (a loop, or the
    time limit): as the client's API ends a stream stopped for length, never a cut connection.
    Returning closes the draft's connection."""
    assert resp is not None
    call.status, call.error, call.usage["draft"] = 200, reason, usage
    log.warning("skipped request %s: %s; the stream ended as a length stop after %d tokens (estimated)",
                call.req.headers.get("x-request-id", ""), reason, usage.output_tokens)
    try:
        await resp.write(closer.close(usage))
        await resp.write_eof()
    except ConnectionError:
        return _client_gone(call, resp)
    return resp


async def _draft_json(call: SkipCall, request: web.Request, up: Upstream) -> web.StreamResponse | None:
    raw = await up.read()
    answer = read_json(call.plan.upstream, raw)
    if answer is None:
        call.reason = "draft-malformed"
        return None
    failed = draft_checks.failure(answer, limited=call.limited, detect_repetition=call.detect_repetition)
    if failed:  # held whole, nothing sent: the strong model answers instead
        call.reason, call.usage["draft"] = failed, answer.usage
        return None
    body = ResponseTranslator(call.plan).json_body(answer) if call.plan.rewriting else raw
    call.status, call.usage["draft"] = 200, answer.usage
    resp = web.Response(status=200, body=body, content_type="application/json")
    try:
        await resp.prepare(request)
        await resp.write_eof()
    except ConnectionError:
        return _client_gone(call, resp)
    return resp


async def _broken(call: SkipCall, resp: web.StreamResponse, message: str, reason: str) -> web.StreamResponse:
    """The client has part of the draft's answer and there is no more: end its stream with an
    error event in its own format, so no SDK takes a cut answer for a whole one."""
    call.status, call.error = 502, reason
    log.error("skipped request %s: %s after part of the answer was sent; ended with an error event",
              call.req.headers.get("x-request-id", ""), message)
    try:
        await resp.write(_error_event(call.plan.client, call.plan.include_usage, message))
        await resp.write_eof()
    except ConnectionError:
        pass
    return resp


def _error_event(client: Api, include_usage: bool, message: str) -> bytes:
    return codecs.for_api(client).StreamEncoder(0, include_usage).encode(StreamError(502, message))


def _client_gone(call: SkipCall, resp: web.StreamResponse | None = None) -> web.StreamResponse:
    call.status, call.error = 499, "client-gone"
    return resp if resp is not None else web.StreamResponse(status=499)


async def _from_strong(call: SkipCall, request: web.Request) -> web.StreamResponse:
    """The draft could not answer and the client has nothing yet: the strong model answers the
    client's own request, with the client's own credentials, streamed as it comes."""
    call.path, call.served_model = Path.FALLBACK, call.req.model
    log.warning("skipped request %s: %s; the strong model answers", call.req.headers.get("x-request-id", ""),
                call.reason)
    tap = StreamTap(call.req.api)
    resp: web.StreamResponse | None = None
    try:
        async with call.strong.open(call.strong_body, call.strong_headers, call.strong_timeout_s) as up:
            resp = await _start(request, sse.CONTENT_TYPE if up.sse else codecs.CONTENT_TYPE_JSON)
            raw = b""
            async for chunk in up.chunks():
                if up.sse:
                    tap.feed(chunk)
                else:
                    raw += chunk
                await resp.write(chunk)
            if up.sse:
                tap.feed(b"", end=True)
        await resp.write_eof()
    except ProviderError as exc:
        if resp is not None:  # the strong model's own stream broke: as it would without us
            return await _broken(call, resp, f"the strong provider's stream {_how(exc)}", _reason(exc, "strong"))
        call.status = exc.status or 502
        message = exc.message or f"upstream error: {exc.reason}"
        return web.Response(status=call.status, body=codecs.for_api(call.req.api).error_body(call.status, message),
                            content_type="application/json")
    except ConnectionError:
        return _client_gone(call, resp)
    answer = tap.response() if up.sse else read_json(call.req.api, raw)
    call.status = 200
    call.usage["strong"] = (tap.usage if up.sse else answer.usage if answer else None) or Usage()
    if answer is not None and answer.model:
        call.served_model = answer.model
    return resp
