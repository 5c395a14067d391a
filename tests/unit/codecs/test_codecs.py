"""Codecs, with the official SDKs' own models and stream accumulators as ground truth."""
from __future__ import annotations

import json

import anthropic as anthropic_sdk
import httpx2
import openai as openai_sdk
import pytest
from anthropic.types import Message
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from cascade_extproc import codecs
from cascade_extproc.cascade import bodies, verify
from cascade_extproc.codecs import CodecError, anthropic, openai, parse_request, splice
from cascade_extproc.types import Api, Block, Response, StopReason, Usage

LONG_TEXT = "The answer, in detail: " + " ".join(f"word{i}" for i in range(60)) + " — done ✓."
TOOL_INPUT = {"path": "src/ünïcode.py", "lines": [1, 2, 3], "opts": {"recursive": True, "depth": None}}
TOOL_USE_BLOCK = {"type": "tool_use", "id": "toolu_1", "name": "read_file", "input": {"path": "a"}}
THINKING = "Let me think about this step by step. " * 5

ANTHROPIC_MESSAGE = {
    "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5-20250929",
    "content": [
        {"type": "thinking", "thinking": THINKING, "signature": "EqQBCkYIBxgCKkC"},
        {"type": "text", "text": LONG_TEXT},
        {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "read_file", "input": TOOL_INPUT},
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {"input_tokens": 2095, "output_tokens": 503, "cache_creation_input_tokens": 120,
              "cache_read_input_tokens": 1800, "service_tier": "standard"},
}

OPENAI_COMPLETION = {
    "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
    "object": "chat.completion",
    "created": 1741570283,
    "model": "gpt-4.1-2025-04-14",
    "choices": [{
        "index": 0,
        "message": {
            "role": "assistant",
            "content": LONG_TEXT,
            "refusal": None,
            "tool_calls": [
                {"id": "call_abc", "type": "function",
                 "function": {"name": "read_file", "arguments": json.dumps(TOOL_INPUT)}},
                {"id": "call_def", "type": "function", "function": {"name": "now", "arguments": ""}},
            ],
        },
        "logprobs": None,
        "finish_reason": "tool_calls",
    }],
    "usage": {"prompt_tokens": 1117, "completion_tokens": 46, "total_tokens": 1163,
              "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
              "completion_tokens_details": {"reasoning_tokens": 0}},
    "system_fingerprint": "fp_fc9f1d7035",
}


def neutral(stop=StopReason.TOOL_USE, thinking=True) -> Response:
    blocks = [Block("thinking", text=THINKING, signature="sig")] if thinking else []
    blocks += [Block("text", text=LONG_TEXT),
               Block("tool_use", id="toolu_1", name="read_file", input=TOOL_INPUT),
               Block("tool_use", id="toolu_2", name="now", input={})]
    return Response(id="msg_1", model="draft-model", blocks=blocks, stop_reason=stop,
                    usage=Usage(input_tokens=100, output_tokens=50, cache_read_tokens=30, cache_write_tokens=7))


def sse_frames(raw: bytes) -> list[tuple[str | None, str]]:
    """(event, data) per SSE frame, parsed by hand."""
    frames = []
    assert raw.endswith(b"\n\n")
    for chunk in raw.decode().split("\n\n"):
        if not chunk:
            continue
        event, data = None, []
        for line in chunk.split("\n"):
            field, _, value = line.partition(": ")
            if field == "event":
                event = value
            elif field == "data":
                data.append(value)
            else:
                raise AssertionError(f"unexpected SSE line {line!r}")
        frames.append((event, "\n".join(data)))
    return frames


def mock_http(body: bytes, content_type: str) -> tuple[httpx2.Client, list]:
    """An HTTP client that answers every request with `body`, and records the requests."""
    seen = []

    def handler(request):
        seen.append(request)
        return httpx2.Response(200, content=body, headers={"content-type": content_type})

    return httpx2.Client(transport=httpx2.MockTransport(handler)), seen


# --- requests ------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, why", [
    (b"{not json", "not valid JSON"),
    (b"\xff\xfe", "not valid JSON"),
    (b"[1, 2]", "not a JSON object"),
    (b'"messages"', "not a JSON object"),
    (b'{"model": "x", "max_tokens": 5}', "messages: a non-empty list"),
    (b'{"model": "x", "max_tokens": 5, "messages": {"role": "user"}}', "messages: a non-empty list"),
])
def test_parse_request_rejects(raw, why):
    with pytest.raises(CodecError, match=why):
        parse_request(Api.ANTHROPIC, raw, {})


