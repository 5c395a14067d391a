"""The ext_proc server killed (SIGKILL): before any request, and in the middle of one on every
path. Envoy fails open (`failure_mode_allow`): a request that has not reached the server, or whose
body the server had not answered yet, goes to the strong provider as the client sent it. What a
request the server was serving when it died gets is asserted exactly, per path, JSON and SSE,
both APIs; and after the kill, the next request on every path is answered by the strong model."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import anthropic
import httpx2
import openai
import pytest

from claude_code import request as claude_code_request
from cascade_extproc.sim.validate import thinking_signature
from stack import CLIENT_KEY, DRAFT_MODELS, key_of, stack_fixture

APIS = ("anthropic", "openai")
STRONG = {"anthropic": "claude-sonnet-5", "openai": "gpt-6.2-sol"}  # priced: unpriced models go direct
CHEAP = {"anthropic": "claude-haiku-4-5", "openai": "gpt-5.4-mini"}
COMPLEX = ("Review this retry policy for a payment API and explain what could double-charge a "
           "customer, and how idempotency keys prevent it.")
SLOW_TOKENS = 10  # tokens/s: an answer of ~25 tokens streams for ~2.5 s


stack = stack_fixture("resilience")


@pytest.fixture(autouse=True)
def _server_back(stack):
    """Each test may kill the server: it is started again after it, with quick providers."""
    yield
    stack.quick()
    if stack.server.poll() is not None:
        stack.start_server()


# ---- a Claude Code tool loop with thinking on --------------------------------------------------

THOUGHT = "Simulated reasoning: find where the retries are configured first."
STRONG_TOOL_TURN = {"role": "assistant", "content": [  # the strong model's: its own signature
    {"type": "thinking", "thinking": THOUGHT, "signature": thinking_signature("strong-anthropic", THOUGHT)},
    {"type": "tool_use", "id": "toolu_strong_1", "name": "Grep", "input": {"path": "/src"}}]}
DRAFT_TOOL_TURN = {"role": "assistant", "content": [  # a skipped turn's: the draft never thinks
    {"type": "tool_use", "id": "toolu_draft_2", "name": "Read", "input": {"path": "/src/retry.py"}}]}


def tool_result(tool_id: str, text: str) -> dict:
    return {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_id, "content": text}]}


# A small tool result after the strong model's thinking and tool call: skipped (tool-result-followup).
THINKING_LOOP = [{"role": "user", "content": "Where are payment retries configured?"}, STRONG_TOOL_TURN,
                 tool_result("toolu_strong_1", "3 matches")]
# The same loop one turn later, whose last tool call was the draft's (no thinking before it).
THINKING_LOOP_DRAFT_LAST = [*THINKING_LOOP, DRAFT_TOOL_TURN, tool_result("toolu_draft_2", "RETRIES = 3")]


# ---- the client ---------------------------------------------------------------------------------

@dataclass
class Got:
    status: int | None = None
    path: str | None = None
    text: str = ""
    blocks: tuple = ()  # anthropic JSON: the answer's block types
    complete: bool = False
    usage_chunks: int = 0  # openai SSE: chunks with no choices (the usage chunk)
    exc: BaseException | None = None


def ask(stack, api: str, mode: str, *, text: str = "", model: str = "", thinking_loop: list | None = None,
        on_first_content=None, retries: int = 0) -> Got:
    """One request with the official SDK; `on_first_content` runs when the first text arrives."""
    got = Got()
    stream = mode == "sse"
    try:
        if api == "anthropic":
            client = anthropic.Anthropic(base_url=stack.anthropic_url, api_key=CLIENT_KEY, max_retries=retries,
                                         timeout=20)
            kw = claude_code_request(thinking_loop) if thinking_loop else dict(
                model=model, max_tokens=100, messages=[{"role": "user", "content": text}])
            raw = client.messages.with_raw_response.create(stream=stream, **kw)
        else:
            client = openai.OpenAI(base_url=stack.openai_url, api_key=CLIENT_KEY, max_retries=retries, timeout=20)
            raw = client.chat.completions.with_raw_response.create(
                model=model, stream=stream, messages=[{"role": "user", "content": text}])
        got.status, got.path = raw.status_code, raw.headers.get("x-cascade-path")
        if not stream:
            answer = raw.parse()
            if api == "anthropic":
                got.blocks, got.text = tuple(b.type for b in answer.content), answer.content[-1].text
            else:
                got.text = answer.choices[0].message.content
            got.complete = True
            return got
        for ev in raw.parse():
            before = got.text
            if api == "anthropic":
                if ev.type == "content_block_delta" and ev.delta.type == "text_delta":
                    got.text += ev.delta.text
                got.complete = ev.type == "message_stop"
            else:
                got.usage_chunks += not ev.choices
                for choice in ev.choices:
                    got.text += choice.delta.content or ""
                    got.complete = got.complete or choice.finish_reason is not None
            if got.text and not before and on_first_content is not None:
                on_first_content()
    except (anthropic.APIStatusError, openai.APIStatusError) as exc:
        got.exc, got.status, got.path = exc, exc.response.status_code, exc.response.headers.get("x-cascade-path")
    except Exception as exc:  # recorded, then checked against the exact class expected
        got.exc = exc
    return got


def kill_when_received(stack, sim_name: str, after_s: float = 0.2) -> threading.Thread:
    """Kill the server once `sim_name` got the request (the server is waiting on it)."""
    def run():
        deadline = time.monotonic() + 10
        while not stack.sims[sim_name].received:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(after_s)
        stack.kill_server()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def assert_answered(got: Got, path: str, model: str) -> None:
    assert got.exc is None, repr(got.exc)
    assert (got.status, got.path, got.complete) == (200, path, True)
    assert got.text.startswith(f"Simulated reply from {model}: "), got.text


def assert_every_path_falls_back(stack, api: str) -> None:
    """With the server dead, the next request on every path (each mode) is the strong model's."""
    assert stack.server.poll() is not None, "the server is supposed to be dead here"
    stack.clear()
    stack.quick()
    requests = [dict(text="hi", model=STRONG[api]), dict(text=COMPLEX, model=STRONG[api]),
                dict(text=COMPLEX, model=CHEAP[api])]  # skipped, cascade and direct with the server up
    if api == "anthropic":
        requests.append(dict(thinking_loop=THINKING_LOOP))
    for kw in requests:
        for mode in ("json", "sse"):
            got = ask(stack, api, mode, **kw)
            assert_answered(got, "fallback", kw.get("model") or STRONG[api])
    assert len(stack.sims[f"strong_{api}"].received) == 2 * len(requests)
    assert all(key_of(r.headers) == CLIENT_KEY for r in stack.sims[f"strong_{api}"].received)
    assert not stack.sims[f"draft_{api}"].received


