"""Never worse than not being there, with the server gone: what Envoy's own Lua filters
(cascade_extproc/deploy/lua/) do when ext_proc fails open, through a real Envoy.

- fail_open.lua: with thinking on, a tool loop whose last assistant turn the draft answered
  (a tool call without the strong model's signed thinking) is refused by the provider; with the
  server killed, Envoy turns thinking off for that request, every other byte as the client sent it.
- usage_chunk.lua: the usage chunk the server asked for on an OpenAI client's behalf never reaches
  that client, even when the server dies mid-stream.
- x-cascade-path says what happened: `fallback` only where the server should have decided and
  did not; `direct` where there was nothing to decide; `rejected` for Envoy's own 413.

The stack is this module's own: its tests kill (and restart) its server.
"""
import json
import time
import urllib.error
import urllib.request

import anthropic
import openai
import pytest

from cascade_extproc.sim import Latency
from cascade_extproc.sim.validate import thinking_signature
from stack import CLIENT_KEY, Stack

DISABLED = b'{"type":"disabled"}'
THINKING = {"type": "enabled", "budget_tokens": 1024}
TOOL = {"name": "read_file", "description": "Read a file of the repository.",
        "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}
REASONING = "The user wants to know what setup.py does: read it first."


@pytest.fixture(scope="module")
def s(tmp_path_factory):
    st = Stack(tmp_path_factory.mktemp("fail-open"), extra_config={"limits": {"max_body_bytes": 1 << 20}})
    yield st
    st.close()


def server_down(s: Stack) -> None:
    if s.server.poll() is None:
        s.kill_server()
    s.clear()


def server_up(s: Stack) -> None:
    if s.server.poll() is not None:
        s.start_server()
    s.clear()


def tool_loop(first_blocks: list[dict]) -> list[dict]:
    """A tool loop one step in: the assistant's tool call (after `first_blocks`), its result."""
    return [{"role": "user", "content": "What does setup.py do?"},
            {"role": "assistant", "content": [*first_blocks, {"type": "tool_use", "id": "toolu_01",
                                                              "name": "read_file", "input": {"path": "setup.py"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01",
                                          "content": "from setuptools import setup\nsetup(name='demo')"}]}]


def sdk(s: Stack, sent: list[bytes]) -> anthropic.Anthropic:
    """The anthropic SDK, keeping the bytes of every request it sends."""
    def keep(request) -> None:
        sent.append(request.read())
    return anthropic.Anthropic(base_url=s.anthropic_url, api_key=CLIENT_KEY, max_retries=0,
                               http_client=anthropic.DefaultHttpxClient(event_hooks={"request": [keep]}))


def ask(client: anthropic.Anthropic, stream: bool, messages: list[dict]):
    kw = dict(model="claude-sonnet-5", max_tokens=2048, thinking=THINKING, tools=[TOOL], messages=messages)
    if stream:
        with client.messages.stream(**kw) as st:
            return st.response.headers.get("x-cascade-path"), st.get_final_message()
    raw = client.messages.with_raw_response.create(**kw)
    return raw.headers.get("x-cascade-path"), raw.parse()


def with_thinking_disabled(raw: bytes) -> bytes:
    """The client's bytes with the top-level thinking value replaced, and nothing else."""
    key = raw.index(b'"thinking"')  # the top-level key: no message here says "thinking"
    start = raw.index(b":", key) + 1
    while raw[start:start + 1] in b" \t\r\n":
        start += 1
    value, end = json.JSONDecoder().raw_decode(raw.decode(), start)
    assert value == THINKING
    return raw[:start] + DISABLED + raw[end:]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_server_killed_tool_turn_without_thinking_gets_thinking_off(s, stream):
    server_down(s)
    sent: list[bytes] = []
    path, msg = ask(sdk(s, sent), stream, tool_loop([]))  # the draft's turn: no signed thinking
    assert path == "fallback"
    assert msg.content[-1].type == "text" and msg.content[-1].text.startswith("Simulated reply from claude-sonnet-5")
    assert all(b.type != "thinking" for b in msg.content)  # answered without thinking, as asked
    (client_bytes,) = sent
    (got,) = s.sims["strong_anthropic"].received
    assert got.json["thinking"] == {"type": "disabled"}
    assert got.body == with_thinking_disabled(client_bytes)  # every other byte as the client sent it
    assert int(got.headers["content-length"]) == len(got.body)
    assert s.sims["draft_anthropic"].received == []


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_server_killed_tool_turn_with_signed_thinking_passes_untouched(s, stream):
    server_down(s)
    sent: list[bytes] = []
    signed = {"type": "thinking", "thinking": REASONING, "signature": thinking_signature("strong-anthropic", REASONING)}
    path, msg = ask(sdk(s, sent), stream, tool_loop([signed]))  # the strong model's own turn
    assert path == "fallback"
    assert msg.content[0].type == "thinking"  # thinking still on
    (client_bytes,) = sent
    (got,) = s.sims["strong_anthropic"].received
    assert got.body == client_bytes


def post(url: str, body: bytes | None, method: str = "POST", content_type: str = "application/json"):
    req = urllib.request.Request(url, data=body, method=method, headers={
        "content-type": content_type, "x-api-key": CLIENT_KEY, "anthropic-version": "2023-06-01"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers.get_all("x-cascade-path"), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get_all("x-cascade-path"), e.read()


def test_server_up_the_lua_filter_leaves_the_request_to_the_server(s):
    """A body the Lua filter would change, which the server decides to pass unread (it is not
    declared JSON): the provider gets the client's bytes, thinking on, and judges them itself."""
    server_up(s)
    body = json.dumps({"model": "claude-sonnet-5", "max_tokens": 2048, "thinking": THINKING, "tools": [TOOL],
                       "messages": tool_loop([])}).encode()
    status, path, out = post(s.anthropic_url + "/v1/messages", body, content_type="text/plain")
    assert path == ["direct"]
    (got,) = s.sims["strong_anthropic"].received
    assert got.body == body
    assert status == 400 and b"Expected `thinking` or `redacted_thinking`" in out  # the provider's own word


def test_server_killed_paths_say_what_happened(s):
    server_down(s)
    good = json.dumps({"model": "claude-sonnet-5", "max_tokens": 50,
                       "messages": [{"role": "user", "content": "hi"}]}).encode()
    url = s.anthropic_url + "/v1/messages"
    assert post(url, good)[:2] == (200, ["fallback"])  # the server should have decided: it was down
    assert post(url, b"")[:2] == (400, ["direct"])  # nothing to decide: the provider's own 400
    assert post(url, None, method="GET")[:2] == (405, ["direct"])  # not a model call
    huge = json.dumps({"model": "claude-sonnet-5", "max_tokens": 50,
                       "messages": [{"role": "user", "content": "x" * (2 << 20)}]}).encode()
    assert post(url, huge)[:2] == (413, ["rejected"])  # Envoy's own limit, up or down


def test_server_killed_mid_stream_the_usage_chunk_stays_hidden(s):
    """The server asked the provider for usage on the client's behalf, then died: Envoy passes
    the rest of the stream untouched (failure_mode_allow), except the usage chunk."""
    server_up(s)
    s.sims["strong_openai"].latency = Latency(ttft_s=0.2, tokens_per_s=20)
    try:
        client = openai.OpenAI(base_url=s.openai_url, api_key=CLIENT_KEY, max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-5-mini", stream=True, messages=[{"role": "user", "content": "hello there"}])
        assert raw.headers["x-cascade-path"] == "direct"
        chunks, after_kill = [], 0
        for chunk in raw.parse():
            chunks.append(chunk)
            if len(chunks) == 1:
                s.kill_server()
                killed = time.monotonic()
            elif time.monotonic() > killed:
                after_kill += 1
    finally:
        s.sims["strong_openai"].latency = Latency()
    assert after_kill >= 5  # the server died early in the stream
    assert all(c.choices for c in chunks), [c for c in chunks if not c.choices]
    assert chunks[-1].choices[0].finish_reason == "stop" and all(c.usage is None for c in chunks)
    (got,) = s.sims["strong_openai"].received
    assert got.json["stream_options"] == {"include_usage": True}  # the server had asked for it


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_a_skipped_turn_then_the_sidecar_killed_then_the_next_turn_is_answered(s, stream):
    """The whole story: thinking on, the draft answers a turn with a tool call (skipped, through
    the relay: asked without thinking, showing none), the sidecar is killed, and the tool loop's
    next turn, which Envoy now sends to the strong provider unprocessed, is answered."""
    server_up(s)
    client = sdk(s, [])
    messages = [{"role": "user", "content": "sim:tool=read_file"}]
    path, first = ask(client, stream, messages)
    assert path == "skipped"
    assert [b.type for b in first.content][-1] == "tool_use"
    assert all(b.type not in ("thinking", "redacted_thinking") for b in first.content)  # no signature to refuse
    assert json.loads(s.sims["draft_anthropic"].received[-1].body)["thinking"] == {"type": "disabled"}
    server_down(s)
    call = first.content[-1]
    messages += [{"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "ok"}]}]
    path, second = ask(client, stream, messages)
    assert path == "fallback" and second.content[-1].type == "text"
    (got,) = s.sims["strong_anthropic"].received
    assert got.json["thinking"] == {"type": "disabled"}  # Envoy's fail-open filter, not the sidecar
