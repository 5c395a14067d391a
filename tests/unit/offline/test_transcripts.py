"""Rebuilding API calls from Claude Code transcripts, on small synthetic files and the real samples."""
from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path

import pytest

from cascade_extproc.offline.transcripts import (
    RecordedCall, RecordedUsage, load, load_with_stats, read_jsonl, write_jsonl,
)



def user(uuid, parent, content, **kw):
    return {"type": "user", "uuid": uuid, "parentUuid": parent, "sessionId": "s1", "timestamp": f"t-{uuid}",
            "isSidechain": False, "message": {"role": "user", "content": content}, **kw}


def asst(uuid, parent, req, block, out=10, model="claude-test", **kw):
    usage = {"input_tokens": 3, "output_tokens": out, "cache_creation_input_tokens": 50,
             "cache_read_input_tokens": 70}
    return {"type": "assistant", "uuid": uuid, "parentUuid": parent, "sessionId": "s1", "timestamp": f"t-{uuid}",
            "isSidechain": False, "requestId": req,
            "message": {"id": f"msg_{req}", "model": model, "role": "assistant", "type": "message",
                        "content": [block], "stop_reason": None, "usage": usage}, **kw}


def link(uuid, parent, typ="progress"):
    return {"type": typ, "uuid": uuid, "parentUuid": parent, "sessionId": "s1", "isSidechain": False, "data": {}}


def text(t):
    return {"type": "text", "text": t}


def tool_use(i):
    return {"type": "tool_use", "id": f"tu{i}", "name": "Bash", "input": {"command": f"cmd{i}"},
            "caller": {"type": "direct"}}


def result(i):
    return {"type": "tool_result", "tool_use_id": f"tu{i}", "content": f"out{i}"}


def think(t):
    return {"type": "thinking", "thinking": t, "signature": f"sig-{t}"}


def write(tmp_path, events, name="t.jsonl"):
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((e if isinstance(e, str) else json.dumps(e)) + "\n" for e in events))
    return path


def by_id(calls):
    return {c.request_id: c for c in calls}


def test_two_turn_chat(tmp_path):
    path = write(tmp_path, [
        {"type": "file-history-snapshot", "messageId": "x", "snapshot": {}},
        user("u1", None, "hi"),
        asst("a1", "u1", "r1", text("hello")),
        user("u2", "a1", "bye"),
        asst("a2", "u2", "r2", text("ciao"), out=4),
    ])
    calls = load(path)
    assert [c.request_id for c in calls] == ["r1", "r2"]
    assert calls[0] == RecordedCall(
        request_id="r1", session_id="s1", model="claude-test", timestamp="t-a1",
        request={"model": "claude-test", "max_tokens": 32000, "stream": True,
                 "messages": [{"role": "user", "content": "hi"}]},
        usage=RecordedUsage(input_tokens=3, output_tokens=10, cache_read_tokens=70, cache_write_tokens=50),
        source=str(path), thread="u1", answer=(text("hello"),))
    assert calls[1].thread == "u1"  # the same conversation: its chain starts at the same line
    assert calls[1].request["messages"] == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [text("hello")]},
        {"role": "user", "content": "bye"},
    ]
    assert calls[1].usage.output_tokens == 4


def test_tool_loop_response_over_three_lines(tmp_path):
    # Like the samples: each tool_result line hangs off its own tool_use line, not the last one.
    path = write(tmp_path, [
        user("u1", None, "do it"),
        asst("a1", "u1", "r1", text("Let me look."), out=1),
        asst("a2", "a1", "r1", tool_use(1), out=5),
        link("p1", "a2"),
        asst("a3", "p1", "r1", tool_use(2), out=40),
        user("ur1", "a2", [result(1)]),
        user("ur2", "a3", [result(2)]),
        asst("b1", "ur2", "r2", text("done")),
    ])
    calls = by_id(load(path))
    assert calls["r1"].usage.output_tokens == 40
    assert calls["r1"].timestamp == "t-a1"
    # the recorded answer: every block of the response, over its three lines, in order
    assert calls["r1"].answer == (text("Let me look."), tool_use(1), tool_use(2))
    assert calls["r2"].request["messages"] == [
        {"role": "user", "content": "do it"},
        {"role": "assistant", "content": [text("Let me look."), tool_use(1), tool_use(2)]},
        {"role": "user", "content": [result(1), result(2)]},
    ]


