"""Round trips through the codecs: requests, responses and streams, within one API and across both.

Where an API cannot carry something, the expected value is normalized by the functions below;
each says what legitimately changes and why.
"""
from __future__ import annotations

import functools
import json
import re
import string
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from cascade_extproc.codecs import anthropic, openai
from cascade_extproc.codecs.sse import SseParser, frame
from cascade_extproc.codecs.stream import Assembler, events_of
from cascade_extproc.codecs.translate import ResponsePlan, ResponseTranslator, read_json
from cascade_extproc.types import (Api, Block, ChatRequest, Message, Response, StopReason, Tool,
                                   Usage)

SETTINGS = settings(max_examples=150, deadline=None)
ANTHROPIC_ID = re.compile(r"^[a-zA-Z0-9_-]+$")
CREATED = 1700000000

# ---- strategies -----------------------------------------------------------------------------------

TEXT = st.one_of(
    st.text(max_size=20),
    st.sampled_from(['"', "\\", "]}", "é😀中", "\n\r\t", "data: x\n\n", "[DONE]", "\x00"]),
    st.text(max_size=8).map(lambda s: (s + " é😀\"") * 20),  # longer than one stream delta
)
_ID_CHARS = string.ascii_letters + string.digits + "_-"
IDS = st.text(st.sampled_from(_ID_CHARS), min_size=1, max_size=24)
ANY_IDS = st.text(min_size=1, max_size=24)  # OpenAI: anything
NAMES = st.builds(str.__add__, st.sampled_from(string.ascii_letters), st.text(st.sampled_from(_ID_CHARS), max_size=15))
JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**63),
              st.floats(allow_nan=False, allow_infinity=False), TEXT),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(TEXT, inner, max_size=3)),
    max_leaves=4)
INPUT = st.dictionaries(TEXT, JSON, max_size=3)
SCHEMA = st.fixed_dictionaries({
    "type": st.just("object"),
    "properties": st.dictionaries(NAMES, st.fixed_dictionaries(
        {"type": st.sampled_from(["string", "integer", "array", "object"])}, optional={"description": TEXT}),
        max_size=3)}, optional={"required": st.lists(NAMES, max_size=2)})
IMAGE_SOURCE = st.one_of(
    st.fixed_dictionaries({"type": st.just("base64"),
                           "media_type": st.sampled_from(["image/png", "image/jpeg", "image/gif", "image/webp"]),
                           "data": st.text(st.sampled_from(string.ascii_letters + "+/="), min_size=1, max_size=40)}),
    st.fixed_dictionaries({"type": st.just("url"),
                           "url": st.text(st.sampled_from(string.ascii_lowercase + "/._-"), max_size=20).map(
                               "https://example.com/".__add__)}))
USAGE = st.builds(Usage, *[st.integers(0, 10**7)] * 4)

text_block = st.builds(lambda t: Block("text", text=t), TEXT)
image_block = st.builds(lambda s: Block("image", source=s), IMAGE_SOURCE)
thinking_block = st.builds(lambda t, s: Block("thinking", text=t, signature=s), TEXT, TEXT)
redacted_block = st.builds(lambda t: Block("redacted_thinking", text=t), TEXT)


@functools.cache
def tool_use_block(ids=IDS):
    return st.builds(lambda i, n, x: Block("tool_use", id=i, name=n, input=x), ids, NAMES, INPUT)


def tool_result_block(ids, content, is_error):
    return st.builds(lambda i, c, e: Block("tool_result", tool_use_id=i, content=c, is_error=e),
                     ids, st.lists(content, max_size=3), is_error)


@functools.cache  # built once: hypothesis validates every new strategy object
def messages(api: Api, ids=IDS):
    if api is Api.ANTHROPIC:
        user = st.one_of(text_block, image_block, tool_result_block(ids, st.one_of(text_block, image_block),
                                                                    st.booleans()))
        assistant = st.one_of(text_block, tool_use_block(ids), thinking_block, redacted_block)
    else:  # Chat Completions: no signed reasoning, tool results are text, errors are just text
        user = st.one_of(text_block, image_block, tool_result_block(ids, text_block, st.just(False)))
        assistant = st.one_of(text_block, tool_use_block(ids))
    return st.lists(st.one_of(st.builds(Message, st.just("user"), st.lists(user, max_size=3)),
                              st.builds(Message, st.just("assistant"), st.lists(assistant, max_size=3))),
                    max_size=4)


