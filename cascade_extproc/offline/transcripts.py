"""Rebuild the Anthropic Messages API calls recorded in Claude Code session transcripts.

Claude Code logs one JSON event per line. One API response is spread over several `assistant`
lines (one content block each, same requestId) and `parentUuid` links every line to the one
before it. Walking that chain back from a response's first line gives the history that was sent.
The transcripts hold no system prompt and no tool definitions, so neither do the rebuilt requests.
Each call names its thread: the first line of its chain, so a subagent (whose chain starts at its
own prompt) and a compaction are threads of their own, as they are conversations of their own at
the provider's cache.
"""
from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Iterable, TextIO

MAX_TOKENS = 32000
_MESSAGE_TYPES = ("user", "assistant")


@dataclass(frozen=True)
class RecordedUsage:
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    cache_write_1h_tokens: int = 0  # part of cache_write_tokens written for 1 hour (priced higher)


@dataclass(frozen=True)
class RecordedCall:
    request_id: str
    session_id: str
    model: str
    timestamp: str  # of the first assistant line of the call
    request: dict  # Anthropic Messages request body
    usage: RecordedUsage | None
    source: str  # file path
    thread: str = ""  # the conversation thread: the uuid of its chain's first line
    # What the model answered: the content blocks of the recorded response (text, tool_use,
    # thinking), in order; empty when unknown (a bare request body). Replay reads the action
    # the strong model took from it.
    answer: tuple = ()


@dataclass
class _Line:
    idx: int  # line number in the file, 0-based
    uuid: str
    parent: str | None
    sidechain: bool
    raw: dict
    role: str | None = None  # None: only a link in the parentUuid chain (progress, system, ...)
    key: str | None = None  # response key of an assistant line

    @property
    def content(self) -> Any:
        return self.raw["message"]["content"]


def load(path: str | Path) -> list[RecordedCall]:
    return load_with_stats(path)[0]


def load_with_stats(path: str | Path) -> tuple[list[RecordedCall], dict]:
    """Calls from a .jsonl file or a folder of them (recursive, sorted), plus line/call counts."""
    root = Path(path)
    if root.is_dir():
        files = sorted(p for p in root.rglob("*.jsonl") if p.is_file())
    elif root.exists():
        files = [root]
    else:
        raise FileNotFoundError(path)
    stats = {"files": len(files), "lines": 0, "skipped": 0, "calls": 0, "dropped_calls": 0,
             "duplicate_calls": 0}
    calls: list[RecordedCall] = []
    seen: set[str] = set()
    for call in (c for f in files for c in _load_file(f, stats)):
        if call.request_id in seen:  # a resumed session can copy earlier lines into a new file
            stats["duplicate_calls"] += 1
        else:
            seen.add(call.request_id)
            calls.append(call)
    stats["calls"] = len(calls)
    return calls, stats


def _parse(idx: int, text: str, stats: dict) -> _Line | None:
    try:
        d = json.loads(text)
    except ValueError:
        d = None
    if not isinstance(d, dict):
        stats["skipped"] += 1
        return None
    typ, uuid, parent = d.get("type"), d.get("uuid"), d.get("parentUuid")
    if not isinstance(uuid, str) or not uuid:
        stats["skipped"] += typ in _MESSAGE_TYPES
        return None
    # Any line with a uuid stays in the chain, whatever its type: the links run through them.
    line = _Line(idx, uuid, parent if isinstance(parent, str) else None, d.get("isSidechain") is True, d)
    if typ not in _MESSAGE_TYPES:
        return line
    msg = d.get("message")
    content = msg.get("content") if isinstance(msg, dict) else None
    if not isinstance(content, (str, list)) or msg.get("role", typ) != typ:
        stats["skipped"] += 1
        return line
    if typ == "assistant":
        if msg.get("model") == "<synthetic>":  # made up by Claude Code (errors, interrupts): no call
            return line
        key = d.get("requestId") or msg.get("id")
        if not isinstance(key, str) or not isinstance(content, list):
            stats["skipped"] += 1
            return line
        line.key = key
    line.role = typ
    return line