USER = [{"role": "user", "content": "hi"}]
GOOD_REQUEST = {Api.ANTHROPIC: {"model": "claude-sonnet-5", "max_tokens": 50, "messages": USER},
                Api.OPENAI: {"model": "gpt-6.2-sol", "messages": USER}}
# Shapes the real APIs refuse with a 400 (the simulated providers too). The router must not route
# them: the draft would answer what the strong API refuses.
BAD_SHAPES = {
    "model null": {"model": None}, "model a number": {"model": 5}, "model a list": {"model": ["a"]},
    "model empty": {"model": ""}, "model absent": {"model": ...},
    'stream "yes"': {"stream": "yes"}, "stream 1": {"stream": 1},
    "messages an object": {"messages": {"role": "user", "content": "hi"}}, "messages empty": {"messages": []},
    "messages a string": {"messages": "hi"}, "a message not an object": {"messages": ["hi"]},
    "a message with no role": {"messages": [{"content": "hi"}]},
    "a message with a bad role": {"messages": [{"role": "robot", "content": "hi"}]},
    "a message content a number": {"messages": [{"role": "user", "content": 5}]},
    "max_tokens 0": {"max_tokens": 0}, "max_tokens a string": {"max_tokens": "50"},
    "max_tokens true": {"max_tokens": True}, "max_tokens 1.5": {"max_tokens": 1.5},
    "tools an object": {"tools": {"name": "x"}}, "tools a list of strings": {"tools": ["x"]},
    "tool_choice a number": {"tool_choice": 1}, "temperature a string": {"temperature": "hot"},
}
ANTHROPIC_ONLY = {
    "max_tokens absent": {"max_tokens": ...}, "system a number": {"system": 5},
    "tool_choice a string": {"tool_choice": "auto"}, "tool_choice of a bad type": {"tool_choice": {"type": "all"}},
    "thinking a string": {"thinking": "on"}, "stop_sequences a string": {"stop_sequences": "END"},
    "a message content of strings": {"messages": [{"role": "user", "content": ["hi"]}]},
}
OPENAI_ONLY = {
    "max_completion_tokens 0": {"max_completion_tokens": 0}, "n 0": {"n": 0},
    "stream_options without stream": {"stream_options": {"include_usage": True}},
    "reasoning_effort a number": {"reasoning_effort": 1}, "stop a number": {"stop": 5},
}


def _with(api, change):
    body = {**GOOD_REQUEST[api], **change}
    return {k: v for k, v in body.items() if v is not ...}


@pytest.mark.parametrize("api, name, change", [
    *((api, name, change) for api in Api for name, change in BAD_SHAPES.items()),
    *((Api.ANTHROPIC, name, change) for name, change in ANTHROPIC_ONLY.items()),
    *((Api.OPENAI, name, change) for name, change in OPENAI_ONLY.items()),
])
def test_parse_request_rejects_what_the_api_refuses(api, name, change):
    with pytest.raises(CodecError):
        parse_request(api, json.dumps(_with(api, change)).encode(), {})


@pytest.mark.parametrize("api", list(Api))
def test_parse_request_accepts_the_good_shapes(api):
    extra = {"stream": True, "tools": [], "temperature": 0.5, "system": None, "metadata": None}
    if api is Api.ANTHROPIC:
        extra.update(tool_choice={"type": "tool", "name": "x"}, thinking={"type": "adaptive"},
                     system=[{"type": "text", "text": "s"}], stop_sequences=["END"])
    else:
        extra.update(stream_options={"include_usage": True}, max_completion_tokens=9, tool_choice="required",
                     messages=[{"role": "developer", "content": "d"}, {"role": "assistant", "content": None},
                               *USER], stop=["a"])
    for body in (GOOD_REQUEST[api], {**GOOD_REQUEST[api], **extra}):
        assert parse_request(api, json.dumps(body).encode(), {}).body == body