TOOLS = st.lists(st.builds(Tool, NAMES, TEXT, SCHEMA), max_size=3)
MAYBE_FLOAT = st.none() | st.floats(0, 2)
MAX_TOKENS = st.none() | st.integers(1, 10**6)
STOPS = st.lists(TEXT, max_size=3)


@st.composite
def chat_requests(draw, api: Api, ids=IDS) -> ChatRequest:
    tools = draw(TOOLS)
    if tools:
        choice = draw(st.sampled_from(["auto", "any", "none", "tool"]))
    else:  # Anthropic can say "none" without tools; Chat Completions sends tool_choice only with tools
        choice = draw(st.sampled_from(["auto", "none"])) if api is Api.ANTHROPIC else "auto"
    return ChatRequest(
        model=draw(TEXT), messages=draw(messages(api, ids)), system=draw(TEXT), tools=tools,
        tool_choice=choice, tool_name=draw(st.sampled_from([t.name for t in tools])) if choice == "tool" else "",
        max_tokens=draw(MAX_TOKENS), temperature=draw(MAYBE_FLOAT), top_p=draw(MAYBE_FLOAT),
        stop=draw(STOPS), stream=draw(st.booleans()))


@functools.cache
def responses(api: Api, ids=IDS):
    kinds = [text_block, tool_use_block(ids)]
    if api is Api.ANTHROPIC:
        kinds += [thinking_block, redacted_block]
    return st.builds(Response, IDS, TEXT, st.lists(st.one_of(*kinds), max_size=5),
                     st.sampled_from(list(StopReason)), USAGE)


# ---- what legitimately changes ----------------------------------------------------------------------

def anthropic_normal(req: ChatRequest) -> ChatRequest:
    """Anthropic requires max_tokens: the encoder fills a default."""
    return replace(req, max_tokens=req.max_tokens or anthropic.DEFAULT_MAX_TOKENS)


def openai_normal(req: ChatRequest) -> ChatRequest:
    """What a neutral request looks like after a trip through Chat Completions.

    - an assistant turn is one content string plus tool_calls: its texts are joined into one
      text block (none when empty), then its tool calls; thinking has no place and is dropped;
    - a user turn becomes tool messages (first) and one user message; tool results carry text
      only (images dropped) and an error is the text "Error: ..."; all-text user content is
      one string, so its text blocks join into one;
    - decoding puts tool results and the user text after them back into one user turn, so
      consecutive user turns merge and empty ones vanish;
    - tool_choice travels only with tools; max_tokens 0 means unset.
    """
    out: list[Message] = []
    for m in req.messages:
        if m.role == "assistant":
            text = "".join(b.text for b in m.blocks if b.type == "text")
            out.append(Message("assistant", ([Block("text", text=text)] if text else []) +
                               [b for b in m.blocks if b.type == "tool_use"]))
            continue
        results = [Block("tool_result", tool_use_id=b.tool_use_id, content=[Block("text", text=(
            "Error: " if b.is_error else "") + "".join(c.text for c in b.content if c.type == "text"))])
            for b in m.blocks if b.type == "tool_result"]
        parts = [b for b in m.blocks if b.type in ("text", "image")]
        if parts and all(p.type == "text" for p in parts):
            parts = [Block("text", text="".join(p.text for p in parts))]
        blocks = results + parts
        if not blocks:
            continue
        if out and out[-1].role == "user":
            out[-1] = Message("user", out[-1].blocks + blocks)
        else:
            out.append(Message("user", blocks))
    choice = req.tool_choice if req.tools else "auto"
    return replace(req, messages=out, tool_choice=choice, tool_name=req.tool_name if choice == "tool" else "",
                   max_tokens=req.max_tokens or None)


def sanitized_ids(req: ChatRequest) -> ChatRequest:
    """Anthropic ids must match ^[a-zA-Z0-9_-]+$: the encoder replaces other characters."""
    def fix(b: Block) -> Block:
        if b.type == "tool_use":
            return replace(b, id=anthropic.tool_id(b.id))
        if b.type == "tool_result":
            return replace(b, tool_use_id=anthropic.tool_id(b.tool_use_id))
        return b
    return replace(req, messages=[Message(m.role, [fix(b) for b in m.blocks]) for m in req.messages])


def openai_usage(u: Usage) -> Usage:
    """Chat Completions counts cache writes (prompt_tokens_details.cache_write_tokens) but not
    which of them were written for 1 hour."""
    return Usage(u.input_tokens, u.output_tokens, u.cache_read_tokens, u.cache_write_tokens, 0)


def openai_stop(s: StopReason) -> StopReason:
    """finish_reason "stop" covers both end_turn and stop_sequence."""
    return StopReason.END_TURN if s is StopReason.STOP_SEQUENCE else s