def _load_file(path: Path, stats: dict) -> list[RecordedCall]:
    lines: dict[str, _Line] = {}
    with open(path, encoding="utf-8", errors="replace") as fh:
        for idx, text in enumerate(fh):
            if not text.strip():
                continue
            stats["lines"] += 1
            line = _parse(idx, text, stats)
            if line is not None and line.uuid not in lines:  # first copy of a uuid wins
                lines[line.uuid] = line
    responses: dict[str, list[_Line]] = {}  # insertion order = order of first line
    alias: dict[str, str] = {}  # message.id -> response key, for lines missing the requestId
    results: dict[str, _Line] = {}  # tool_use_id -> first user line answering it
    for line in lines.values():
        if line.role == "assistant":
            mid = line.raw["message"].get("id")
            if isinstance(mid, str):
                line.key = alias.setdefault(mid, line.key)
            responses.setdefault(line.key, []).append(line)
        elif line.role == "user":
            for b in _blocks(line.content):
                if b.get("type") == "tool_result" and isinstance(b.get("tool_use_id"), str):
                    results.setdefault(b["tool_use_id"], line)
    calls = [_build(path, key, group, lines, responses, results) for key, group in responses.items()]
    stats["dropped_calls"] += calls.count(None)
    return [c for c in calls if c is not None]


def _walk(first: _Line, lines: dict[str, _Line]) -> tuple[list[_Line], str]:
    """User/assistant lines from the root to just before `first`, in order; and the root's uuid."""
    out, seen, uuid, root = [], {first.uuid}, first.parent, first.uuid
    while uuid is not None and uuid not in seen and uuid in lines:  # stops at cycles, missing parents
        seen.add(uuid)
        line = lines[uuid]
        if line.sidechain != first.sidechain:  # a subagent's conversation starts at its own prompt
            break
        if line.role is not None:
            out.append(line)
        root, uuid = uuid, line.parent
    return out[::-1], root


def _build(path: Path, key: str, group: list[_Line], lines: dict[str, _Line],
           responses: dict[str, list[_Line]], results: dict[str, _Line]) -> RecordedCall | None:
    first = group[0]
    msgs: list[dict] = []
    done, used, budget = {key}, set(), None
    chain, root = _walk(first, lines)
    for line in chain:
        if line.role == "user":
            meta = line.raw.get("thinkingMetadata")
            if isinstance(meta, dict) and isinstance(meta.get("maxThinkingTokens"), int):
                budget = meta["maxThinkingTokens"]
            if line.uuid not in used:
                _append(msgs, "user", _clean(line.content))
        elif line.key not in done:
            done.add(line.key)
            blocks = [b for part in responses[line.key] if part.idx < first.idx for b in _clean(part.content)]
            _append(msgs, "assistant", blocks)
            # Each tool_result line hangs off its own tool_use line, so for parallel tool calls only
            # one of them is on the path: collect them all, in tool_use order.
            for b in blocks:
                r = results.get(b.get("id")) if b.get("type") == "tool_use" else None
                if r is not None and r.idx < first.idx and r.uuid not in used:
                    used.add(r.uuid)
                    _append(msgs, "user", _clean(r.content))
    msgs = _normalize(msgs)
    if not msgs or msgs[-1]["role"] != "user":
        return None
    model = next((m for m in (p.raw["message"].get("model") for p in group) if isinstance(m, str)), "")
    request: dict[str, Any] = {"model": model, "max_tokens": MAX_TOKENS, "messages": copy.deepcopy(msgs),
                               "stream": True}
    if budget:  # 0 means thinking was switched off
        request["thinking"] = {"type": "enabled", "budget_tokens": budget}
        request["max_tokens"] = max(MAX_TOKENS, budget + 1)  # the API wants budget < max_tokens
    answer = tuple(b for part in group for b in _blocks(part.content))
    return RecordedCall(key, str(first.raw.get("sessionId") or ""), model, str(first.raw.get("timestamp") or ""),
                        request, _usage(group), str(path), root, answer)


def _blocks(content: Any) -> list[dict]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []


def _clean(content: Any) -> Any:
    """Drop blocks the API would not accept back."""
    if isinstance(content, str):
        return content if content.strip() else []
    out = []
    for b in _blocks(content):
        if b.get("type") == "text" and not (isinstance(b.get("text"), str) and b["text"].strip()):
            continue  # Claude Code records a "\n\n" block before thinking; whitespace-only text is rejected
        if b.get("type") == "thinking" and not b.get("signature"):
            continue  # unsigned thinking cannot be sent back
        out.append(b)
    return out


