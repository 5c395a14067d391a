"""Envoy's Lua filters (cascade_extproc/deploy/lua/), run in LuaJIT as Envoy runs them (lupa), each
against a Python reference of its rule and a tiny fake of the Envoy stream handle.

fail_open.lua: with the server down, a request whose final assistant turn calls a tool without
starting with thinking, while thinking is on, gets `"thinking": {"type":"disabled"}` in place of
its thinking value and nothing else changed. usage_chunk.lua: the usage-only chunk of an OpenAI
stream is dropped, wherever the chunks are cut, and nothing else.
"""
from __future__ import annotations

import json
import random

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from cascade_extproc.deploy.envoy_config import lua_source

try:
    from lupa import luajit21 as lupa_rt  # what Envoy embeds
except ImportError:  # pragma: no cover - a platform without LuaJIT wheels
    from lupa import lua51 as lupa_rt

DISABLED = b'{"type":"disabled"}'

# A fake of the Envoy stream handle: headers, the buffered body or its chunks, dynamic metadata.
FAKE_HANDLE = b"""
function fake_handle(method, body, meta, content_type, chunks)
  local headers = { [":method"] = method, ["content-type"] = content_type }
  if body then headers["content-length"] = tostring(#body) end
  local h = { headers_t = headers, meta = meta or {}, chunks = {} }
  local header_api = {
    get = function(_, k) return headers[k] end,
    replace = function(_, k, v) headers[k] = v end,
    add = function(_, k, v) headers[k] = v end,
    remove = function(_, k) headers[k] = nil end,
  }
  local function buffer(b)
    return {
      length = function() return #b end,
      getBytes = function(_, i, n)
        assert(i + n <= #b, "getBytes past the end")
        return string.sub(b, i + 1, i + n)
      end,
      setBytes = function(_, s) b = s end,
      bytes = function() return b end,
    }
  end
  local body_buf = body and buffer(body)
  h.body_buf = body_buf
  function h:headers() return header_api end
  function h:body() return body_buf end
  function h:streamInfo()
    return { dynamicMetadata = function()
      return {
        get = function(_, ns) return h.meta[ns] end,
        set = function(_, ns, k, v) h.meta[ns] = h.meta[ns] or {}; h.meta[ns][k] = v end,
      }
    end }
  end
  for i, c in ipairs(chunks or {}) do h.chunks[i] = buffer(c) end  -- passed on as they are unless changed
  function h:bodyChunks()
    local i = 0
    return function()
      i = i + 1
      return h.chunks[i]
    end
  end
  return h
end

function run_request(method, body, meta)
  local h = fake_handle(method, body, meta)
  envoy_on_request(h)
  return h.body_buf and h.body_buf.bytes() or nil, h.headers_t["content-length"], h.meta
end

function run_response(chunks, meta, content_type)
  local h = fake_handle("POST", nil, meta, content_type, chunks)
  envoy_on_response(h)
  local out = {}
  for i, c in ipairs(h.chunks) do out[i] = c.bytes() end
  return table.concat(out), h.headers_t["content-length"]
end
"""


def runtime(name: str):
    lua = lupa_rt.LuaRuntime(encoding=None)
    lua.execute(lua_source(name).encode())
    lua.execute(FAKE_HANDLE)
    return lua


@pytest.fixture(scope="module")
def fail_open():
    return runtime("fail_open")


@pytest.fixture(scope="module")
def usage():
    return runtime("usage_chunk")


# ---- fail_open.lua -------------------------------------------------------------------------

