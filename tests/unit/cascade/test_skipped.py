"""The skipped path's relay (cascade/skipped.py) against a simulated draft told to loop: the
budget, the repetition detector and the time limit, each ending the client's stream the way its
API ends a stream stopped for length, or handing the answer to the strong model while the client
has nothing yet. (Through Envoy with the SDKs: tests/e2e/test_e2e_runaway.py.)"""
from __future__ import annotations

import asyncio
import json
import time

import aiohttp
from aiohttp import web

from cascade_extproc.cascade import draft_checks, skipped
from cascade_extproc.cascade.bodies import draft_body, strong_body
from cascade_extproc.codecs.translate import ResponsePlan
from cascade_extproc.providers import HttpProvider
from cascade_extproc.sim import Latency, SimProvider
from cascade_extproc.types import Api, Path, Request

DRAFT = {Api.ANTHROPIC: "sim-draft-claude", Api.OPENAI: "sim-draft-gpt"}
STRONG = {Api.ANTHROPIC: "claude-opus-4-6", Api.OPENAI: "gpt-6.2-sol"}
AUTH = {Api.ANTHROPIC: {"x-api-key": "k", "anthropic-version": "2023-06-01"}, Api.OPENAI: {"authorization": "Bearer k"}}


def request(api: Api, text: str, stream: bool, limit: int | None = None) -> Request:
    body: dict = {"model": STRONG[api], "messages": [{"role": "user", "content": text}], "stream": stream}
    if limit is not None:
        body["max_tokens"] = limit
    elif api is Api.ANTHROPIC:
        body["max_tokens"] = 64000  # Claude Code's
    return Request(api, body, {"x-request-id": "r1"}, json.dumps(body).encode())