# ---- killed before any request ------------------------------------------------------------------

def test_requests_succeed_with_the_server_killed(stack):
    stack.kill_server()
    client = anthropic.Anthropic(base_url=stack.anthropic_url, api_key=CLIENT_KEY, max_retries=0)
    for text in ("hi", "a long and complex question " * 20):
        raw = client.messages.with_raw_response.create(
            model="claude-sonnet-5", max_tokens=100, messages=[{"role": "user", "content": text}],
            # Even with nobody to strip it, a client-sent route header must not reach the draft.
            extra_headers={"x-cascade-route": "draft-anthropic", "x-cascade-ticket": "guess"})
        assert raw.headers["x-cascade-path"] == "fallback"
        assert raw.parse().content[0].text.startswith("Simulated reply from claude-sonnet-5")
    assert len(stack.sims["strong_anthropic"].received) == 2
    for api in APIS:
        assert_every_path_falls_back(stack, api)


def test_server_restart_resumes_processing(stack):
    stack.kill_server()
    stack.start_server()
    client = anthropic.Anthropic(base_url=stack.anthropic_url, api_key=CLIENT_KEY, max_retries=0)
    raw = client.messages.with_raw_response.create(
        model="claude-sonnet-5", max_tokens=50, messages=[{"role": "user", "content": "hi"}])
    assert raw.headers["x-cascade-path"] == "skipped"