def reference_must_disable(raw: bytes) -> bool:
    """The rule, in Python: thinking enabled or adaptive, and the final assistant turn
    (consecutive assistant messages merged, as the API does) holds a tool_use block but does not
    start with a thinking or redacted_thinking block (string content is a text block). The raw
    body must contain "thinking", "tool_use" and "enabled" or "adaptive" as written (the
    filter's plain pre-check: no client escapes plain ASCII)."""
    if b'"thinking"' not in raw or b'"tool_use"' not in raw or (b'"enabled"' not in raw and b'"adaptive"' not in raw):
        return False
    try:
        body = json.loads(raw)
    except ValueError:
        return False
    if not isinstance(body, dict):
        return False
    thinking, messages = body.get("thinking"), body.get("messages")
    if not isinstance(thinking, dict) or thinking.get("type") not in ("enabled", "adaptive"):
        return False
    if not isinstance(messages, list):
        return False
    unset = object()
    first, uses_tool, in_turn = unset, False, False
    for m in messages:
        if not isinstance(m, dict) or m.get("role") != "assistant":
            in_turn = False
            continue
        if not in_turn:
            first, uses_tool, in_turn = unset, False, True
        content = m.get("content")
        if isinstance(content, str):
            first = "text" if first is unset else first
        elif isinstance(content, list):
            for b in content:
                kind = b.get("type") if isinstance(b, dict) else None
                kind = kind if isinstance(kind, str) else None
                first = kind if first is unset else first
                uses_tool = uses_tool or kind == "tool_use"
    return uses_tool and first not in ("thinking", "redacted_thinking")


class Encoder:
    """JSON text written the way varied clients write it: key order as given, whitespace and
    escapes drawn at random; records where the top-level "thinking" value starts and ends."""

    def __init__(self, rnd: random.Random):
        self.rnd = rnd
        self.ascii = rnd.random() < 0.5
        self.pretty = rnd.random() < 0.3
        self.escape_rate = rnd.choice([0.0, 0.0, 0.02, 0.2])
        self.thinking_span: tuple[int, int] | None = None

    def ws(self) -> str:
        return self.rnd.choice(["", "", " ", "\n  ", "\t", "\r\n"]) if self.pretty else ""

    def string(self, s: str) -> str:
        out = []
        for ch in s:
            o = ord(ch)
            if ch in '"\\':
                out.append("\\" + ch)
            elif o < 0x20:
                out.append({"\n": "\\n", "\t": "\\t", "\r": "\\r"}.get(ch, f"\\u{o:04x}"))
            elif ch == "/" and self.rnd.random() < 0.5:
                out.append("\\/")  # legal, and some encoders do it
            elif o > 0x7E and self.ascii:
                if o > 0xFFFF:
                    hi, lo = 0xD800 + ((o - 0x10000) >> 10), 0xDC00 + ((o - 0x10000) & 0x3FF)
                    out.append(f"\\u{hi:04x}\\u{lo:04x}")
                else:
                    out.append(f"\\u{o:04x}")
            elif ch.isascii() and ch.isalnum() and self.rnd.random() < self.escape_rate:
                out.append(f"\\u{o:04x}")  # plain ASCII escaped: legal, rare
            else:
                out.append(ch)
        return '"' + "".join(out) + '"'

    def encode(self, v, top: bool = False) -> str:
        if isinstance(v, dict):
            text = "{" + self.ws()
            items = list(v.items())
            for n, (k, val) in enumerate(items):
                key = self.string(k) + self.ws() + ":" + self.ws()
                start = len(text) + len(key)
                enc = self.encode(val)
                if top and k == "thinking":
                    self.thinking_span = (start, start + len(enc))
                text += key + enc + (self.ws() + "," + self.ws() if n < len(items) - 1 else "")
            return text + self.ws() + "}"
        if isinstance(v, list):
            sep = self.ws() + "," + self.ws()
            return "[" + self.ws() + sep.join(self.encode(x) for x in v) + self.ws() + "]"
        if isinstance(v, str):
            return self.string(v)
        return json.dumps(v)


TRICKY = st.sampled_from([
    "plain", "", 'the word "thinking": {"type": "enabled"} in a string', "braces { } [ ] and , : ",
    'a \\"quoted\\" backslash \\\\', "tool_use", '"tool_use"', "thinking", "line\nbreak\ttab",
    "unicode é ü 中文 🙂", "\u2028\u2029", "redacted_thinking", 'escaped "}" and "]"', "\\u0000"])
