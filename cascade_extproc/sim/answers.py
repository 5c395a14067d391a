"""What a simulated model says (a SIMULATION: no model runs here): the request of either API
reduced to one conversation, the answer to it, and the SSE frames each API streams it in.
Same request -> same answer.

Behaviour:
- Anthropic `thinking` enabled: the reply starts with a thinking block signed by this provider
  (see validate.thinking_signature). OpenAI `reasoning_effort` (not "none"): the message
  carries `reasoning_content`, as DeepSeek's does. Reasoning tokens count as output tokens.
- A verification request (the last user message contains `[cascade-verify nonce=X]`) is
  answered `ACCEPT X`, X from the first such marker in that message.

Directives, in the last user text (the verifier's turn excluded):
- `sim:tool=NAME`     call tool NAME (when offered) instead of answering in text.
- `sim:say=TEXT`      the reply text is exactly TEXT (to the end of the line), not the
                      "Simulated reply from ..." text; with sim:tool it precedes the call.
- `sim:redact`        with thinking enabled, a redacted_thinking block instead of a thinking one.
- `sim:think`         reason even when not asked to, as some reasoning models do (Anthropic: a
                      signed thinking block; OpenAI: `reasoning_content`).
- `sim:gullible`      a verifier fooled by injection: it answers `ACCEPT X` with the LAST
                      `[cascade-verify nonce=X]` or `ACCEPT X` (hex X) in the last user message.
- `sim:loop`         a model that never stops on its own, as small models do: the reply is a
                      phrase (the sim:say TEXT, if given) said again and again until the
                      request's max_tokens (stop reason max_tokens / length), or LOOP_TOKENS when
                      it set none. `sim:loop=PART`: only a model whose name contains PART loops
                      (`sim:loop=draft`: the draft loops, the strong model answers as usual).
and in any user text, including the verifier's turn:
- `sim:reject`        the verifier rejects: it answers the conversation itself instead.
"""
from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass, field
from typing import Any, Iterator

CREATED = 1_700_000_000  # fixed OpenAI `created`, so responses are reproducible
_TOKEN_RE = re.compile(r"\w+|[^\w\s]")
_PIECE_RE = re.compile(r"\s*(?:\w+|[^\w\s])")  # one token with its leading whitespace
_VERIFY_RE = re.compile(r"\[cascade-verify nonce=([0-9a-fA-F]+)\]")
# The sidecar's verify turn is a text that starts with the marker; a marker elsewhere is just text.
_VERIFY_TURN_RE = re.compile(r"\A\[cascade-verify nonce=([0-9a-fA-F]+)\]")
_ACCEPT_RE = re.compile(r"\bACCEPT\s+([0-9a-fA-F]+)\b")
_TOOL_RE = re.compile(r"sim:tool=([\w.-]+)")
_SAY_RE = re.compile(r"sim:say=([^\r\n]*)")
_LOOP_RE = re.compile(r"sim:loop(?:=([\w.-]+))?")
LOOP_PHRASE = "I will say this again, because I have lost my way and nothing tells me to stop. "
LOOP_TOKENS = 50_000  # a looping answer with no max_tokens: more than any client would sit through
_WORDS = ("amber basin cedar delta ember fjord glacier harbor island juniper kelp lagoon meadow "
          "nebula orchid prairie quartz river summit tundra umber valley willow yarrow zephyr "
          "anchor beacon canyon dune estuary forest grove horizon").split()
FINISH = {"end_turn": "stop", "tool_use": "tool_calls", "max_tokens": "length"}


def _ntok(text: str) -> int:
    return len(_TOKEN_RE.findall(text))


# ---- both APIs are reduced to this neutral conversation before answering ----

@dataclass
class _Turn:
    role: str                                        # "user" or "assistant"
    texts: list[str] = field(default_factory=list)   # text blocks
    extras: list[str] = field(default_factory=list)  # tool results, tool-call arguments JSON