def test_response_continues_after_a_tool_result(tmp_path):
    # Seen in the samples: the 2nd tool_use of a response is logged after the 1st tool's result.
    path = write(tmp_path, [
        user("u1", None, "go"),
        asst("a1", "u1", "r1", think("hmm")),
        asst("a2", "a1", "r1", tool_use(1)),
        user("ur1", "a2", [result(1)]),
        asst("a3", "ur1", "r1", tool_use(2), out=30),
        user("ur2", "a3", [result(2)]),
        asst("b1", "ur2", "r2", text("ok")),
    ])
    calls = by_id(load(path))
    assert list(calls) == ["r1", "r2"]
    assert calls["r1"].usage.output_tokens == 30
    assert calls["r2"].request["messages"] == [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": [think("hmm"), tool_use(1), tool_use(2)]},
        {"role": "user", "content": [result(1), result(2)]},
    ]


def test_subagent_sidechain_is_its_own_conversation(tmp_path):
    side = {"isSidechain": True}
    path = write(tmp_path, [
        user("u1", None, "main task"),
        asst("a1", "u1", "r1", tool_use(1)),
        {**user("s1", "a1", "sub prompt"), **side},
        {**asst("s2", "s1", "rs1", tool_use(9), model="claude-small"), **side},
        {**user("s3", "s2", [result(9)]), **side},
        {**asst("s4", "s3", "rs2", text("sub answer"), model="claude-small"), **side},
        user("ur1", "a1", [result(1)]),
        asst("a2", "ur1", "r2", text("all done")),
    ])
    calls = by_id(load(path))
    assert list(calls) == ["r1", "rs1", "rs2", "r2"]
    assert calls["rs1"].request["messages"] == [{"role": "user", "content": "sub prompt"}]
    assert calls["rs2"].model == "claude-small"
    assert calls["rs2"].request["messages"] == [
        {"role": "user", "content": "sub prompt"},
        {"role": "assistant", "content": [tool_use(9)]},
        {"role": "user", "content": [result(9)]},
    ]
    assert calls["r2"].request["messages"] == [
        {"role": "user", "content": "main task"},
        {"role": "assistant", "content": [tool_use(1)]},
        {"role": "user", "content": [result(1)]},
    ]
    # Two threads: the main conversation's and the subagent's, each named by its first line.
    assert {k: c.thread for k, c in calls.items()} == {"r1": "u1", "rs1": "s1", "rs2": "s1", "r2": "u1"}


def test_progress_and_system_lines_are_links_and_user_lines_merge(tmp_path):
    path = write(tmp_path, [
        {"type": "queue-operation", "operation": "enqueue", "sessionId": "s1"},
        link("p0", None),
        user("u1", "p0", "a"),
        user("u2", "u1", [text("b")], isMeta=True),
        link("p1", "u2"),
        link("y1", "p1", typ="system"),
        link("z1", "y1", typ="some-future-type"),
        asst("a1", "z1", "r1", text("x")),
    ])
    calls, stats = load_with_stats(path)
    assert [c.request["messages"] for c in calls] == [[{"role": "user", "content": [text("a"), text("b")]}]]
    assert stats == {"files": 1, "lines": 8, "skipped": 0, "calls": 1, "dropped_calls": 0, "duplicate_calls": 0}


def test_thinking_metadata_most_recent_on_path(tmp_path):
    path = write(tmp_path, [
        user("u1", None, "q1", thinkingMetadata={"maxThinkingTokens": 31999}),
        asst("a1", "u1", "r1", think("t1")),
        asst("a2", "a1", "r1", text("a1")),
        user("u2", "a2", "q2"),
        asst("b1", "u2", "r2", text("a2")),
        user("u3", "b1", "q3", thinkingMetadata={"maxThinkingTokens": 0}),
        asst("c1", "u3", "r3", text("a3")),
        user("u4", None, "other branch"),
        asst("d1", "u4", "r4", text("a4")),
    ])
    calls = by_id(load(path))
    assert calls["r1"].request["thinking"] == {"type": "enabled", "budget_tokens": 31999}
    assert calls["r2"].request["thinking"] == {"type": "enabled", "budget_tokens": 31999}
    assert calls["r2"].request["max_tokens"] == 32000
    assert calls["r2"].request["messages"][1] == {"role": "assistant", "content": [think("t1"), text("a1")]}
    assert "thinking" not in calls["r3"].request
    assert "thinking" not in calls["r4"].request