def openai_response_normal(r: Response) -> Response:
    """A completion message is one content string, then tool calls; no thinking."""
    blocks = ([Block("text", text=r.text)] if r.text else []) + [b for b in r.blocks if b.type == "tool_use"]
    return Response(r.id, r.model, blocks, openai_stop(r.stop_reason), openai_usage(r.usage))


def openai_stream_normal(r: Response, include_usage: bool = True) -> Response:
    """A chunk stream has one content channel: adjacent texts (once thinking is gone) join, empty
    text never shows; usage only when the client asked for it."""
    blocks: list[Block] = []
    for b in r.blocks:
        if b.type == "text" and b.text:
            if blocks and blocks[-1].type == "text":
                blocks[-1] = Block("text", text=blocks[-1].text + b.text)
            else:
                blocks.append(Block("text", text=b.text))
        elif b.type == "tool_use":
            blocks.append(b)
    return Response(r.id, r.model, blocks, openai_stop(r.stop_reason),
                    openai_usage(r.usage) if include_usage else Usage())


def wire(body: dict) -> dict:
    """What the other side gets: the body through real JSON."""
    return json.loads(json.dumps(body))


def chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = [0] + sorted(set(c for c in cuts if 0 < c < len(data))) + [len(data)]
    return [data[a:b] for a, b in zip(points, points[1:])]


def assemble(api: Api, parts: list[bytes]) -> Response:
    parser, decoder, asm = SseParser(), (anthropic if api is Api.ANTHROPIC else openai).StreamDecoder(), Assembler()
    for part in parts:
        for ev in parser.feed(part):
            asm.feed(decoder.feed(ev))
    for ev in parser.close():
        asm.feed(decoder.feed(ev))
    return asm.response()


def encode_stream(api: Api, r: Response, include_usage: bool = True) -> bytes:
    if api is Api.ANTHROPIC:
        enc = anthropic.StreamEncoder()
        return b"".join(enc.encode(e) for e in events_of(r))
    enc = openai.StreamEncoder(CREATED, include_usage)
    return b"".join(enc.encode(e) for e in events_of(r))


cut_points = st.lists(st.integers(0, 20000), max_size=15)


# ---- requests ---------------------------------------------------------------------------------------

@SETTINGS
@given(chat_requests(Api.ANTHROPIC))
def test_anthropic_request_round_trip(req):
    assert anthropic.decode_request(wire(anthropic.encode_request(req))) == anthropic_normal(req)


@SETTINGS
@given(chat_requests(Api.OPENAI))
def test_openai_request_round_trip(req):
    assert openai.decode_request(wire(openai.encode_request(req))) == openai_normal(req)


def _tool_calls(req: ChatRequest):
    return [(b.id, b.name, b.input) for m in req.messages for b in m.blocks if b.type == "tool_use"]


def _tool_results(req: ChatRequest):
    return [(b.tool_use_id, ("Error: " if b.is_error else "") + "".join(c.text for c in b.content if c.type == "text"))
            for m in req.messages for b in m.blocks if b.type == "tool_result"]


def _images(req: ChatRequest):
    return [b.source for m in req.messages for b in m.blocks if b.type == "image"]


def _texts(req: ChatRequest) -> str:
    return "".join(b.text for m in req.messages for b in m.blocks if b.type == "text")


@SETTINGS
@given(chat_requests(Api.ANTHROPIC))
def test_anthropic_to_openai_request(req):
    client = wire(anthropic.encode_request(req))
    n1 = anthropic.decode_request(client)
    n2 = openai.decode_request(wire(openai.encode_request(n1)))
    assert n2 == openai_normal(n1)
    # And spelled out, what a draft must see of the conversation:
    assert _texts(n2) == _texts(n1)
    assert _tool_calls(n2) == _tool_calls(n1)
    assert _tool_results(n2) == _tool_results(n1)
    assert _images(n2) == _images(n1)  # images in user turns (tool results carry text only)
    assert n2.tools == n1.tools
    if n1.tools:
        assert (n2.tool_choice, n2.tool_name) == (n1.tool_choice, n1.tool_name)
    assert (n2.system, n2.max_tokens, n2.stop, n2.temperature, n2.top_p) == \
        (n1.system, n1.max_tokens, n1.stop, n1.temperature, n1.top_p)