TEXT = st.one_of(TRICKY, st.text(max_size=20))
JSON_LEAF = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                      st.floats(allow_nan=False, allow_infinity=False, width=32), TEXT)
JSON_VALUE = st.recursive(JSON_LEAF, lambda kids: st.one_of(
    st.lists(kids, max_size=3), st.dictionaries(st.sampled_from(["thinking", "type", "a", "tool_use", "x"]) | TEXT,
                                                kids, max_size=3)), max_leaves=8)


def shuffled(d: dict) -> st.SearchStrategy[dict]:
    return st.permutations(list(d.items())).map(dict)


BLOCKS = {
    "text": st.fixed_dictionaries({"type": st.just("text"), "text": TEXT}),
    "tool_use": st.fixed_dictionaries({"type": st.just("tool_use"), "id": st.sampled_from(["toolu_1", "toolu_2"]),
                                       "name": st.sampled_from(["read", "thinking"]),
                                       "input": st.dictionaries(st.sampled_from(["thinking", "path", "type"]), JSON_VALUE,
                                                                max_size=3)}),
    "tool_result": st.fixed_dictionaries({"type": st.just("tool_result"), "tool_use_id": st.just("toolu_1"),
                                          "content": st.one_of(TEXT, st.lists(
                                              st.fixed_dictionaries({"type": st.just("text"), "text": TEXT}),
                                              max_size=2))}),
    "thinking": st.fixed_dictionaries({"type": st.just("thinking"), "thinking": TEXT, "signature": TEXT}),
    "redacted_thinking": st.fixed_dictionaries({"type": st.just("redacted_thinking"), "data": TEXT}),
}
BLOCK = st.one_of(*BLOCKS.values()).flatmap(shuffled)
MESSAGE = st.fixed_dictionaries({
    "role": st.sampled_from(["user", "assistant"]),
    "content": st.one_of(TEXT, st.lists(BLOCK, max_size=4)),
}).flatmap(shuffled)
# The conversations that matter most: an assistant turn ending in a tool call, then its result.
TOOL_TURN = st.tuples(st.lists(BLOCK, max_size=2), st.integers(0, 2).map(lambda n: n == 0)).map(lambda t: [
    {"role": "assistant", "content": ([{"type": "thinking", "thinking": "hm", "signature": "s"}] if t[1] else [])
     + t[0] + [{"type": "tool_use", "id": "toolu_9", "name": "read", "input": {"thinking": True}}]},
    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_9", "content": "ok"}]}])
ENABLED = st.fixed_dictionaries({"type": st.just("enabled"), "budget_tokens": st.integers(1024, 4096)})
THINKING = st.one_of(
    ENABLED, ENABLED, ENABLED, st.just({"type": "adaptive"}), st.just({"type": "disabled"}),
    st.fixed_dictionaries({"budget_tokens": st.just(2048), "type": st.sampled_from(["enabled", "adaptive", "x"])}),
    st.just({"type": 5}), st.just("enabled"), st.just(None))
TOOL = st.fixed_dictionaries({"name": st.sampled_from(["plan", "thinking"]), "input_schema": st.just(
    {"type": "object", "properties": {"thinking": {"type": "string", "description": '"type": "enabled"'}}})})


@st.composite
def anthropic_body(draw) -> dict:
    messages = draw(st.lists(MESSAGE, min_size=1, max_size=5))
    if draw(st.integers(0, 3)):
        messages = messages + draw(TOOL_TURN)
    body = {"model": "claude-sonnet-5", "max_tokens": 8192, "messages": messages}
    if draw(st.booleans()):
        body["system"] = draw(TEXT)
    if draw(st.booleans()):
        body["tools"] = draw(st.lists(TOOL, max_size=2))
    if draw(st.integers(0, 4)):  # most bodies have a thinking field
        body["thinking"] = draw(THINKING)
    return draw(shuffled(body))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=anthropic_body(), seed=st.integers(0, 2**32))
def test_fail_open_matches_the_reference(fail_open, body, seed):
    enc = Encoder(random.Random(seed))
    lead = enc.ws()
    text = lead + enc.encode(body, top=True) + enc.ws()
    raw = text.encode()
    assert json.loads(raw) == body  # the encoder wrote what was drawn
    out, length, _ = fail_open.globals().run_request(b"POST", raw, None)
    if not reference_must_disable(raw):
        assert out == raw and int(length) == len(raw)
        return
    start, end = (len(lead) + i for i in enc.thinking_span)  # in characters of `text`
    prefix, suffix = text[:start].encode(), text[end:].encode()
    assert out == prefix + DISABLED + suffix  # every other byte as the client sent it
    assert int(length) == len(out)
    assert json.loads(out) == {**body, "thinking": {"type": "disabled"}}


def conversation(final_blocks: list[dict], thinking=None) -> dict:
    return {"model": "claude-sonnet-5", "max_tokens": 4096,
            "thinking": thinking or {"type": "enabled", "budget_tokens": 2048},
            "messages": [{"role": "user", "content": "read the file"},
                         {"role": "assistant", "content": final_blocks},
                         {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                                       "content": "file text"}]}]}