def test_whitespace_text_and_unsigned_thinking_dropped(tmp_path):
    path = write(tmp_path, [
        user("u1", None, "q"),
        asst("a1", "u1", "r1", text("\n\n")),
        asst("a2", "a1", "r1", think("deep")),
        asst("a3", "a2", "r1", {"type": "thinking", "thinking": "no sig"}),
        asst("a4", "a3", "r1", text("answer")),
        user("u2", "a4", "more"),
        asst("b1", "u2", "r2", text("ok")),
    ])
    assert by_id(load(path))["r2"].request["messages"][1] == {
        "role": "assistant", "content": [think("deep"), text("answer")]}


def test_broken_lines_are_counted_and_skipped(tmp_path):
    no_message = user("bad", None, "x")
    del no_message["message"]
    path = write(tmp_path, [
        "{not json",
        "[1, 2]",
        user("u1", None, "q"),
        no_message,
        {**asst("nouuid", "u1", "rx", text("x")), "uuid": None},
        "",
        asst("a1", "u1", "r1", text("a")),
    ])
    calls, stats = load_with_stats(path)
    assert [c.request_id for c in calls] == ["r1"]
    assert stats == {"files": 1, "lines": 6, "skipped": 4, "calls": 1, "dropped_calls": 0, "duplicate_calls": 0}


def test_cycle_in_parent_links_terminates(tmp_path):
    path = write(tmp_path, [
        user("u1", "p1", "q"),
        link("p1", "u1"),
        asst("a1", "u1", "r1", text("a")),
        asst("x1", "x1", "r2", text("self loop")),
    ])
    calls, stats = load_with_stats(path)
    assert [(c.request_id, c.request["messages"]) for c in calls] == [("r1", [{"role": "user", "content": "q"}])]
    assert stats["dropped_calls"] == 1


def test_missing_parent(tmp_path):
    path = write(tmp_path, [
        user("ur0", "gone", [result(7)]),  # its tool_use is lost: the orphan result must go
        user("u1", "ur0", "continue"),
        asst("a1", "u1", "r1", text("a")),
        asst("b1", "gone-too", "r2", text("no history")),
    ])
    calls, stats = load_with_stats(path)
    assert [(c.request_id, c.request["messages"]) for c in calls] == [
        ("r1", [{"role": "user", "content": [text("continue")]}])]
    assert stats["dropped_calls"] == 1


def test_unanswered_tool_use_dropped(tmp_path):
    path = write(tmp_path, [
        user("u1", None, "q"),
        asst("a1", "u1", "r1", text("trying")),
        asst("a2", "a1", "r1", tool_use(1)),
        user("u2", "a2", "never mind"),
        asst("b1", "u2", "r2", text("ok")),
    ])
    assert by_id(load(path))["r2"].request["messages"] == [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": [text("trying")]},
        {"role": "user", "content": "never mind"},
    ]


def test_odd_inputs(tmp_path):
    empty = write(tmp_path, [], name="empty.jsonl")
    assert load_with_stats(empty) == ([], {"files": 1, "lines": 0, "skipped": 0, "calls": 0,
                                           "dropped_calls": 0, "duplicate_calls": 0})
    (tmp_path / "nothing").mkdir()
    (tmp_path / "nothing" / "notes.txt").write_text("hi")
    assert load(tmp_path / "nothing") == []
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "absent")


def test_folder_recursive_sorted_and_deduplicated(tmp_path):
    chat = [user("u1", None, "q"), asst("a1", "u1", "r1", text("a"))]
    write(tmp_path, [user("v1", None, "q"), asst("b1", "v1", "r9", text("b"))], name="b.jsonl")
    write(tmp_path, chat, name="a.jsonl")
    write(tmp_path, chat, name="sub/c.jsonl")  # a resumed copy
    calls, stats = load_with_stats(tmp_path)
    assert [(c.request_id, Path(c.source).name) for c in calls] == [("r1", "a.jsonl"), ("r9", "b.jsonl")]
    assert stats["files"] == 3 and stats["duplicate_calls"] == 1