@dataclass
class _Conv:
    system: list[str]
    tools: list[tuple[str, str, dict]]  # (name, description, JSON schema)
    tool_choice: str | None             # None = auto, "none", "" = any tool, else a tool name
    turns: list[_Turn] = field(default_factory=list)
    tail: list[str] = field(default_factory=list)  # texts of the final message, if a user one

    def add(self, role: str, texts: list[str], extras: list[str]) -> None:
        # Consecutive same-role messages are one turn: Anthropic merges them, and
        # OpenAI tool + user messages become a single Anthropic user message.
        if self.turns and self.turns[-1].role == role:
            self.turns[-1].texts += texts
            self.turns[-1].extras += extras
        else:
            self.turns.append(_Turn(role, list(texts), list(extras)))

    def input_tokens(self) -> int:
        # Tools are counted as name + description + schema so both APIs agree.
        parts = self.system + [s for t in self.turns for s in t.texts + t.extras]
        return sum(map(_ntok, parts + [f"{n} {d} {json.dumps(s)}" for n, d, s in self.tools]))

    def last_user(self) -> _Turn:
        return next((t for t in reversed(self.turns) if t.role == "user"), _Turn("user"))


def _texts(content: Any) -> list[str]:
    """Texts of a string or of a list of text blocks/parts."""
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        return []
    return [b["text"] for b in content if isinstance(b, dict) and b.get("type") == "text"
            and isinstance(b.get("text"), str)]


def anthropic_conv(body: dict) -> _Conv:
    tools = [(t["name"], t.get("description") or "", t.get("input_schema") or {}) for t in body.get("tools") or []]
    tc = body.get("tool_choice") or {}
    conv = _Conv(_texts(body.get("system")), tools,
                 {"none": "none", "any": "", "tool": tc.get("name")}.get(tc.get("type")))
    for m in body["messages"]:
        blocks = [{"type": "text", "text": m["content"]}] if isinstance(m["content"], str) else m["content"]
        texts = [b["text"] for b in blocks if b["type"] == "text"]
        extras = [s for b in blocks if b["type"] == "tool_result" for s in _texts(b.get("content"))]
        extras += [json.dumps(b["input"]) for b in blocks if b["type"] == "tool_use"]
        conv.add(m["role"], texts, extras)
        conv.tail = texts if m["role"] == "user" else []
    return conv


def openai_conv(body: dict) -> _Conv:
    fns = [t["function"] for t in body.get("tools") or []]
    tc = body.get("tool_choice")
    choice = tc["function"]["name"] if isinstance(tc, dict) else {"none": "none", "required": ""}.get(tc)
    conv = _Conv([], [(f["name"], f.get("description") or "", f.get("parameters") or {}) for f in fns], choice)
    for m in body["messages"]:
        role, texts = m["role"], _texts(m.get("content"))
        if role in ("system", "developer"):
            conv.system += texts
        elif role == "tool":  # a tool result is user-side content, as in Anthropic
            conv.add("user", [], texts)
        else:
            conv.add(role, texts, [c["function"]["arguments"] for c in m.get("tool_calls") or []])
        conv.tail = texts if role == "user" else []
    return conv


# ---- what the simulated model says ----

@dataclass
class Answer:
    text: str = ""
    tool: tuple[str, dict] | None = None  # (name, input)
    output_tokens: int = 0  # thinking included
    stop: str = "end_turn"  # Anthropic vocabulary; FINISH maps it for OpenAI
    thinking: str = ""
    thinking_tokens: int = 0
    redacted: bool = False  # Anthropic: send the thinking as a redacted_thinking block


def _without_verification(conv: _Conv) -> _Conv:
    """The conversation as it was before the verifier's turn was appended."""
    out = _Conv(conv.system, conv.tools, conv.tool_choice,
                [_Turn(t.role, list(t.texts), list(t.extras)) for t in conv.turns])
    last = out.last_user()
    last.texts = [s for s in last.texts if not _VERIFY_TURN_RE.match(s)]
    if not last.texts and not last.extras:
        out.turns.remove(last)
    return out


def _schema_value(schema: dict) -> Any:
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    return {"integer": 1, "number": 1, "boolean": True, "array": [], "object": {}, "null": None}.get(kind, "sim")


def _schema_input(schema: dict) -> dict:
    props = schema.get("properties") or {}
    keys = schema["required"] if isinstance(schema.get("required"), list) else list(props)
    return {k: _schema_value(props.get(k) or {}) for k in keys}