TOOL_USE = {"type": "tool_use", "id": "toolu_1", "name": "read", "input": {"path": "a.py"}}


@pytest.mark.parametrize("final, thinking, disabled", [
    ([TOOL_USE], None, True),
    ([{"type": "text", "text": "let me look"}, TOOL_USE], None, True),
    ([TOOL_USE], {"type": "adaptive"}, True),
    ([{"type": "thinking", "thinking": "x", "signature": "s"}, TOOL_USE], None, False),
    ([{"type": "redacted_thinking", "data": "d"}, TOOL_USE], None, False),
    ([{"type": "text", "text": "thinking"}], None, False),  # no tool call: nothing to refuse
    ([TOOL_USE], {"type": "disabled"}, False),
])
def test_fail_open_examples(fail_open, final, thinking, disabled):
    raw = json.dumps(conversation(final, thinking)).encode()
    out, _, _ = fail_open.globals().run_request(b"POST", raw, None)
    assert (out != raw) == disabled
    if disabled:
        assert b'"thinking": {"type":"disabled"}' in out and json.loads(out)["messages"] == json.loads(raw)["messages"]


def test_fail_open_leaves_what_the_server_decided(fail_open):
    raw = json.dumps(conversation([TOOL_USE])).encode()
    meta = fail_open.table_from({b"cascade": fail_open.table_from({b"path": b"direct"})})
    out, _, _ = fail_open.globals().run_request(b"POST", raw, meta)
    assert out == raw


def test_fail_open_labels_what_there_was_nothing_to_decide_on(fail_open):
    for method, body in ((b"POST", None), (b"POST", b""), (b"GET", None), (b"GET", b"{}")):
        _, _, meta = fail_open.globals().run_request(method, body, None)
        assert meta[b"cascade"][b"path"] == b"direct", (method, body)
    _, _, meta = fail_open.globals().run_request(b"POST", b"{}", None)
    assert meta[b"cascade"] is None  # a body the server should have decided: left as fallback


DEEP = b"[" * 100_000 + b"]" * 100_000  # deep nesting: no stack to overflow