# ---- killed mid-request ---------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["json", "sse"])
@pytest.mark.parametrize("api", APIS)
def test_killed_during_a_cascade(stack, api, mode):
    # The server is waiting on a slow draft; Envoy is waiting on the server for the request body.
    # The ext_proc stream breaks, Envoy fails open: the client's own request, buffered in Envoy,
    # goes to the strong model. The best outcome there is: an answer, no error.
    stack.sims[f"draft_{api}"].latency.ttft_s = 3
    killer = kill_when_received(stack, f"draft_{api}")
    got = ask(stack, api, mode, text=COMPLEX, model=STRONG[api])
    killer.join()
    assert_answered(got, "fallback", STRONG[api])
    (strong,) = stack.sims[f"strong_{api}"].received
    assert "[cascade-verify" not in strong.body.decode() and key_of(strong.headers) == CLIENT_KEY
    assert_every_path_falls_back(stack, api)


@pytest.mark.parametrize("api", APIS)
def test_killed_while_the_relay_streams_a_skipped_answer(stack, api):
    # The relay runs in the server: killed, it takes the draft's stream with it. The client had a
    # 200 and part of the answer; Envoy can only cut the connection (its headers are gone, and
    # nobody is left to write an error event). The SDK raises, so the cut answer is never taken
    # for a whole one: the anthropic SDK lets httpx's error through, the openai SDK wraps it.
    # Not fixable while the relay lives in the server process (before the relay, Envoy streamed
    # from the draft itself and a dead server cost only the metering): see docs/reliability.md.
    stack.sims[f"draft_{api}"].latency.tokens_per_s = SLOW_TOKENS
    got = ask(stack, api, "sse", text="hi", model=STRONG[api], on_first_content=stack.kill_server)
    assert (got.status, got.path, got.complete) == (200, "skipped", False)
    assert got.text and f"Simulated reply from {DRAFT_MODELS[api]}: ".startswith(got.text)  # its first words
    expected = {"anthropic": httpx2.RemoteProtocolError, "openai": openai.APIConnectionError}[api]
    assert type(got.exc) is expected, repr(got.exc)
    assert not stack.sims[f"strong_{api}"].received
    assert_every_path_falls_back(stack, api)


@pytest.mark.parametrize("api", APIS)
def test_killed_while_the_relay_waits_for_a_skipped_json_answer(stack, api):
    # A JSON answer is sent whole: the relay had sent nothing when it died, so Envoy answers the
    # reset itself, 503 in the API's own error shape (x-cascade-path still says what the server
    # had decided). With max_retries=0 that is what the client gets...
    stack.sims[f"draft_{api}"].latency.tokens_per_s = SLOW_TOKENS
    killer = kill_when_received(stack, f"draft_{api}")
    got = ask(stack, api, "json", text="hi", model=STRONG[api])
    killer.join()
    expected = {"anthropic": anthropic.ServiceUnavailableError, "openai": openai.InternalServerError}[api]
    assert type(got.exc) is expected, repr(got.exc)
    assert (got.status, got.path) == (503, "skipped")
    body = got.exc.response.json()
    if api == "anthropic":
        assert body["type"] == "error" and body["error"]["type"] == "api_error"
    else:
        assert body["error"]["type"] == "server_error" and body["error"]["code"] == 503
    stack.start_server()
    # ...and with the SDKs' default retries (2), the retry, which finds the server dead, is
    # answered by the strong model: the client never sees the failure.
    stack.clear()
    killer = kill_when_received(stack, f"draft_{api}")
    got = ask(stack, api, "json", text="hi", model=STRONG[api], retries=2)
    killer.join()
    assert_answered(got, "fallback", STRONG[api])
    assert len(stack.sims[f"draft_{api}"].received) == 1 and len(stack.sims[f"strong_{api}"].received) == 1
    assert_every_path_falls_back(stack, api)