def _reply_text(model: str, seed_text: str) -> str:
    seed = hashlib.sha256((model + seed_text).encode()).digest()
    rng = random.Random(int.from_bytes(seed, "big"))
    words = " ".join(rng.choice(_WORDS) for _ in range(18 + seed[0] % 5))
    return f"Simulated reply from {model}: {words.capitalize()}."


def _text_answer(text: str, max_tokens: int | None) -> Answer:
    ends = [m.end() for m in _TOKEN_RE.finditer(text)]
    if max_tokens is None or len(ends) <= max_tokens:
        return Answer(text, output_tokens=len(ends))
    return Answer(text[:ends[max_tokens - 1]], output_tokens=max_tokens, stop="max_tokens")


def _loop_answer(phrase: str, max_tokens: int | None) -> Answer:
    """`phrase` again and again until the limit: a model that never stops on its own."""
    limit = max_tokens if max_tokens is not None else LOOP_TOKENS
    phrase = phrase.strip() + " "
    text = phrase * (limit // max(_ntok(phrase), 1) + 1)
    return _text_answer(text, limit)


def _thinking_text(model: str, seed_text: str) -> str:
    seed = hashlib.sha256(("thinking:" + model + seed_text).encode()).digest()
    rng = random.Random(int.from_bytes(seed, "big"))
    words = " ".join(rng.choice(_WORDS) for _ in range(8 + seed[0] % 4))
    return f"Simulated reasoning by {model}: weigh {words}, then answer."


def _verdict_nonce(text: str, gullible: bool) -> str:
    """The nonce a verifier accepts with: the first marker, or (gullible) the last marker or ACCEPT."""
    if not gullible:
        return _VERIFY_RE.search(text).group(1)  # type: ignore[union-attr]
    hits = [*_VERIFY_RE.finditer(text), *_ACCEPT_RE.finditer(text)]
    return max(hits, key=lambda m: m.start()).group(1)


def _verify_turn(conv: "_Conv") -> str:
    """The sidecar's verify text in the final user message, or ''."""
    return next((t for t in conv.tail if _VERIFY_TURN_RE.match(t)), "")


def respond(conv: _Conv, model: str, max_tokens: int | None, *, think: bool = False) -> Answer:
    tail = _verify_turn(conv)
    verifying = bool(tail)
    own = _without_verification(conv) if verifying else conv
    last = own.last_user()
    last_text = "\n".join(last.texts)
    think = think or "sim:think" in last_text
    thinking = _thinking_text(model, last_text or "\n".join(last.extras)) if think else ""
    n_think = _ntok(thinking)
    rest = None if max_tokens is None else max_tokens - n_think
    if rest is not None and rest <= 0:  # out of tokens while still thinking
        ans, thinking, n_think = Answer(stop="max_tokens"), _text_answer(thinking, max_tokens).text, max_tokens
    elif verifying and not any("sim:reject" in s for t in conv.turns if t.role == "user" for s in t.texts):
        ans = _text_answer(f"ACCEPT {_verdict_nonce(tail, 'sim:gullible' in last_text)}", rest)
    else:
        ans = _model_answer(own, model, rest)
    ans.thinking, ans.thinking_tokens, ans.redacted = thinking, n_think, "sim:redact" in last_text
    ans.output_tokens += n_think
    return ans


def _model_answer(conv: _Conv, model: str, max_tokens: int | None) -> Answer:
    last = conv.last_user()
    last_text = "\n".join(last.texts)
    names = [name for name, _, _ in conv.tools]
    tool = None
    if names and conv.tool_choice is not None and conv.tool_choice != "none":
        tool = conv.tool_choice or names[0]
    elif names and conv.tool_choice is None and (m := _TOOL_RE.search(last_text)) and m.group(1) in names:
        tool = m.group(1)
    say = _SAY_RE.search(last_text)
    loop = _LOOP_RE.search(last_text)
    if loop and (not loop.group(1) or loop.group(1) in model):
        return _loop_answer(say.group(1) if say else LOOP_PHRASE, max_tokens)
    if tool is None:  # after a tool call the last user turn is only its result: seed on that
        text = say.group(1) if say else _reply_text(model, last_text or "\n".join(last.extras))
        return _text_answer(text, max_tokens)
    lead = _text_answer(say.group(1), max_tokens) if say else Answer()
    args = _schema_input(next(s for n, _, s in conv.tools if n == tool))
    n = _ntok(json.dumps(args))
    if max_tokens is not None and lead.output_tokens + n > max_tokens:  # a cut-off call is useless: omit it
        return Answer(lead.text, output_tokens=lead.output_tokens, stop="max_tokens")
    return Answer(lead.text, tool=(tool, args), output_tokens=lead.output_tokens + n, stop="tool_use")


def anthropic_frames(msg: dict) -> Iterator[str | None]:
    def frame(data: dict) -> str:
        return f"event: {data['type']}\ndata: {json.dumps(data)}\n\n"

    start = {**msg, "content": [], "stop_reason": None, "usage": {**msg["usage"], "output_tokens": 1}}
    yield frame({"type": "message_start", "message": start})
    yield frame({"type": "ping"})
    for i, block in enumerate(msg["content"]):
        first, deltas = _block_events(block)
        yield frame({"type": "content_block_start", "index": i, "content_block": first})
        for delta in deltas:
            if delta["type"] != "signature_delta":  # the signature is not a generated token
                yield None
            yield frame({"type": "content_block_delta", "index": i, "delta": delta})
        yield frame({"type": "content_block_stop", "index": i})
    yield frame({"type": "message_delta", "delta": {"stop_reason": msg["stop_reason"], "stop_sequence": None},
                 "usage": {"output_tokens": msg["usage"]["output_tokens"]}})
    yield frame({"type": "message_stop"})


def _block_events(block: dict) -> tuple[dict, list[dict]]:
    """How a streamed content block starts, and its deltas."""
    kind = block["type"]
    if kind == "text":
        pieces = _PIECE_RE.findall(block["text"])
        return {"type": "text", "text": ""}, [{"type": "text_delta", "text": p} for p in pieces]
    if kind == "thinking":  # the text, then the whole signature in one delta
        pieces = _PIECE_RE.findall(block["thinking"])
        deltas = [{"type": "thinking_delta", "thinking": p} for p in pieces]
        return {**block, "thinking": "", "signature": ""}, [*deltas, {"type": "signature_delta",
                                                                      "signature": block["signature"]}]
    if kind == "tool_use":
        pieces = _PIECE_RE.findall(json.dumps(block["input"]))
        return {**block, "input": {}}, [{"type": "input_json_delta", "partial_json": p} for p in pieces]
    return block, []  # redacted_thinking arrives whole in its start event


def openai_frames(head: dict, ans: Answer, calls: list[dict], usage: dict | None) -> Iterator[str | None]:
    def chunk(delta: dict | None, finish_reason: str | None = None, **extra: Any) -> str:
        choices = [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None,
                                             "finish_reason": finish_reason}]
        # With include_usage, every chunk carries "usage": null until the final one.
        data = {**head, "object": "chat.completion.chunk", "choices": choices,
                **({"usage": None} if usage is not None else {}), **extra}
        return f"data: {json.dumps(data)}\n\n"

    yield chunk({"role": "assistant", "content": "", "refusal": None})
    for piece in _PIECE_RE.findall(ans.thinking):  # DeepSeek's shape: reasoning first, content null
        yield None
        yield chunk({"content": None, "reasoning_content": piece})
    for piece in _PIECE_RE.findall(ans.text):
        yield None
        yield chunk({"content": piece})
    for i, call in enumerate(calls):
        fn = call["function"]
        yield chunk({"tool_calls": [{"index": i, "id": call["id"], "type": "function",
                                     "function": {"name": fn["name"], "arguments": ""}}]})
        for piece in _PIECE_RE.findall(fn["arguments"]):
            yield None
            yield chunk({"tool_calls": [{"index": i, "function": {"arguments": piece}}]})
    yield chunk({}, FINISH[ans.stop])
    if usage is not None:
        yield chunk(None, usage=usage)
    yield "data: [DONE]\n\n"