@pytest.mark.parametrize("raw, fixed", [
    (b"", None), (b"{", None), (b'{"thinking": {"type": "enabled"}, "messages": [', None), (b"[1, 2]", None),
    (b'"thinking tool_use"', None),
    (b'{"thinking": {"type": "enabled"}, "messages": [{"role": "assistant", "content": [{"type": "tool_use"}]}]} x',
     None),
    (b'{"thinking": {"type": "enabled"}, "messages": [{"role": "assistant", "content": [{"type": "tool_use"}]}]',
     None),
    (b'{"thinking": {"type": "enabled"} "messages": [{"role": "assistant", "content": [{"type": "tool_use"}]}]}',
     None),
    (b'{"thinking": {"type": "enabled"}, "messages": [{"role": "assistant", "content": [{"type": "tool_use", '
     b'"input": {"a": ' + DEEP + b'}}]}]}',
     b'{"thinking": {"type":"disabled"}, "messages": [{"role": "assistant", "content": [{"type": "tool_use", '
     b'"input": {"a": ' + DEEP + b'}}]}]}'),
    (b'{"thinking": {"type": "enabled"}, "messages": [{"role": "assistant", "content": [{"type": "tool_use", '
     b'"input": {"a": ' + DEEP[:-1] + b'}}]}]}', None),
])
def test_fail_open_leaves_malformed_bodies_alone(fail_open, raw, fixed):
    assert fail_open.globals().cascade_fix_body(raw) == fixed


# ---- usage_chunk.lua -----------------------------------------------------------------------

def openai_stream(*, crlf: bool = False, tricky: bool = False) -> tuple[bytes, bytes]:
    """A realistic streamed Chat Completions answer that carries the usage chunk, and the same
    without it."""
    head = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-5"}
    text = 'it says "choices":[] and "usage":{} here' if tricky else "Hello there"
    chunks = [
        {**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}],
         "usage": None},
        *({**head, "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}], "usage": None}
          for w in text.split(" ")),
        {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": None},
    ]
    usage = {**head, "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}}
    nl = "\r\n" if crlf else "\n"

    def event(obj) -> str:
        return f"data: {json.dumps(obj)}{nl}{nl}"
    kept = "".join(event(c) for c in chunks)
    done = f"data: [DONE]{nl}{nl}"
    return (kept + event(usage) + done).encode(), (kept + done).encode()


def respond(lua, chunks: list[bytes], flagged: bool = True, content_type: str = "text/event-stream"):
    meta = lua.table_from({b"cascade": lua.table_from({b"usage_injected": b"1" if flagged else b"0"})})
    out, length = lua.globals().run_response(lua.table_from(chunks), meta, content_type.encode())
    return out, length


@pytest.mark.parametrize("crlf, tricky", [(False, False), (True, False), (False, True)])
def test_usage_chunk_dropped_at_every_cut(usage, crlf, tricky):
    stream, expected = openai_stream(crlf=crlf, tricky=tricky)
    for cut in range(len(stream) + 1):
        out, _ = respond(usage, [stream[:cut], stream[cut:]])
        assert out == expected, cut


@settings(max_examples=300, deadline=None)
@given(cuts=st.lists(st.integers(0, 2000), max_size=12), crlf=st.booleans(), tricky=st.booleans())
def test_usage_chunk_dropped_however_the_stream_is_cut(usage, cuts, crlf, tricky):
    stream, expected = openai_stream(crlf=crlf, tricky=tricky)
    points = sorted({min(c, len(stream)) for c in cuts})
    pieces = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)])]
    out, length = respond(usage, pieces)
    assert out == expected and length is None  # the body shrank: no content-length


def test_usage_chunk_kept_when_not_flagged_or_not_sse(usage):
    stream, _ = openai_stream()
    assert respond(usage, [stream], flagged=False)[0] == stream
    assert respond(usage, [stream], content_type="application/json")[0] == stream


@pytest.mark.parametrize("event", [
    b'data: {"choices": [], "usage": null}\n\n',  # usage not an object
    b'data: {"choices": [{"index": 0, "delta": {}}], "usage": {"total_tokens": 1}}\n\n',  # choices not empty
    b'data: {"choices": [], "usage": {"total_tokens": 1}} trailing\n\n',  # not JSON
    b'data: {"choices": []}\n\n',
    b': {"choices": [], "usage": {}}\n\n',  # a comment, not data
])
def test_only_the_usage_only_chunk_is_dropped(usage, event):
    assert respond(usage, [event])[0] == event


def test_an_unfinished_last_event_is_flushed(usage):
    stream, expected = openai_stream()
    out, _ = respond(usage, [stream + b"data: [DO", b"NE]"])
    assert out == expected + b"data: [DONE]"


