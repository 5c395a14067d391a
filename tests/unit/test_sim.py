"""The simulated providers, checked with the official SDKs as wire-format ground truth."""
from __future__ import annotations

import asyncio
import json
import re
import threading
import time
import urllib.error
import urllib.request

import anthropic
import openai
import pytest

from cascade_extproc.sim import Latency, SimProvider

MODEL_A = "claude-sim-haiku"
MODEL_O = "gpt-sim-mini"
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]},
                       "days": {"type": "integer"}, "hourly": {"type": "boolean"}, "notes": {"type": "string"}},
        "required": ["city", "unit", "days", "hourly"],
    },
}
WEATHER_INPUT = {"city": "sim", "unit": "c", "days": 1, "hourly": True}
OPENAI_WEATHER = {"type": "function", "function": {"name": "get_weather", "description": WEATHER_TOOL["description"],
                                                   "parameters": WEATHER_TOOL["input_schema"]}}


class LoopThread:
    """An asyncio loop in a daemon thread, so sync SDK clients can talk to the sims."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture(scope="module")
def loop():
    lt = LoopThread()
    yield lt
    lt.close()


@pytest.fixture(scope="module")
def _providers(loop):
    sims = {"anthropic": SimProvider("anthropic", name="a"), "openai": SimProvider("openai", name="o")}
    for sim in sims.values():
        loop.run(sim.start())
    yield sims
    for sim in sims.values():
        loop.run(sim.stop())


@pytest.fixture
def asim(_providers):
    _providers["anthropic"].clear()
    return _providers["anthropic"]


@pytest.fixture
def osim(_providers):
    _providers["openai"].clear()
    return _providers["openai"]


def aclient(sim, key="k"):
    return anthropic.Anthropic(base_url=sim.url, api_key=key, max_retries=0)


def oclient(sim, key="k"):
    return openai.OpenAI(base_url=sim.url, api_key=key, max_retries=0)


def user(text):
    return [{"role": "user", "content": text}]


def raw_post(url, body: bytes, headers):
    req = urllib.request.Request(url, data=body, headers={"content-type": "application/json", **headers})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


# ---- Anthropic ----

def test_anthropic_text_usage_and_recording(asim):
    msg = aclient(asim).messages.create(model=MODEL_A, max_tokens=200, system="Be brief.",
                                        messages=user("What is the capital of France?"))
    text = msg.content[0].text
    assert text.startswith(f"Simulated reply from {MODEL_A}: ")
    assert msg.id.startswith("msg_sim_") and msg.model == MODEL_A and msg.stop_reason == "end_turn"
    # Be . brief . / What is the capital of France ? -> 3 + 7
    assert msg.usage.input_tokens == 10
    assert msg.usage.output_tokens == len(re.findall(r"\w+|[^\w\s]", text))
    assert msg.usage.cache_read_input_tokens == 0
    (rec,) = asim.received
    assert rec.method == "POST" and rec.path == "/v1/messages"
    assert rec.headers.get("x-api-key") == "k" or rec.headers.get("authorization") == "Bearer k"
    assert "anthropic-version" in rec.headers and "Anthropic-Version" not in rec.headers
    assert rec.json["messages"] == user("What is the capital of France?")
    assert json.loads(rec.body) == rec.json


def test_anthropic_deterministic(asim):
    client = aclient(asim)
    texts = [client.messages.create(model=MODEL_A, max_tokens=200, messages=user(q)).content[0].text
             for q in ("same", "same", "different")]
    assert texts[0] == texts[1] != texts[2]


def test_anthropic_tool_call(asim):
    client = aclient(asim)
    msg = client.messages.create(model=MODEL_A, max_tokens=200, tools=[WEATHER_TOOL],
                                 messages=user("weather please sim:tool=get_weather"))
    assert msg.stop_reason == "tool_use"
    (block,) = msg.content
    assert isinstance(block, anthropic.types.ToolUseBlock)
    assert block.name == "get_weather" and block.input == WEATHER_INPUT and block.id.startswith("toolu_sim_")
    # After the tool result, the model answers with text (no tool loop).
    follow = client.messages.create(model=MODEL_A, max_tokens=200, tools=[WEATHER_TOOL], messages=[
        *user("weather please sim:tool=get_weather"),
        {"role": "assistant", "content": [block.model_dump(exclude_none=True, include={"type", "id", "name", "input"})]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": block.id, "content": "sunny"}]}])
    assert follow.stop_reason == "end_turn" and follow.content[0].type == "text"
    forced = client.messages.create(model=MODEL_A, max_tokens=200, tools=[WEATHER_TOOL],
                                    tool_choice={"type": "any"}, messages=user("hi"))
    assert forced.content[0].name == "get_weather"


def test_anthropic_stream_matches_json(asim):
    client = aclient(asim)
    kwargs = dict(model=MODEL_A, max_tokens=200, messages=user("stream me"))
    plain = client.messages.create(**kwargs)
    with client.messages.stream(**kwargs) as stream:
        events = [e.type for e in stream]
        final = stream.get_final_message()
    assert final.content[0].text == plain.content[0].text
    assert final.usage.input_tokens == plain.usage.input_tokens
    assert final.usage.output_tokens == plain.usage.output_tokens
    assert final.stop_reason == "end_turn"
    assert events[0] == "message_start" and events[-1] == "message_stop"
    with client.messages.stream(model=MODEL_A, max_tokens=200, tools=[WEATHER_TOOL],
                                messages=user("sim:tool=get_weather")) as stream:
        final = stream.get_final_message()
    assert final.content[0].input == WEATHER_INPUT and final.stop_reason == "tool_use"


def test_anthropic_sse_wire_format(asim):
    req = urllib.request.Request(f"{asim.url}/v1/messages", headers={"x-api-key": "k"}, data=json.dumps(
        {"model": MODEL_A, "max_tokens": 50, "stream": True, "messages": user("hi")}).encode())
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        raw = resp.read().decode()
    frames = [f for f in raw.split("\n\n") if f]
    types = []
    for f in frames:
        event, data = f.split("\n")
        assert event.startswith("event: ") and data.startswith("data: ")
        assert json.loads(data[6:])["type"] == event[7:]
        types.append(event[7:])
    assert types[:3] == ["message_start", "ping", "content_block_start"]
    assert types[-3:] == ["content_block_stop", "message_delta", "message_stop"]


def test_anthropic_auth(loop, asim):
    status, body = raw_post(f"{asim.url}/v1/messages", b"{}", {})
    assert status == 401 and body["type"] == "error" and body["error"]["type"] == "authentication_error"
    locked = SimProvider("anthropic", api_keys={"good"})
    loop.run(locked.start())
    try:
        with pytest.raises(anthropic.AuthenticationError):
            aclient(locked, key="bad").messages.create(model=MODEL_A, max_tokens=5, messages=user("x"))
        ok = anthropic.Anthropic(base_url=locked.url, auth_token="good", max_retries=0)
        assert ok.messages.create(model=MODEL_A, max_tokens=5, messages=user("x")).content
    finally:
        loop.run(locked.stop())


def test_anthropic_bad_requests(asim):
    status, body = raw_post(f"{asim.url}/v1/messages", b"not json", {"x-api-key": "k"})
    assert status == 400 and body["error"]["type"] == "invalid_request_error"
    status, body = raw_post(f"{asim.url}/v1/messages", json.dumps({"model": MODEL_A, "messages": user("x")}).encode(),
                            {"x-api-key": "k"})
    assert status == 400 and "max_tokens" in body["error"]["message"]
    with pytest.raises(anthropic.BadRequestError):
        aclient(asim).messages.create(model=MODEL_A, max_tokens=5, messages=[])
    with pytest.raises(anthropic.BadRequestError):
        aclient(asim).messages.create(model=MODEL_A, max_tokens=5, messages=[{"role": "system", "content": "x"}])


def test_anthropic_thinking_signature(asim):
    def history(sig):
        return [*user("q"), {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "hmm", "signature": sig}, {"type": "text", "text": "a"}]},
            *user("again")]
    client = aclient(asim)
    assert client.messages.create(model=MODEL_A, max_tokens=5, messages=history("sim-sig-a")).content
    with pytest.raises(anthropic.BadRequestError, match="Invalid signature in thinking block"):
        client.messages.create(model=MODEL_A, max_tokens=5, messages=history("foreign-xyz"))


def test_anthropic_fail_next(asim):
    client = aclient(asim)
    asim.fail_next(500)
    with pytest.raises(anthropic.InternalServerError) as exc:
        client.messages.create(model=MODEL_A, max_tokens=5, messages=user("x"))
    assert exc.value.body["error"]["type"] == "api_error"
    assert client.messages.create(model=MODEL_A, max_tokens=5, messages=user("x")).content
    asim.fail_next(429, count=2)
    for _ in range(2):
        with pytest.raises(anthropic.RateLimitError):
            client.messages.create(model=MODEL_A, max_tokens=5, messages=user("x"))
    asim.fail_next(529)
    with pytest.raises(anthropic.APIStatusError) as exc:
        client.messages.create(model=MODEL_A, max_tokens=5, messages=user("x"))
    assert exc.value.status_code == 529 and exc.value.body["error"]["type"] == "overloaded_error"


def test_anthropic_max_tokens(asim):
    msg = aclient(asim).messages.create(model=MODEL_A, max_tokens=5, messages=user("long answer please"))
    assert msg.stop_reason == "max_tokens" and msg.usage.output_tokens == 5
    assert msg.content[0].text == "Simulated reply from claude-"


def test_anthropic_verify(asim):
    client = aclient(asim)
    question, verify = "What is 2+2?", "Candidate is fine? [cascade-verify nonce=0af3] reply ACCEPT 0af3"
    conv = [*user(question), {"role": "assistant", "content": "draft answer"}, *user(verify)]
    msg = client.messages.create(model=MODEL_A, max_tokens=50, messages=conv)
    assert msg.content[0].text == "ACCEPT 0af3"
    direct = client.messages.create(model=MODEL_A, max_tokens=50, messages=user(question + " sim:reject"))
    rejected = client.messages.create(model=MODEL_A, max_tokens=50, messages=[
        *user(question + " sim:reject"), {"role": "assistant", "content": "draft answer"}, *user(verify)])
    assert rejected.content[0].text == direct.content[0].text
    assert rejected.usage.input_tokens > direct.usage.input_tokens


def test_anthropic_count_tokens_and_models(asim):
    client = aclient(asim)
    kwargs = dict(model=MODEL_A, messages=user("count these words"), tools=[WEATHER_TOOL])
    counted = client.messages.count_tokens(**kwargs).input_tokens
    assert counted == client.messages.create(max_tokens=5, **kwargs).usage.input_tokens
    assert MODEL_A in [m.id for m in client.models.list()]
    assert [r.path for r in asim.received] == ["/v1/messages/count_tokens", "/v1/messages", "/v1/models"]


# ---- OpenAI ----

def test_openai_text_and_recording(osim, asim):
    resp = oclient(osim).chat.completions.create(model=MODEL_O, messages=[
        {"role": "system", "content": "Be brief."}, *user("What is the capital of France?")])
    choice = resp.choices[0]
    assert choice.finish_reason == "stop" and choice.message.tool_calls is None
    assert choice.message.content.startswith(f"Simulated reply from {MODEL_O}: ")
    assert resp.id.startswith("chatcmpl-sim") and resp.object == "chat.completion"
    assert resp.usage.prompt_tokens == 10
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens
    (rec,) = osim.received
    assert rec.path == "/v1/chat/completions" and rec.headers["authorization"] == "Bearer k"
    # Same neutral content, same model name -> same answer on both APIs.
    same = aclient(asim).messages.create(model=MODEL_O, max_tokens=200, system="Be brief.",
                                         messages=user("What is the capital of France?"))
    assert same.content[0].text == choice.message.content
    assert same.usage.output_tokens == resp.usage.completion_tokens


def test_openai_stream_with_usage(osim):
    client = oclient(osim)
    plain = client.chat.completions.create(model=MODEL_O, messages=user("stream me"))
    chunks = list(client.chat.completions.create(model=MODEL_O, messages=user("stream me"), stream=True,
                                                 stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    no_usage = list(client.chat.completions.create(model=MODEL_O, messages=user("stream me"), stream=True))
    assert all(c.usage is None for c in no_usage)


def test_openai_tools(osim):
    client = oclient(osim)
    resp = client.chat.completions.create(model=MODEL_O, tools=[OPENAI_WEATHER],
                                          messages=user("sim:tool=get_weather"))
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.id.startswith("call_sim_") and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == WEATHER_INPUT
    for choice_arg in ("required", {"type": "function", "function": {"name": "get_weather"}}):
        forced = client.chat.completions.create(model=MODEL_O, tools=[OPENAI_WEATHER], tool_choice=choice_arg,
                                                messages=user("hi"))
        assert forced.choices[0].message.tool_calls[0].function.name == "get_weather"
    follow = client.chat.completions.create(model=MODEL_O, tools=[OPENAI_WEATHER], messages=[
        *user("sim:tool=get_weather"), choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"}])
    assert follow.choices[0].finish_reason == "stop" and follow.choices[0].message.content
    stream = client.chat.completions.create(model=MODEL_O, tools=[OPENAI_WEATHER], stream=True,
                                            messages=user("sim:tool=get_weather"))
    deltas = [d for c in stream for d in (c.choices[0].delta.tool_calls or [])]
    assert deltas[0].id == call.id and deltas[0].function.name == "get_weather"
    assert json.loads("".join(d.function.arguments or "" for d in deltas)) == WEATHER_INPUT


def test_openai_errors(loop, osim):
    status, body = raw_post(f"{osim.url}/chat/completions", b"{}", {})
    assert status == 401 and body["error"]["code"] == "invalid_api_key"
    locked = SimProvider("openai", api_keys={"good"})
    loop.run(locked.start())
    try:
        with pytest.raises(openai.AuthenticationError):
            oclient(locked, key="bad").chat.completions.create(model=MODEL_O, messages=user("x"))
    finally:
        loop.run(locked.stop())
    client = oclient(osim)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL_O, messages=[{"role": "robot", "content": "x"}])
    osim.fail_next(500)
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model=MODEL_O, messages=user("x"))
    assert client.chat.completions.create(model=MODEL_O, messages=user("x")).choices


def test_openai_verify_and_max_tokens(osim):
    client = oclient(osim)
    verify = user("ok? [cascade-verify nonce=beef01]")
    resp = client.chat.completions.create(model=MODEL_O, messages=[
        *user("q"), {"role": "assistant", "content": "draft"}, *verify])
    assert resp.choices[0].message.content == "ACCEPT beef01"
    resp = client.chat.completions.create(model=MODEL_O, messages=[
        *user("q sim:reject"), {"role": "assistant", "content": "draft"}, *verify])
    assert resp.choices[0].message.content.startswith("Simulated reply")
    short = client.chat.completions.create(model=MODEL_O, max_completion_tokens=3, messages=user("q"))
    assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens == 3
    assert short.choices[0].message.content == "Simulated reply from"
    assert [m.id for m in client.models.list()]


def test_latency(loop):
    slow = SimProvider("openai", latency=Latency(ttft_s=0.2, tokens_per_s=200))
    loop.run(slow.start())
    try:
        client = oclient(slow)
        t0 = time.monotonic()
        client.chat.completions.create(model=MODEL_O, messages=user("x"))
        assert time.monotonic() - t0 >= 0.25  # 0.2 s + ~25 tokens at 200/s
        t0 = time.monotonic()
        stream = client.chat.completions.create(model=MODEL_O, messages=user("x"), stream=True)
        first = next(c for c in stream if c.choices and c.choices[0].delta.content)
        ttft = time.monotonic() - t0
        list(stream)
        assert first and ttft >= 0.2 and time.monotonic() - t0 >= 0.25
    finally:
        loop.run(slow.stop())