def test_write_read_round_trip(tmp_path):
    path = write(tmp_path, [
        user("u1", None, "q", thinkingMetadata={"maxThinkingTokens": 2048}),
        asst("a1", "u1", "r1", think("t")),
        asst("a2", "a1", "r1", text("é ✓")),
        user("u2", "a2", "more"),
        asst("b1", "u2", "r2", text("ok")),
    ])
    calls = load(path)
    out = tmp_path / "calls.jsonl"
    with open(out, "w", encoding="utf-8") as fh:
        write_jsonl(calls + [replace(calls[0], request_id="r3", usage=None)], fh)
    back = read_jsonl(out)
    assert back == [replace(c, source=str(out)) for c in calls] + [
        replace(calls[0], request_id="r3", usage=None, source=str(out))]
    first = json.loads(out.read_text(encoding="utf-8").splitlines()[0])
    assert list(first) == ["request_id", "session_id", "thread", "model", "timestamp", "usage", "answer", "request"]
    assert back[0].answer == (think("t"), text("é ✓"))  # the recorded answer survives the round trip


def test_read_plain_request_bodies(tmp_path):
    body = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    path = tmp_path / "bodies.jsonl"
    path.write_text(json.dumps(body) + "\n\n" + json.dumps({**body, "model": "m2"}) + "\n")
    assert read_jsonl(path) == [RecordedCall("line-1", "", "m", "", body, None, str(path)),
                                RecordedCall("line-3", "", "m2", "", {**body, "model": "m2"}, None, str(path))]
    path.write_text("{oops\n")
    with pytest.raises(ValueError, match="bodies.jsonl:1"):
        read_jsonl(path)
    buf = io.StringIO()
    write_jsonl([], buf)
    assert buf.getvalue() == ""


def test_real_samples(sample_transcripts):
    calls, stats = load_with_stats(sample_transcripts)
    assert len(calls) == len({c.request_id for c in calls}) == 17
    assert stats["skipped"] == stats["dropped_calls"] == 0
    for c in calls:
        assert c.usage is not None and c.usage.output_tokens > 0 and c.model, c.request_id
        assert c.request["model"] == c.model and c.request["stream"] is True
        msgs = c.request["messages"]
        assert [m["role"] for m in msgs] == ["user", "assistant"] * (len(msgs) // 2) + ["user"], c.request_id
        for prev, m in zip([None] + msgs, msgs):
            blocks = [] if isinstance(m["content"], str) else m["content"]
            results = [b["tool_use_id"] for b in blocks if b["type"] == "tool_result"]
            if m["role"] == "user" and prev is not None:
                uses = [b["id"] for b in prev["content"] if b["type"] == "tool_use"]
                assert sorted(results) == sorted(uses), c.request_id  # every use answered, every result asked
            elif m["role"] == "user":
                assert results == []
            for b in blocks:
                assert b["type"] != "text" or b["text"].strip()
                assert b["type"] != "thinking" or b["signature"]
    # The samples are linear sessions: each call's history holds every earlier response of its file
    # whole, including the parallel tool_uses whose results are off the parentUuid path.
    earlier: dict[str, list[set]] = {}
    for c in calls:
        uses = {b["id"] for m in c.request["messages"] if m["role"] == "assistant"
                for b in m["content"] if b["type"] == "tool_use"}
        seen = earlier.setdefault(c.source, [])
        assert sum(m["role"] == "assistant" for m in c.request["messages"]) == len(seen), c.request_id
        assert uses == set().union(*seen), c.request_id
        seen.append(_tool_use_ids(Path(c.source), c.request_id))


def _tool_use_ids(path, request_id):
    lines = [json.loads(t) for t in path.read_text().splitlines()]
    return {b["id"] for d in lines if d.get("requestId") == request_id
            for b in d["message"]["content"] if b["type"] == "tool_use"}