# ---- usage_chunk.lua: metering off the critical path ------------------------------------------

def anthropic_stream() -> bytes:
    usage = {"input_tokens": 1200, "output_tokens": 1, "cache_read_input_tokens": 7, "cache_creation_input_tokens": 3}
    events = [("message_start", {"type": "message_start", "message": {
        "id": "m", "type": "message", "role": "assistant", "model": "claude-x", "content": [], "usage": usage}}),
              ("content_block_start", {"type": "content_block_start", "index": 0,
                                       "content_block": {"type": "text", "text": ""}})]
    for w in ('the "usage": {} key', '"type":"message_stop"', "data: [DONE]", "plain"):
        events.append(("content_block_delta", {"type": "content_block_delta", "index": 0,
                                               "delta": {"type": "text_delta", "text": w}}))
    events += [("content_block_stop", {"type": "content_block_stop", "index": 0}),
               ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                                  "usage": {"output_tokens": 42}}),
               ("message_stop", {"type": "message_stop"})]
    return "".join(f"event: {n}\ndata: {json.dumps(d)}\n\n" for n, d in events).encode()


def metered(lua, chunks: list[bytes], content_type: str = "text/event-stream", status: bytes = b"200"):
    meta = lua.table_from({b"cascade": lua.table_from({b"meter": b"t-1"})})
    h = lua.globals().fake_handle(b"POST", None, meta, content_type.encode(), lua.table_from(chunks))
    h.headers_t[b":status"] = status
    lua.globals().envoy_on_response(h)
    out = b"".join(c.bytes() for c in h.chunks.values())
    return out, h.meta[b"cascade"]


def usage_of(api, sse: bytes):
    from cascade_extproc.codecs.translate import StreamTap
    tap = StreamTap(api)
    tap.feed(sse, True)
    return tap.usage


@settings(max_examples=200, deadline=None)
@given(cuts=st.lists(st.integers(0, 3000), max_size=10), which=st.sampled_from(["anthropic", "openai"]))
def test_metered_stream_keeps_exactly_the_usage_events(usage, cuts, which):
    """However the stream is cut, the events kept decode to the same usage as the whole stream,
    the client's bytes are untouched, and text that mentions the keys is not kept."""
    from cascade_extproc.types import Api
    stream = anthropic_stream() if which == "anthropic" else openai_stream()[0]
    points = sorted({min(c, len(stream)) for c in cuts})
    pieces = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)])]
    out, meta = metered(usage, pieces)
    assert out == stream
    kept = meta[b"answer_sse"]
    api = Api(which)
    assert usage_of(api, kept) == usage_of(api, stream) and usage_of(api, kept) is not None
    assert b"text_delta" not in kept and b'"content": "' not in kept


def test_metered_json_keeps_the_members_the_reader_needs(usage):
    from cascade_extproc.codecs.translate import read_json
    from cascade_extproc.types import Api
    body = json.dumps({"id": "x", "type": "message", "model": "claude-x", "content": [{"type": "text", "text": "hi"}],
                       "usage": {"input_tokens": 5, "output_tokens": 9, "cache_read_input_tokens": 2}}).encode()
    out, meta = metered(usage, [body[:17], body[17:]], "application/json")
    assert out == body
    assert read_json(Api.ANTHROPIC, meta[b"answer_json"]).usage == read_json(Api.ANTHROPIC, body).usage
    oai = json.dumps({"id": "c", "object": "chat.completion", "model": "gpt-x",
                      "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}],
                      "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}}).encode()
    _, meta = metered(usage, [oai], "application/json")
    got = read_json(Api.OPENAI, meta[b"answer_json"])
    assert got.usage == read_json(Api.OPENAI, oai).usage and got.model == "gpt-x"


def test_an_error_answer_is_not_metered(usage):
    _, meta = metered(usage, [b'{"type":"error","usage":{}}'], "application/json", status=b"529")
    assert meta[b"answer_json"] is None