@pytest.mark.parametrize("raw", [
    # orjson keeps the last value: the draft would get "b", the provider may refuse (or read "a").
    b'{"model":"a","max_tokens":5,"messages":[{"role":"user","content":"hi"}],"model":"b"}',
    b'{"model": "a", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}], "model": "b"}',
    b'{"model": "a", "max_tokens": 5, "messages": [], "messages": [{"role": "user", "content": "hi"}]}',
    b'{"model":"a","max_tokens":5,"messages":[{"role":"user","content":"hi"}],"mod\\u0065l":"a"}',  # same key, escaped
    b'{"model":"\\u00e9","max_tokens":5,"messages":[{"role":"user","content":"hi"}],"model":"b"}',  # not canonical
    b'{"model":"a","max_tokens":5,"messages":[{"role":"user","content":"hi"}],"a key":1,"a key":2}',  # odd name
    b'{"model": "a", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}',  # spaced
])
def test_parse_request_rejects_a_duplicated_top_level_key(raw):
    for api in Api:
        with pytest.raises(CodecError, match="duplicate top-level key"):
            parse_request(api, raw, {})


@pytest.mark.parametrize("raw", [
    b'{"model":"a","max_tokens":5,"messages":[{"role":"user","content":[{"type":"text","text":"a"},'
    b'{"type":"text","text":"b"}]}],"metadata":{"model":1,"x":{"model":2}}}',  # nested repeats: not top-level
    b'{"model": "\\u00e9", "max_tokens": 5,\n "messages": [{"role": "user", "content": "hi  there"}]}\n',
    b'{"model":1e0,"max_tokens":5,"messages":[{"role":"user","content":"hi"}]}'.replace(b"1e0", b'"m"'),
])
def test_parse_request_accepts_repeats_below_the_top_level_and_any_formatting(raw):
    assert parse_request(Api.ANTHROPIC, raw, {}).body["max_tokens"] == 5


def test_parse_request_keeps_body_and_headers():
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hé"}]}
    req = parse_request(Api.OPENAI, json.dumps(body).encode(), {"authorization": "Bearer k"})
    assert (req.api, req.body, req.headers, req.model, req.stream) == (
        Api.OPENAI, body, {"authorization": "Bearer k"}, "m", True)


# --- Anthropic -----------------------------------------------------------------------------

def test_anthropic_parse_response():
    r = anthropic.parse_response(ANTHROPIC_MESSAGE)
    assert r.id == "msg_01XFDUDYJgAACzvnptvVoYEL"
    assert r.model == "claude-sonnet-4-5-20250929"
    assert r.stop_reason is StopReason.TOOL_USE
    assert r.blocks == [
        Block("thinking", text=THINKING, signature="EqQBCkYIBxgCKkC"),
        Block("text", text=LONG_TEXT),
        Block("tool_use", id="toolu_01A09q90qw90lq917835lq9", name="read_file", input=TOOL_INPUT),
    ]
    assert r.text == LONG_TEXT
    assert r.usage == Usage(input_tokens=2095, output_tokens=503, cache_read_tokens=1800, cache_write_tokens=120)


def test_anthropic_parse_response_rejects_non_message():
    with pytest.raises(CodecError):
        anthropic.parse_response({"type": "error", "error": {"type": "overloaded_error"}})
    with pytest.raises(CodecError):
        anthropic.parse_response([ANTHROPIC_MESSAGE])


@pytest.mark.parametrize("stop", list(StopReason))
def test_anthropic_encode_json_round_trip(stop):
    r = neutral(stop)
    assert anthropic.parse_response(json.loads(anthropic.encode_json(r))) == r
    real = anthropic.parse_response(ANTHROPIC_MESSAGE)
    assert anthropic.parse_response(json.loads(anthropic.encode_json(real))) == real


def test_anthropic_encode_json_validates_with_sdk_model():
    r = neutral()
    msg = Message.model_validate(json.loads(anthropic.encode_json(r)))
    assert [b.type for b in msg.content] == ["thinking", "text", "tool_use", "tool_use"]
    assert msg.content[1].text == LONG_TEXT
    assert msg.content[2].input == TOOL_INPUT
    assert msg.stop_reason == "tool_use"
    assert (msg.usage.input_tokens, msg.usage.output_tokens) == (100, 50)
    assert (msg.usage.cache_read_input_tokens, msg.usage.cache_creation_input_tokens) == (30, 7)