@pytest.mark.parametrize("mode", ["json", "sse"])
@pytest.mark.parametrize("api", APIS)
def test_killed_while_a_direct_answer_is_metered(stack, api, mode):
    # The answer passes through Envoy, the server reading it (JSON buffered, SSE chunk by chunk).
    # Envoy fails open: the rest passes unread, the client gets the whole answer; only the
    # metering of this request is lost.
    stack.sims[f"strong_{api}"].latency.tokens_per_s = SLOW_TOKENS
    if mode == "json":
        killer = kill_when_received(stack, f"strong_{api}")
        got = ask(stack, api, mode, text=COMPLEX, model=CHEAP[api])
        killer.join()
    else:
        got = ask(stack, api, mode, text=COMPLEX, model=CHEAP[api], on_first_content=stack.kill_server)
    assert stack.server.poll() is not None
    assert_answered(got, "direct", CHEAP[api])
    if mode == "sse":
        # On an OpenAI stream the server asked for usage on the client's behalf (to meter it);
        # Envoy's usage filter drops that chunk, server or no server (lua/usage_chunk.lua).
        assert got.usage_chunks == 0
    assert_every_path_falls_back(stack, api)


@pytest.mark.parametrize("mode", ["json", "sse"])
def test_killed_during_a_skipped_thinking_tool_loop(stack, mode):
    # Claude Code with thinking on, a small tool result after the strong model's thinking and tool
    # call: skipped (the draft is asked without thinking). Killed while the draft answers.
    draft = stack.sims["draft_anthropic"]
    draft.latency.tokens_per_s = SLOW_TOKENS
    if mode == "json":  # nothing sent yet: Envoy's 503 (the SDK's retries would get an answer)
        killer = kill_when_received(stack, "draft_anthropic")
        got = ask(stack, "anthropic", mode, thinking_loop=THINKING_LOOP)
        killer.join()
        assert type(got.exc) is anthropic.ServiceUnavailableError, repr(got.exc)
        assert (got.status, got.path) == (503, "skipped")
    else:  # part of the answer sent: cut, as any skipped stream (not fixable: see above)
        got = ask(stack, "anthropic", mode, thinking_loop=THINKING_LOOP, on_first_content=stack.kill_server)
        assert (got.status, got.path, got.complete) == (200, "skipped", False)
        assert type(got.exc) is httpx2.RemoteProtocolError, repr(got.exc)
    (asked,) = draft.received
    assert asked.json["thinking"] == {"type": "disabled"} and "sim-sig-strong" not in asked.body.decode()
    # The next turn of this loop, with the server dead, goes to the strong model as the client
    # sent it: its thinking blocks and their signatures are its own, so it answers (thinking first).
    stack.clear()
    got = ask(stack, "anthropic", mode, thinking_loop=THINKING_LOOP)
    assert_answered(got, "fallback", STRONG["anthropic"])
    if mode == "json":
        assert got.blocks == ("thinking", "text")
    (sent,) = stack.sims["strong_anthropic"].received
    assert sent.json["messages"] == THINKING_LOOP[:2] + [{**THINKING_LOOP[2], "content": [
        {**THINKING_LOOP[2]["content"][0], "cache_control": {"type": "ephemeral"}}]}]
    assert_every_path_falls_back(stack, "anthropic")


def test_with_the_server_dead_a_loop_whose_last_tool_call_was_the_drafts_is_answered(stack):
    # With thinking on, the API refuses a final assistant tool_use turn that does not start with
    # thinking, and the draft's turns never do. The server turns thinking off for that one
    # request; dead, it cannot: Envoy's fail-open Lua filter does (lua/fail_open.lua).
    got = ask(stack, "anthropic", "json", thinking_loop=THINKING_LOOP_DRAFT_LAST)
    assert_answered(got, "skipped", DRAFT_MODELS["anthropic"])
    stack.kill_server()
    got = ask(stack, "anthropic", "json", thinking_loop=THINKING_LOOP_DRAFT_LAST)
    assert got.exc is None and (got.status, got.path) == (200, "fallback")
    assert stack.sims["strong_anthropic"].received[-1].json["thinking"] == {"type": "disabled"}