def _append(msgs: list[dict], role: str, content: Any) -> None:
    if not content:
        return
    if msgs and msgs[-1]["role"] == role:
        msgs[-1]["content"] = _blocks(msgs[-1]["content"]) + _blocks(content)
    else:
        msgs.append({"role": role, "content": content})


def _ids(content: Any, btype: str, field: str) -> set:
    return {b.get(field) for b in _blocks(content) if b.get("type") == btype}


def _normalize(msgs: list[dict]) -> list[dict]:
    """Start with user, and pair every tool_use with its tool_result: the API rejects either alone."""
    while msgs and msgs[0]["role"] != "user":
        msgs.pop(0)
    for i, m in enumerate(msgs):
        if m["role"] == "assistant" and i + 1 < len(msgs):
            answered = _ids(msgs[i + 1]["content"], "tool_result", "tool_use_id")
            m["content"] = [b for b in m["content"] if b.get("type") != "tool_use" or b.get("id") in answered]
        elif m["role"] == "user" and isinstance(m["content"], list):
            asked = _ids(msgs[i - 1]["content"], "tool_use", "id") if i else set()
            m["content"] = [b for b in m["content"] if b.get("type") != "tool_result" or b.get("tool_use_id") in asked]
    out: list[dict] = []
    for m in msgs:  # emptied messages go; their neighbours merge
        if out or m["role"] == "user":
            _append(out, m["role"], m["content"])
    return out


def _usage(group: list[_Line]) -> RecordedUsage | None:
    # The output count grows over the lines of one response: the largest is the final one.
    usages = [u for u in (p.raw["message"].get("usage") for p in group) if isinstance(u, dict)]
    if not usages:
        return None
    u = max(usages, key=lambda u: _int(u.get("output_tokens")))
    split = u.get("cache_creation") if isinstance(u.get("cache_creation"), dict) else {}
    return RecordedUsage(_int(u.get("input_tokens")), _int(u.get("output_tokens")),
                         _int(u.get("cache_read_input_tokens")), _int(u.get("cache_creation_input_tokens")),
                         _int(split.get("ephemeral_1h_input_tokens")))


def _int(v: Any) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) else 0


def write_jsonl(calls: Iterable[RecordedCall], out: TextIO) -> None:
    for c in calls:
        out.write(json.dumps({"request_id": c.request_id, "session_id": c.session_id, "thread": c.thread,
                              "model": c.model, "timestamp": c.timestamp,
                              "usage": asdict(c.usage) if c.usage else None, "answer": list(c.answer),
                              "request": c.request},
                             ensure_ascii=False) + "\n")


def read_jsonl(path: str | Path) -> list[RecordedCall]:
    """Read write_jsonl output, or plain request bodies one per line. Raises ValueError on bad lines."""
    calls = []
    with open(path, encoding="utf-8") as fh:
        for n, text in enumerate(fh, 1):
            if not text.strip():
                continue
            try:
                d = json.loads(text)
            except ValueError:
                d = None
            if not isinstance(d, dict) or not isinstance(d.get("request", {}), dict):
                raise ValueError(f"{path}:{n}: expected a JSON object (with an object 'request', if any)")
            if "request" not in d:  # a bare request body
                calls.append(RecordedCall(f"line-{n}", "", str(d.get("model", "")), "", d, None, str(path)))
                continue
            u = d.get("usage")
            usage = RecordedUsage(**{f.name: _int(u.get(f.name)) for f in fields(RecordedUsage)}) \
                if isinstance(u, dict) else None
            answer = d.get("answer")
            calls.append(RecordedCall(str(d.get("request_id") or f"line-{n}"), str(d.get("session_id") or ""),
                                      str(d.get("model") or d["request"].get("model", "")),
                                      str(d.get("timestamp") or ""), d["request"], usage, str(path),
                                      str(d.get("thread") or ""),
                                      tuple(b for b in answer if isinstance(b, dict)) if isinstance(answer, list) else ()))
    return calls