def test_anthropic_encode_sse_frames():
    r = neutral()
    frames = sse_frames(anthropic.encode_sse(r))
    events = [json.loads(d) for _, d in frames]
    for name, ev in zip([e for e, _ in frames], events):
        assert name == ev["type"]  # the `event:` line names the data's type
    kinds = [e["type"] for e in events]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    start = events[0]["message"]
    assert start["content"] == [] and start["stop_reason"] is None and start["id"] == "msg_1"

    # Every block: start, one or more deltas, stop, in index order.
    body = kinds[1:-2]
    per_block: dict[int, list[dict]] = {}
    expect_index = 0
    i = 0
    while i < len(body):
        assert body[i] == "content_block_start" and events[1 + i]["index"] == expect_index
        i += 1
        deltas = []
        while body[i] == "content_block_delta":
            assert events[1 + i]["index"] == expect_index
            deltas.append(events[1 + i]["delta"])
            i += 1
        assert deltas, "a block needs at least one delta"
        assert body[i] == "content_block_stop" and events[1 + i]["index"] == expect_index
        per_block[expect_index] = deltas
        i += 1
        expect_index += 1
    assert expect_index == len(r.blocks)

    thinking = per_block[0]
    assert "".join(d["thinking"] for d in thinking if d["type"] == "thinking_delta") == THINKING
    assert [d["signature"] for d in thinking if d["type"] == "signature_delta"] == ["sig"]
    text_deltas = per_block[1]
    assert len(text_deltas) > 1  # long text arrives as a real stream
    assert all(d["type"] == "text_delta" for d in text_deltas)
    assert "".join(d["text"] for d in text_deltas) == LONG_TEXT
    assert json.loads("".join(d["partial_json"] for d in per_block[2])) == TOOL_INPUT
    assert json.loads("".join(d["partial_json"] for d in per_block[3])) == {}
    assert events[-2]["delta"]["stop_reason"] == "tool_use"
    assert events[-2]["usage"]["output_tokens"] == 50


@pytest.mark.parametrize("thinking", [True, False])
def test_anthropic_encode_sse_accumulated_by_sdk(thinking):
    """The SDK's own stream accumulator rebuilds exactly the message we encoded."""
    r = neutral(thinking=thinking)
    http, _ = mock_http(anthropic.encode_sse(r), "text/event-stream")
    client = anthropic_sdk.Anthropic(api_key="k", base_url="http://test", http_client=http, max_retries=0)
    with client.messages.stream(model="m", max_tokens=100, messages=[{"role": "user", "content": "hi"}]) as s:
        text = "".join(s.text_stream)
        msg = s.get_final_message()
    assert text == LONG_TEXT
    assert msg.id == "msg_1" and msg.model == "draft-model" and msg.stop_reason == "tool_use"
    got = [(b.type, getattr(b, "text", None) or getattr(b, "thinking", None), getattr(b, "input", None))
           for b in msg.content]
    expected = ([("thinking", THINKING, None)] if thinking else []) + [
        ("text", LONG_TEXT, None), ("tool_use", None, TOOL_INPUT), ("tool_use", None, {})]
    assert got == expected
    if thinking:
        assert msg.content[0].signature == "sig"
    assert (msg.usage.input_tokens, msg.usage.output_tokens) == (100, 50)
    assert (msg.usage.cache_read_input_tokens, msg.usage.cache_creation_input_tokens) == (30, 7)


def test_anthropic_encode_sse_empty_text():
    r = Response(id="m", model="x", blocks=[Block("text", text="")], stop_reason=StopReason.END_TURN)
    frames = [json.loads(d) for _, d in sse_frames(anthropic.encode_sse(r))]
    kinds = [f["type"] for f in frames]
    assert kinds[1:4] == ["content_block_start", "content_block_stop", "message_delta"]
    assert frames[1]["content_block"] == {"type": "text", "text": ""}


def _appended(raw: bytes, out: bytes) -> bytes:
    """What `out` has between the client's bytes before and after the closing `]` of messages."""
    close = raw.rindex(b"]")
    assert out.startswith(raw[:close]) and out.endswith(raw[close:])
    return out[close:len(out) - (len(raw) - close)]