def relay(req: Request, budget: int = 8192, detect: bool = True, max_s: float = 300,
          tokens_per_s: float = 0.0, draft_api: Api | None = None,
          ) -> tuple[int, bytes, skipped.SkipCall, SimProvider, SimProvider]:
    """Serve `req` through the relay: (status, what the client got, the call, draft sim, strong sim);
    `draft_api`: the draft speaks the other API (its answer translated)."""
    api = req.api
    dapi = draft_api or api

    async def main():
        draft, strong = SimProvider(dapi.value, latency=Latency(tokens_per_s=tokens_per_s)), SimProvider(api.value)
        await draft.start()
        await strong.start()
        session = aiohttp.ClientSession()
        plan = ResponsePlan(api, dapi, dapi is not api or api is Api.ANTHROPIC, req.wants_usage_chunk, 1)
        call = skipped.SkipCall(
            req=req, body=draft_body(req, dapi, DRAFT[dapi], stream=req.stream, budget=budget), plan=plan,
            draft=HttpProvider(dapi, draft.url, session), draft_headers=AUTH[dapi],
            strong=HttpProvider(api, strong.url, session), strong_headers=AUTH[api], strong_body=strong_body(req),
            timeout_s=5, strong_timeout_s=5, on_done=lambda c: None, served_model=DRAFT[api],
            deadline=time.monotonic() + max_s, limited=draft_checks.limited(req, budget), detect_repetition=detect)
        app = web.Application()
        async def handle(r: web.Request) -> web.StreamResponse:
            return await skipped.serve(call, r)
        app.router.add_post("/relay", handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        try:
            async with session.post(f"http://127.0.0.1:{port}/relay", data=b"") as resp:
                got = await resp.read()
                return resp.status, got, call, draft, strong
        finally:
            await session.close()
            await runner.cleanup()
            await draft.stop()
            await strong.stop()
    return asyncio.run(main())


def events(raw: bytes) -> list[dict]:
    out = []
    for frame in raw.decode().split("\n\n"):
        for line in frame.splitlines():
            if line.startswith("data: {"):
                out.append(json.loads(line[6:]))
    return out


def text_of(api: Api, evs: list[dict]) -> str:
    if api is Api.ANTHROPIC:
        return "".join(e["delta"].get("text", "") for e in evs if e["type"] == "content_block_delta")
    return "".join(c["delta"].get("content") or "" for e in evs for c in e["choices"])


def assert_ends_as_length_stop(api: Api, raw: bytes) -> list[dict]:
    """A proper end: Anthropic's content_block_stop, message_delta (max_tokens), message_stop;
    OpenAI's last chunk with finish_reason length, then [DONE]. Every frame whole."""
    assert raw.endswith(b"\n\n")
    evs = events(raw)
    if api is Api.ANTHROPIC:
        assert [e["type"] for e in evs[-3:]] == ["content_block_stop", "message_delta", "message_stop"]
        assert evs[-2]["delta"]["stop_reason"] == "max_tokens" and evs[-2]["usage"]["output_tokens"] > 0
        assert sum(e["type"] == "message_stop" for e in evs) == 1
    else:
        assert raw.endswith(b"data: [DONE]\n\n") and raw.count(b"[DONE]") == 1
        finishes = [c["finish_reason"] for e in evs for c in e["choices"] if c["finish_reason"]]
        assert finishes == ["length"]
    return evs


def test_a_looping_stream_is_ended_as_a_length_stop_soon_after_it_loops():
    for api in (Api.ANTHROPIC, Api.OPENAI):
        # Paced (a real model's tokens come one by one): the client has the start before the loop shows
        status, raw, call, draft, strong = relay(request(api, "Say hi sim:loop=draft", stream=True),
                                                 tokens_per_s=2000)
        assert status == 200
        evs = assert_ends_as_length_stop(api, raw)
        words = text_of(api, evs).split()
        assert 100 < len(words) < 1024  # caught within the detector's window, far from the budget
        assert (call.path, call.status, call.error) == (Path.SKIPPED, 200, "draft-degenerate")
        assert call.usage["draft"].output_tokens > 0  # estimated: the draft never said
        assert strong.received == []
        # The draft was asked for the budget: no limit of the client's (OpenAI), or a higher one
        (sent,) = draft.received
        assert sent.json["max_tokens"] == 8192


def test_a_translated_stream_is_ended_in_the_clients_own_api():
    for api, dapi in ((Api.ANTHROPIC, Api.OPENAI), (Api.OPENAI, Api.ANTHROPIC)):
        status, raw, call, draft, _ = relay(request(api, "Say hi sim:loop=draft", stream=True), tokens_per_s=2000,
                                            draft_api=dapi)
        evs = assert_ends_as_length_stop(api, raw)
        assert 100 < len(text_of(api, evs).split()) < 1024
        assert (call.status, call.error) == (200, "draft-degenerate")
        sent = draft.received[0].json
        assert sent.get("max_tokens") == 8192 or sent.get("max_completion_tokens") == 8192


def test_without_the_detector_the_budget_stops_the_stream_with_the_drafts_own_length_stop():
    for api in (Api.ANTHROPIC, Api.OPENAI):
        # Paced, so the client has the start before the end (all in one read, it would be the
        # strong model's: test_a_loop_seen_before_...)
        status, raw, call, draft, _ = relay(request(api, "Say hi sim:loop=draft", stream=True), budget=500,
                                            detect=False, tokens_per_s=5000)
        evs = assert_ends_as_length_stop(api, raw)
        assert len(text_of(api, evs).split()) <= 500
        assert (call.status, call.error) == (200, "draft-budget")
        assert draft.received[0].json["max_tokens"] == 500


def test_a_loop_seen_before_the_client_has_a_word_is_answered_by_the_strong_model():
    """Unpaced, the draft's first read holds its start and the loop both: nothing was sent."""
    for api in (Api.ANTHROPIC, Api.OPENAI):
        status, raw, call, _, strong = relay(request(api, "Say hi sim:loop=draft", stream=True))
        assert status == 200 and (call.path, call.reason) == (Path.FALLBACK, "draft-degenerate")
        assert text_of(api, events(raw)).startswith(f"Simulated reply from {STRONG[api]}")
        assert call.usage["draft"].output_tokens > 0 and len(strong.received) == 1


def test_the_clients_own_limit_is_its_answer_not_a_failure():
    for api in (Api.ANTHROPIC, Api.OPENAI):
        status, raw, call, draft, strong = relay(request(api, "Say hi sim:loop=draft", stream=True, limit=100))
        assert_ends_as_length_stop(api, raw)
        assert (call.status, call.error, call.path) == (200, "", Path.SKIPPED) and strong.received == []
        assert draft.received[0].json["max_tokens"] == 100  # the client's own, untouched


def test_a_json_answer_that_loops_or_hits_the_budget_is_answered_by_the_strong_model():
    for api in (Api.ANTHROPIC, Api.OPENAI):
        for detect, reason in ((True, "draft-degenerate"), (False, "draft-budget")):
            status, raw, call, draft, strong = relay(request(api, "Say hi sim:loop=draft", stream=False),
                                                     budget=2000, detect=detect)
            assert status == 200
            body = json.loads(raw)
            text = body["content"][0]["text"] if api is Api.ANTHROPIC else body["choices"][0]["message"]["content"]
            assert text.startswith(f"Simulated reply from {STRONG[api]}")
            assert (call.path, call.reason) == (Path.FALLBACK, reason)
            assert call.usage["draft"].output_tokens == 2000  # paid for, metered
            assert len(strong.received) == 1


def test_a_stream_that_loops_before_its_first_content_is_answered_by_the_strong_model():
    """A loop in the reasoning is never judged (it is never shown), but a budget stop before any
    content is: nothing reached the client, so the strong model answers, streamed."""
    api = Api.ANTHROPIC
    status, raw, call, _, strong = relay(request(api, "Say hi sim:loop=draft sim:think", stream=True), budget=20)
    assert status == 200 and (call.path, call.reason) == (Path.FALLBACK, "draft-budget")
    assert text_of(api, events(raw)).startswith(f"Simulated reply from {STRONG[api]}")


def test_the_time_limit_ends_a_stream_properly_and_a_json_answer_goes_to_the_strong_model():
    for api in (Api.ANTHROPIC, Api.OPENAI):
        t0 = time.monotonic()
        status, raw, call, _, _ = relay(request(api, "Say hi sim:loop=draft", stream=True), detect=False, max_s=1.0,
                                        tokens_per_s=200)
        assert time.monotonic() - t0 < 4
        evs = assert_ends_as_length_stop(api, raw)
        assert 0 < len(text_of(api, evs).split()) < 400  # (fewer on a loaded machine)
        assert (call.status, call.error) == (200, "draft-deadline")
        # (a JSON answer of 400 tokens at 200 a second: due in 2 s, past the limit)
        status, raw, call, _, strong = relay(request(api, "Say hi sim:loop=draft", stream=False), budget=400,
                                             detect=False, max_s=1.0, tokens_per_s=200)
        assert status == 200 and (call.path, call.reason) == (Path.FALLBACK, "draft-deadline")
        assert len(strong.received) == 1