@SETTINGS
@given(chat_requests(Api.OPENAI, ids=ANY_IDS))
def test_openai_to_anthropic_request(req):
    client = wire(openai.encode_request(req))
    n1 = openai.decode_request(client)
    body = wire(anthropic.encode_request(n1))
    n2 = anthropic.decode_request(body)
    assert n2 == anthropic_normal(sanitized_ids(n1))
    ids = [b["id"] for m in body["messages"] for b in m["content"] if b["type"] == "tool_use"] + \
        [b["tool_use_id"] for m in body["messages"] for b in m["content"] if b["type"] == "tool_result"]
    assert all(ANTHROPIC_ID.match(i) for i in ids)
    assert [(n, x) for _, n, x in _tool_calls(n2)] == [(n, x) for _, n, x in _tool_calls(n1)]
    assert [t for _, t in _tool_results(n2)] == [t for _, t in _tool_results(n1)]
    assert (_texts(n2), _images(n2), n2.tools) == (_texts(n1), _images(n1), n1.tools)
    assert (n2.tool_choice, n2.tool_name) == (n1.tool_choice, n1.tool_name)


def test_tool_ids_are_sanitized_consistently():
    assert anthropic.tool_id("call_abc-1") == "call_abc-1"
    assert anthropic.tool_id("call:abc.1/é") == "call_abc_1__"
    assert ANTHROPIC_ID.match(anthropic.tool_id(""))
    assert anthropic.tool_id("") != anthropic.tool_id("")  # fresh when there is none


# ---- responses --------------------------------------------------------------------------------------

@SETTINGS
@given(responses(Api.ANTHROPIC))
def test_anthropic_response_round_trip(r):
    assert anthropic.parse_response(json.loads(anthropic.encode_json(r))) == r


@SETTINGS
@given(responses(Api.ANTHROPIC))
def test_openai_response_round_trip(r):
    assert openai.parse_response(json.loads(openai.encode_json(r, CREATED))) == openai_response_normal(r)


# ---- streams ----------------------------------------------------------------------------------------

@SETTINGS
@given(responses(Api.ANTHROPIC), cut_points)
def test_anthropic_stream_round_trip(r, cuts):
    data = encode_stream(Api.ANTHROPIC, r)
    assert data == anthropic.encode_sse(r)
    assert assemble(Api.ANTHROPIC, chunks(data, cuts)) == r


@SETTINGS
@given(responses(Api.ANTHROPIC), st.booleans(), cut_points)
def test_openai_stream_round_trip(r, include_usage, cuts):
    data = encode_stream(Api.OPENAI, r, include_usage)
    assert data == openai.encode_sse(r, CREATED, include_usage)
    assert assemble(Api.OPENAI, chunks(data, cuts)) == openai_stream_normal(r, include_usage)


def translate(plan: ResponsePlan, parts: list[bytes]) -> bytes:
    t = ResponseTranslator(plan)
    out = [t.stream_chunk(p) for p in parts[:-1]]
    return b"".join(out) + t.stream_chunk(parts[-1] if parts else b"", end=True)


@SETTINGS
@given(responses(Api.OPENAI, ids=ANY_IDS), cut_points, cut_points)
def test_translator_openai_stream_to_anthropic(r, cuts, cuts2):
    upstream = openai.encode_sse(r, CREATED, include_usage=True)
    plan = ResponsePlan(Api.ANTHROPIC, Api.OPENAI, strip_thinking=False, include_usage=False, created=CREATED)
    out = translate(plan, chunks(upstream, cuts))
    assert out == translate(plan, [upstream])  # where the chunks were cut does not matter
    got = assemble(Api.ANTHROPIC, chunks(out, cuts2))
    expected = openai_stream_normal(r)
    expected.blocks = [replace(b, id=anthropic.tool_id(b.id)) if b.type == "tool_use" else b for b in expected.blocks]
    assert got == expected
    assert all(ANTHROPIC_ID.match(b.id) for b in got.blocks if b.type == "tool_use")


@SETTINGS
@given(responses(Api.ANTHROPIC), st.booleans(), cut_points, cut_points)
def test_translator_anthropic_stream_to_openai(r, include_usage, cuts, cuts2):
    upstream = anthropic.encode_sse(r)
    plan = ResponsePlan(Api.OPENAI, Api.ANTHROPIC, strip_thinking=False, include_usage=include_usage, created=CREATED)
    out = translate(plan, chunks(upstream, cuts))
    assert out == translate(plan, [upstream])
    assert assemble(Api.OPENAI, chunks(out, cuts2)) == openai_stream_normal(r, include_usage)