def test_anthropic_verify_body_string_content():
    body = {"model": "m", "max_tokens": 64, "system": "sys", "messages": [
        {"role": "user", "content": "first"}, {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "second", "extra": 1}]}
    raw = json.dumps(body).encode()
    req = parse_request(Api.ANTHROPIC, raw, {})
    draft = Response(id="d", model="draft", blocks=[Block("text", text="DRAFT")], stop_reason=StopReason.END_TURN)
    out = bodies.verify_body(req, draft, "00ff")
    assert req.raw == raw and json.dumps(req.body) == json.dumps(body)  # the input is not mutated
    parsed = json.loads(out)
    assert json.dumps(parsed["messages"][:-1]) == json.dumps(body["messages"])
    check = {"role": "user", "content": [{"type": "text", "text": verify.instruction(draft, "00ff")}]}
    assert parsed["messages"][-1] == check
    assert {k: v for k, v in parsed.items() if k != "messages"} == {"model": "m", "max_tokens": 64, "system": "sys"}
    assert json.loads(_appended(raw, out).removeprefix(b",")) == check


def test_anthropic_append_message_after_tool_result_keeps_cache_control():
    result = {"type": "tool_result", "tool_use_id": "toolu_1", "content": "42",
              "cache_control": {"type": "ephemeral"}}
    body = {"messages": [{"role": "user", "content": "q"},
                         {"role": "assistant", "content": [TOOL_USE_BLOCK]},
                         {"role": "user", "content": [result]}]}
    raw = json.dumps(body, indent=2).encode()
    check = {"role": "user", "content": [{"type": "text", "text": "CHECK"}]}
    out = splice.append_message(raw, check)
    parsed = json.loads(out)
    assert json.dumps(parsed["messages"][:-1]) == json.dumps(body["messages"])
    assert parsed["messages"][2]["content"] == [result]  # the cache breakpoint stays where it was
    assert parsed["messages"][3] == check
    assert len(parsed["messages"]) == 4
    assert _appended(raw, out) == b"," + codecs.dumps(check)


def test_anthropic_append_message_after_assistant():
    body = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "prefill"}]}
    raw = json.dumps(body).encode()
    out = json.loads(splice.append_message(raw, {"role": "user", "content": [{"type": "text", "text": "CHECK"}]}))
    assert out["messages"][:2] == body["messages"]
    assert out["messages"][2] == {"role": "user", "content": [{"type": "text", "text": "CHECK"}]}
    assert len(body["messages"]) == 2


def test_anthropic_with_model():
    body = {"model": "claude-sonnet", "stream": True, "messages": []}
    assert anthropic.with_model(body, "d", stream=False) == {"model": "d", "stream": False, "messages": []}
    assert anthropic.with_model(body, "d") == {"model": "d", "stream": True, "messages": []}
    assert body["model"] == "claude-sonnet" and body["stream"] is True



# --- OpenAI --------------------------------------------------------------------------------

def test_openai_parse_response():
    r = openai.parse_response(OPENAI_COMPLETION)
    assert r.id == "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG"
    assert r.model == "gpt-4.1-2025-04-14"
    assert r.stop_reason is StopReason.TOOL_USE
    assert r.blocks == [Block("text", text=LONG_TEXT),
                        Block("tool_use", id="call_abc", name="read_file", input=TOOL_INPUT),
                        Block("tool_use", id="call_def", name="now", input={})]
    # Cached tokens are split out of prompt_tokens.
    assert r.usage == Usage(input_tokens=1117 - 1024, output_tokens=46, cache_read_tokens=1024)


def test_openai_usage_with_cache_writes():
    # From GPT-5.6 on, OpenAI bills cache writes (1.25x input) and reports them inside prompt_tokens.
    data = {**OPENAI_COMPLETION, "usage": {"prompt_tokens": 5000, "completion_tokens": 40, "total_tokens": 5040,
                                           "prompt_tokens_details": {"cached_tokens": 3000, "cache_write_tokens": 1500}}}
    u = openai.parse_response(data).usage
    assert u == Usage(input_tokens=500, output_tokens=40, cache_read_tokens=3000, cache_write_tokens=1500)
    # and back, as the openai SDK reads it
    c = ChatCompletion.model_validate(json.loads(openai.encode_json(openai.parse_response(data), created=1)))
    assert c.usage.prompt_tokens == 5000 and c.usage.prompt_tokens_details.cache_write_tokens == 1500


@pytest.mark.parametrize("finish, stop", [
    ("stop", StopReason.END_TURN), ("length", StopReason.MAX_TOKENS), ("tool_calls", StopReason.TOOL_USE),
    ("function_call", StopReason.TOOL_USE), ("content_filter", StopReason.END_TURN), (None, StopReason.END_TURN),
])
def test_openai_finish_reasons(finish, stop):
    data = {"object": "chat.completion", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "x"}, "finish_reason": finish}]}
    assert openai.parse_response(data).stop_reason is stop


def test_openai_parse_response_reasoning_content_and_no_usage():
    data = {"object": "chat.completion", "id": "c", "model": "deepseek-reasoner", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "hi", "reasoning_content": "hmm"},
         "finish_reason": "stop"}]}
    r = openai.parse_response(data)
    assert r.blocks == [Block("thinking", text="hmm"), Block("text", text="hi")]
    assert r.usage == Usage()


@pytest.mark.parametrize("data", [
    {"object": "chat.completion.chunk", "choices": [{}]},
    {"object": "chat.completion", "choices": []},
    {"error": {"message": "x"}},
    {"object": "chat.completion", "choices": [{"message": {"tool_calls": [
        {"id": "c", "function": {"name": "f", "arguments": "{broken"}}]}}]},
])
def test_openai_parse_response_rejects(data):
    with pytest.raises(CodecError):
        openai.parse_response(data)


def test_openai_encode_json_validates_with_sdk_model():
    r = neutral()
    raw = openai.encode_json(r, created=1700000000)
    c = ChatCompletion.model_validate(json.loads(raw))
    assert (c.id, c.created, c.model, c.object) == ("msg_1", 1700000000, "draft-model", "chat.completion")
    choice = c.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == LONG_TEXT
    calls = choice.message.tool_calls
    assert [(t.id, t.function.name, json.loads(t.function.arguments)) for t in calls] == [
        ("toolu_1", "read_file", TOOL_INPUT), ("toolu_2", "now", {})]
    # Neutral input excludes cache reads and writes; OpenAI's prompt_tokens includes them.
    assert c.usage.prompt_tokens == 137 and c.usage.completion_tokens == 50 and c.usage.total_tokens == 187
    assert c.usage.prompt_tokens_details.cached_tokens == 30
    assert c.usage.prompt_tokens_details.cache_write_tokens == 7


def test_openai_encode_json_round_trip():
    real = openai.parse_response(OPENAI_COMPLETION)
    assert openai.parse_response(json.loads(openai.encode_json(real, 1))) == real


def test_openai_encode_json_text_only_has_no_tool_calls():
    r = Response(id="c", model="m", blocks=[Block("text", text="hi")], stop_reason=StopReason.MAX_TOKENS)
    c = ChatCompletion.model_validate(json.loads(openai.encode_json(r, 1)))
    assert c.choices[0].message.tool_calls is None
    assert c.choices[0].finish_reason == "length"
    only_tools = Response(id="c", model="m", blocks=[Block("tool_use", id="t", name="f")],
                          stop_reason=StopReason.TOOL_USE)
    assert json.loads(openai.encode_json(only_tools, 1))["choices"][0]["message"]["content"] is None