@SETTINGS
@given(responses(Api.ANTHROPIC), cut_points)
def test_translator_strips_the_drafts_reasoning(r, cuts):
    """Block indexes stay dense once the reasoning blocks are gone: the SDKs index by them."""
    plan = ResponsePlan(Api.ANTHROPIC, Api.ANTHROPIC, strip_thinking=True, include_usage=False, created=CREATED)
    out = translate(plan, chunks(anthropic.encode_sse(r), cuts))
    got = assemble(Api.ANTHROPIC, [out])
    assert got.blocks == [b for b in r.blocks if b.type not in ("thinking", "redacted_thinking")]
    starts = [json.loads(line[5:])["index"] for line in out.splitlines()
              if line.startswith(b"data:") and b'"content_block_start"' in line]
    assert starts == list(range(len(got.blocks)))


@SETTINGS
@given(responses(Api.OPENAI, ids=ANY_IDS))
def test_translator_json_openai_to_anthropic(r):
    plan = ResponsePlan(Api.ANTHROPIC, Api.OPENAI, strip_thinking=True, include_usage=False, created=CREATED)
    out = ResponseTranslator(plan).json_body(read_json(plan.upstream, openai.encode_json(r, CREATED)))
    got = anthropic.parse_response(json.loads(out))
    expected = openai_response_normal(r)
    expected.blocks = [b for b in expected.blocks if b.type != "thinking"]
    assert [b.type for b in got.blocks] == [b.type for b in expected.blocks]
    assert got.text == expected.text and got.usage == expected.usage and got.stop_reason == expected.stop_reason
    assert [(b.name, b.input) for b in got.blocks if b.type == "tool_use"] == \
        [(b.name, b.input) for b in expected.blocks if b.type == "tool_use"]
    assert all(ANTHROPIC_ID.match(b["id"]) for b in json.loads(out)["content"] if b["type"] == "tool_use")


@SETTINGS
@given(responses(Api.ANTHROPIC))
def test_translator_json_anthropic_to_openai(r):
    plan = ResponsePlan(Api.OPENAI, Api.ANTHROPIC, strip_thinking=False, include_usage=False, created=CREATED)
    out = ResponseTranslator(plan).json_body(read_json(plan.upstream, anthropic.encode_json(r)))
    assert openai.parse_response(json.loads(out)) == openai_response_normal(r)


def _reasoning_stream(reasoning: str, content: str, calls: list[Block]) -> bytes:
    """A DeepSeek-style chunk stream: reasoning_content first (unsigned), then content and calls."""
    def chunk(delta, finish=None):
        return frame({"id": "c1", "object": "chat.completion.chunk", "created": CREATED, "model": "reasoner",
                      "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    out = chunk({"role": "assistant", "content": ""})
    out += b"".join(chunk({"reasoning_content": reasoning[i:i + 7]}) for i in range(0, len(reasoning), 7))
    out += b"".join(chunk({"content": content[i:i + 7]}) for i in range(0, len(content), 7))
    for n, b in enumerate(calls):
        out += chunk({"tool_calls": [{"index": n, "id": b.id, "type": "function",
                                      "function": {"name": b.name, "arguments": json.dumps(b.input)}}]})
    return out + chunk({}, "tool_calls" if calls else "stop") + frame(b"[DONE]")


@SETTINGS
@given(TEXT.filter(bool), TEXT, st.lists(tool_use_block(ANY_IDS), max_size=2), cut_points)
def test_translator_drops_unsigned_reasoning_from_an_openai_stream(reasoning, content, calls, cuts):
    """Chat Completions reasoning (DeepSeek's reasoning_content) translated for an Anthropic client
    is the draft's thinking: never shown, streamed or in JSON."""
    plan = ResponsePlan(Api.ANTHROPIC, Api.OPENAI, strip_thinking=True, include_usage=False, created=CREATED)
    got = assemble(Api.ANTHROPIC, [translate(plan, chunks(_reasoning_stream(reasoning, content, calls), cuts))])
    assert all(b.type != "thinking" for b in got.blocks)
    assert got.text == content
    assert [(b.name, b.input) for b in got.blocks if b.type == "tool_use"] == [(b.name, b.input) for b in calls]
    message = {"role": "assistant", "content": content or None, "reasoning_content": reasoning,
               "tool_calls": [{"id": b.id, "type": "function",
                               "function": {"name": b.name, "arguments": json.dumps(b.input)}} for b in calls]}
    as_json = anthropic.parse_response(json.loads(ResponseTranslator(plan).json_body(read_json(
        plan.upstream, json.dumps({"object": "chat.completion", "id": "c1", "model": "reasoner",
                                   "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}).encode()))))
    assert as_json.blocks == got.blocks