@pytest.mark.parametrize("include_usage", [True, False])
def test_openai_encode_sse_chunks_validate(include_usage):
    r = neutral()
    frames = sse_frames(openai.encode_sse(r, 1700000000, include_usage))
    assert all(event is None for event, _ in frames)
    assert frames[-1][1] == "[DONE]"
    chunks = [ChatCompletionChunk.model_validate(json.loads(d)) for _, d in frames[:-1]]
    assert all(c.id == "msg_1" and c.created == 1700000000 and c.model == "draft-model" for c in chunks)
    with_choices = [c for c in chunks if c.choices]
    assert with_choices[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in with_choices) == LONG_TEXT
    calls: dict[int, dict] = {}
    for c in with_choices:
        for t in c.choices[0].delta.tool_calls or []:
            call = calls.setdefault(t.index, {"id": t.id, "name": t.function.name, "args": ""})
            call["args"] += t.function.arguments or ""
    assert [(i, c["id"], c["name"], json.loads(c["args"])) for i, c in sorted(calls.items())] == [
        (0, "toolu_1", "read_file", TOOL_INPUT), (1, "toolu_2", "now", {})]
    finishes = [c.choices[0].finish_reason for c in with_choices]
    assert finishes[-1] == "tool_calls" and all(f is None for f in finishes[:-1])
    usage_chunks = [c for c in chunks if c.usage is not None]
    if include_usage:
        assert chunks[-1] is usage_chunks[0] and len(usage_chunks) == 1 and chunks[-1].choices == []
        assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (137, 50)
    else:
        assert usage_chunks == [] and all(c.choices for c in chunks)


def test_openai_encode_sse_accumulated_by_sdk():
    r = neutral()
    http, _ = mock_http(openai.encode_sse(r, 1700000000, True), "text/event-stream")
    client = openai_sdk.OpenAI(api_key="k", base_url="http://test/v1", http_client=http, max_retries=0)
    with client.chat.completions.stream(model="m", messages=[{"role": "user", "content": "hi"}],
                                        stream_options={"include_usage": True}) as s:
        final = s.get_final_completion()
    msg = final.choices[0].message
    assert msg.content == LONG_TEXT
    assert [(t.id, t.function.name, json.loads(t.function.arguments)) for t in msg.tool_calls] == [
        ("toolu_1", "read_file", TOOL_INPUT), ("toolu_2", "now", {})]
    assert final.choices[0].finish_reason == "tool_calls"
    assert final.usage.completion_tokens == 50


def test_openai_verify_body_keeps_earlier_messages_byte_identical():
    messages = [{"role": "system", "content": "sys"}, {"role": "user", "content": [{"type": "text", "text": "q"}]},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "c", "content": "42"}]
    body = {"model": "gpt", "tools": [], "messages": messages}
    raw = json.dumps(body, ensure_ascii=False, separators=(", ", ":")).encode()
    req = parse_request(Api.OPENAI, raw, {})
    draft = Response(id="d", model="draft", blocks=[Block("text", text="DRAFT")], stop_reason=StopReason.END_TURN)
    out = bodies.verify_body(req, draft, "00ff")
    assert req.raw == raw and req.body == body
    parsed = json.loads(out)
    assert json.dumps(parsed["messages"][:-1]) == json.dumps(messages)
    check = {"role": "user", "content": verify.instruction(draft, "00ff")}
    assert parsed["messages"][-1] == check
    assert {k: v for k, v in parsed.items() if k != "messages"} == {"model": "gpt", "tools": []}
    assert json.loads(_appended(raw, out).removeprefix(b",")) == check


def test_openai_with_model_stream_options():
    body = {"model": "gpt-4.1", "stream": True, "stream_options": {"include_usage": True}, "messages": []}
    assert openai.with_model(body, "d", stream=False) == {"model": "d", "stream": False, "messages": []}
    assert openai.with_model(body, "d") == {**body, "model": "d"}
    assert openai.with_model(body, "d", stream=True)["stream_options"] == {"include_usage": True}
    assert body["stream_options"] == {"include_usage": True} and body["model"] == "gpt-4.1"


def test_one_codec_per_api_with_everything_codec_lists():
    """codecs.for_api is the one lookup; each API's module provides every member of codecs.Codec,
    taking the same arguments (Anthropic's take and ignore OpenAI's `created`, `include_usage`)."""
    import inspect

    from cascade_extproc.codecs import Codec, for_api

    assert for_api(Api.ANTHROPIC) is anthropic and for_api(Api.OPENAI) is openai
    members = [n for n in vars(Codec) if not n.startswith("_")]
    for api in Api:
        for name in members:
            want = [p for p in inspect.signature(getattr(Codec, name)).parameters if p != "self"]
            impl = getattr(for_api(api), name)
            got = list(inspect.signature(impl.__init__ if inspect.isclass(impl) else impl).parameters)
            assert got[1:] == want if inspect.isclass(impl) else got == want, (api, name, got, want)
