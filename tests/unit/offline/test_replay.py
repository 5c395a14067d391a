"""`replay`: decisions, costs under them vs all-strong, the report and the JSON lines."""
import io
import json
from dataclasses import replace

import pytest

from cascade_extproc import cli, config
from cascade_extproc.offline import replay
from cascade_extproc.offline.transcripts import RecordedCall, RecordedUsage, write_jsonl

CFG = config.load()
USAGE = RecordedUsage(input_tokens=10, output_tokens=1000, cache_read_tokens=20000, cache_write_tokens=2000,
                      cache_write_1h_tokens=2000)


def call(rid, messages, usage=USAGE, model="claude-opus-4-6", answer=()):
    return RecordedCall(rid, "s1", model, "2026-01-01T00:00:00Z",
                        {"model": model, "max_tokens": 32000, "messages": messages, "stream": True}, usage, "t.jsonl",
                        answer=tuple(answer))


TOOL_RESULT = [{"role": "user", "content": "list"},
               {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "LS", "input": {}}]},
               {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "a.py"}]}]
COMPLEX = [{"role": "user", "content": "Design a plan to migrate the billing service, with trade-offs. " * 3}]


# Routes by the last turn's shape alone, so the cases below choose them.
RULES = config.parse({"router": {"rules": [
    {"name": "tool-result", "when": {"last_turn": "tool_result"}, "route": "skipped"},
    {"name": "design", "when": {"keywords": "planning"}, "route": "cascade"},
    {"name": "rest", "route": "direct"}]}})


def at(rid, seconds, messages, read, write, out=100, inp=3, w1h=0, model="claude-opus-4-6", thread="th"):
    usage = RecordedUsage(input_tokens=inp, output_tokens=out, cache_read_tokens=read, cache_write_tokens=write,
                          cache_write_1h_tokens=w1h)
    return RecordedCall(rid, "s1", model, f"2026-01-01T00:{seconds // 60:02d}:{seconds % 60:02d}Z",
                        {"model": model, "max_tokens": 32000, "messages": messages, "stream": True}, usage,
                        "t.jsonl", thread)


USER = [{"role": "user", "content": "Fix the failing test in the payment module"}]
READ = {"type": "tool_use", "id": "r", "name": "Read", "input": {"file_path": "a.py"}}
EDIT = {"type": "tool_use", "id": "e", "name": "Edit", "input": {"file_path": "a.py", "old_string": "a", "new_string": "b"}}
BASH = {"type": "tool_use", "id": "b", "name": "Bash", "input": {"command": "pytest -q"}}
WIPE = {"type": "tool_use", "id": "w", "name": "Bash", "input": {"command": "git reset --hard HEAD~3"}}
TASK = {"type": "tool_use", "id": "t", "name": "Task", "input": {"prompt": "look", "subagent_type": "Explore"}}
TEXT = {"type": "text", "text": "Done."}


def rules(route):
    """Tool results go `route`, the rest direct."""
    return config.parse({"router": {"rules": [
        {"name": "loop", "when": {"last_turn": "tool_result"}, "route": route}, {"name": "rest", "route": "direct"}]}})


def answered(*answers):
    """A thread: a user message, then one tool result a minute answered as given."""
    calls = [at("u", 0, USER, read=10_000, write=5_000)]
    for i, a in enumerate(answers, 1):
        calls.append(replace(at(f"c{i}", 60 * i, TOOL_RESULT, read=15_000 + 1_000 * i, write=1_000), answer=(a,)))
    return calls


def test_every_row_carries_the_recorded_action():
    rows = replay.plan(answered(READ, EDIT, BASH, WIPE, TASK, TEXT), rules("skipped"))
    assert [(r.action, r.action_tool, r.destructive, r.risky) for r in rows[1:]] == [
        ("read_only", "Read", False, False), ("file_edit", "Edit", False, True), ("shell", "Bash", False, False),
        ("shell", "Bash", True, True), ("subagent", "Task", False, True), ("text", "", False, False)]
    assert rows[0].action == ""  # no answer recorded
    # all skipped: 3 risky (the edit, the destructive command, the subagent) of the 6 with an answer
    assert replay.risky_skip_share(rows) == (3, 6)


def test_a_guarded_row_is_priced_as_what_the_guard_does_with_its_recorded_action():
    calls = answered(READ, EDIT, BASH, WIPE, TASK, TEXT)
    guarded = replay.plan(calls, rules("guarded"))
    skipped = replay.plan(calls, rules("skipped"))
    cascaded = replay.plan(calls, rules("cascade"))
    assert [r.priced_as for r in guarded[1:]] == ["skipped", "cascade", "skipped", "cascade", "cascade", "skipped"]
    assert all(r.guarded for r in guarded[1:]) and guarded[0].guarded is None
    # safe answers cost what a skip costs, risky ones what a cascade costs, call by call (the
    # caches' state differs between plans after the first difference, so compare each alone)
    for i, (a, kind) in enumerate([(READ, "skipped"), (EDIT, "cascade"), (TEXT, "skipped")]):
        one = answered(a)
        g, = replay.plan(one, rules("guarded"))[1:]
        ref, = replay.plan(one, rules(kind))[1:]
        assert g.cost_routed == pytest.approx(ref.cost_routed), kind
        assert g.tokens == ref.tokens
    # none of the guarded answers reaches the client unchecked if risky
    assert replay.risky_skip_share(guarded) == (0, 3)
    assert len(skipped) == len(cascaded) == len(guarded)


def test_a_guarded_row_with_on_risky_direct_pays_the_draft_and_a_direct_call():
    cfg = replace(rules("guarded"), guard=replace(CFG.guard, on_risky="direct"))
    g, = replay.plan(answered(EDIT), cfg)[1:]
    assert g.priced_as == "direct"
    d, = replay.plan(answered(EDIT), rules("direct"))[1:]
    s, = replay.plan(answered(EDIT), rules("skipped"))[1:]
    assert g.cost_routed == pytest.approx(d.cost_routed + s.cost_routed)  # the draft asked, then the strong model


def test_the_risky_set_comes_from_the_guard_config():
    cfg = replace(rules("skipped"), guard=replace(CFG.guard, risky_actions=["file_edit"], text_is_risky=True,
                                                  destructive_shell=False))
    rows = replay.plan(answered(EDIT, WIPE, TASK, TEXT), cfg)
    assert [r.risky for r in rows[1:]] == [True, False, False, True]


def test_the_report_shows_the_path_mix_by_action_and_the_risky_skip_share():
    calls = answered(READ, EDIT, BASH, TASK)
    cfg = config.parse({"router": {"rules": [
        {"name": "after-read", "when": {"prev_action": "read_only", "last_turn": "tool_result"}, "route": "skipped"},
        {"name": "loop", "when": {"last_turn": "tool_result"}, "route": "guarded"},
        {"name": "rest", "route": "direct"}]}})
    rows = replay.plan(calls, cfg)
    out = io.StringIO()
    replay.report(rows, out, sources=1, accept_rate=0.7)
    text = out.getvalue()
    guarded = io.StringIO()
    replay.report(replay.plan(calls, rules("guarded")), guarded, sources=1, accept_rate=0.7)
    assert "guarded: served" in guarded.getvalue() and "guarded: verified" in guarded.getvalue()
    assert "Risky-skip share: 0 of the 2 calls" in guarded.getvalue()
    table = text[text.index("action "):]
    assert "file_edit *" in table and "subagent *" in table
    # every call answers an LS (read-only): all skipped; the Edit and the Task are risky
    assert "Risky-skip share: 2 of the 4 calls the draft served alone" in text and ": 0.500." in text


def test_a_skip_run_defers_its_writes_to_the_next_strong_call():
    """Opus, 5-minute caching (USD per million: $5 in, $25 out, $6.25 write, $0.50 read;
    deepseek-chat $0.27 miss, $0.07 hit, $1.10 out)."""
    rows = replay.plan([
        at("a", 0, USER, read=10_000, write=5_000),  # the system prompt cached by another conversation
        at("b", 60, TOOL_RESULT, read=15_000, write=1_000),
        at("c", 120, TOOL_RESULT, read=16_000, write=1_000),
        at("d", 180, USER, read=17_000, write=1_000),
    ], RULES)
    assert [r.path for r in rows] == ["direct", "skipped", "skipped", "direct"]
    # All-strong, the model prices every call as recorded: 3·5 + read·0.5 + write·6.25 + 100·25.
    assert [round(r.cost_all_strong * 1e6, 2) for r in rows] == [38_765, 16_265, 16_765, 17_265]
    assert all(r.cost_all_strong == pytest.approx(r.cost_recorded) for r in rows)
    # a: the same call. b: the draft's first call misses all 16,003 tokens (+ 100 out).
    assert round(rows[0].cost_routed * 1e6, 2) == 38_765
    assert round(rows[1].cost_routed * 1e6, 2) == 4_430.81  # 16,003·0.27 + 110
    assert rows[1].tokens["draft"] == {"input": 16_003, "cache_read": 0, "cache_write_5m": 0, "cache_write_1h": 0,
                                       "output": 100}
    # c: the draft reads what b left, misses the new 1,000: 16,003·0.07 + 1,000·0.27 + 110
    assert round(rows[2].cost_routed * 1e6, 2) == 1_500.21
    # d: the strong cache still holds a's 15,000 (180 s < 300 s): the skipped turns' 2,000 new
    # tokens are written now, with d's own 1,000: 15 + 15,000·0.5 + 3,000·6.25 + 2,500.
    assert rows[3].tokens["strong"] == {"input": 3, "cache_read": 15_000, "cache_write_5m": 3_000,
                                        "cache_write_1h": 0, "output": 100}
    assert round(rows[3].cost_routed * 1e6, 2) == 28_765
    assert not rows[3].strong_cache_expired


def test_a_skip_run_past_the_ttl_rewrites_the_prefix():
    rows = replay.plan([
        at("a", 0, USER, read=0, write=10_000),
        at("b", 200, TOOL_RESULT, read=10_000, write=1_000),
        at("c", 400, USER, read=11_000, write=1_000),  # 200 s after b: warm all-strong
    ], RULES)
    assert [r.path for r in rows] == ["direct", "skipped", "direct"]
    # Routed, the strong model last saw the thread at 0: 400 s > 5 minutes, all 12,000 written.
    assert rows[2].tokens["strong"]["cache_read"] == 0 and rows[2].tokens["strong"]["cache_write_5m"] == 12_000
    assert rows[2].cost_routed == pytest.approx((15 + 12_000 * 6.25 + 2_500) * 1e-6)
    assert rows[2].strong_cache_expired
    # With 1-hour caching (the writes recorded as 1-hour ones) it stays warm: 10,000 read.
    hour = replay.plan([at("a", 0, USER, read=0, write=10_000, w1h=10_000),
                        at("b", 200, TOOL_RESULT, read=10_000, write=1_000, w1h=1_000),
                        at("c", 400, USER, read=11_000, write=1_000, w1h=1_000)], RULES)
    assert hour[2].tokens["strong"] == {"input": 3, "cache_read": 10_000, "cache_write_5m": 0,
                                        "cache_write_1h": 2_000, "output": 100}


def test_a_cascade_is_the_draft_and_a_verify_call_reading_the_context():
    rows = replay.plan([at("a", 0, USER, read=0, write=20_000, out=1_000),
                        at("b", 30, COMPLEX, read=20_000, write=2_000, out=1_000)], RULES)
    assert rows[1].path == "cascade"
    # The draft's first call in the thread misses all 22,003 tokens and answers 1,000: 5,940.81 + 1,100.
    # The verify reads 20,000, writes 2,000, takes 3 + 1,000 (the draft) + 150 (instruction) as
    # input and answers 0.7·10 + 0.3·1,000 = 307 tokens: 10,000 + 12,500 + 5,765 + 7,675
    assert rows[1].tokens["draft"]["input"] == 22_003
    assert rows[1].tokens["strong"]["output"] == 307
    assert rows[1].cost_routed == pytest.approx((5_940.81 + 1_100 + 10_000 + 12_500 + 5_765 + 7_675) * 1e-6)


def test_threads_are_replayed_apart_and_in_time_order():
    # Given out of order and interleaved with another thread: each thread sorts itself by time.
    rows = replay.plan([
        at("b", 60, TOOL_RESULT, read=15_000, write=1_000),
        at("x", 30, USER, read=0, write=9_000, thread="other"),
        at("a", 0, USER, read=10_000, write=5_000),
    ], RULES)
    assert [r.request_id for r in rows] == ["b", "x", "a"]  # rows keep the calls' order
    assert rows[0].tokens["draft"]["input"] == 16_003  # b came after a: the draft's first call all the same
    assert rows[1].tokens["all_strong"]["cache_read"] == 0  # another thread's cache is not this one's


def test_a_prompt_the_client_changed_caps_every_cache():
    rows = replay.plan([
        at("a", 0, USER, read=0, write=50_000),
        at("b", 10, TOOL_RESULT, read=50_000, write=1_000),
        at("c", 20, USER, read=20_000, write=32_000),  # warm, yet only 20,000 read: the prompt changed
    ], RULES)
    assert rows[2].tokens["strong"]["cache_read"] == 20_000
    assert rows[2].cost_routed == pytest.approx(rows[2].cost_all_strong)


def test_unknown_prices_and_missing_usage_are_reported_not_guessed():
    rows = replay.plan([call("a", COMPLEX, model="mystery-model"), call("b", COMPLEX, usage=None)], CFG)
    assert rows[0].cost_all_strong is None and rows[1].cost_all_strong is None
    out = io.StringIO()
    replay.report(rows, out, sources=1, accept_rate=0.7)
    assert "0 with recorded usage and known prices" in out.getvalue()


def test_report_is_a_readable_table():
    rows = replay.plan([call("a", TOOL_RESULT, answer=[READ]), call("b", COMPLEX, answer=[TEXT])], CFG)
    out = io.StringIO()
    replay.report(rows, out, sources=1, accept_rate=0.7)
    text = out.getvalue()
    assert "path             calls  share  all-strong cost  routed cost" in text
    assert "guarded: served      1  50.0%" in text
    assert "tool-loop" in text and "below all-strong" in text
    assert "priced from the cache model, all-strong and routed alike" in text and "as recorded" in text


def test_direct_needs_no_draft_price():
    cfg = config.parse({"router": {"rules": [{"name": "rest", "route": "direct"}]},
                        "providers": {"anthropic": {"draft": {"model": "mystery-draft"}}}})
    (row,) = replay.plan([at("a", 0, USER, read=0, write=1_000)], cfg)
    assert row.cost_routed == pytest.approx(row.cost_all_strong)


def test_cli_write_then_replay_json(tmp_path, capsys):
    src = tmp_path / "calls.jsonl"
    with src.open("w") as f:
        write_jsonl([call("req_1", TOOL_RESULT), call("req_2", COMPLEX)], f)
    assert cli.main(["replay", str(src), "--json"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [(x["request_id"], x["path"], x["rule"]) for x in lines] == [
        ("req_1", "guarded", "tool-loop"), ("req_2", "cascade", "complex-turn")]
    # no answer recorded: the action is unknown, and the guard is assumed to escalate
    assert lines[0]["guarded"] is True and lines[0]["priced_as"] == "cascade" and lines[0]["action"] == ""
    assert "guarded" not in lines[1]
    assert all(x["cost_all_strong"] > 0 and x["cost_routed"] > 0 for x in lines)
    # The simulated token split per provider: all-strong, and the routed plan's calls.
    assert set(lines[0]["tokens"]) == {"all_strong", "draft", "strong"} and set(lines[1]["tokens"]) == {
        "all_strong", "draft", "strong"}
    assert set(lines[1]["tokens"]["strong"]) == {"input", "cache_read", "cache_write_5m", "cache_write_1h", "output"}


def test_cli_plain_request_bodies(tmp_path, capsys):
    src = tmp_path / "bodies.jsonl"
    src.write_text(json.dumps({"model": "claude-opus-4-6", "max_tokens": 10, "messages": COMPLEX}) + "\n")
    assert cli.main(["replay", str(src), "--json"]) == 0
    (line,) = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert line["request_id"] == "line-1" and line["cost_all_strong"] is None


def test_cli_errors(tmp_path, capsys):
    assert cli.main(["replay"]) == 2
    assert cli.main(["replay", str(tmp_path / "missing.jsonl")]) == 2
    assert "missing.jsonl" in capsys.readouterr().err


def test_drop_thinking():
    req = {"model": "m", "thinking": {"type": "enabled", "budget_tokens": 2000}, "messages": [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "t", "signature": "s"},
                                          {"type": "text", "text": "a"}]},
        {"role": "assistant", "content": [{"type": "redacted_thinking", "data": "d"}]}]}
    out = replay.drop_thinking(req)
    assert "thinking" not in out and out["messages"][1]["content"] == [{"type": "text", "text": "a"}]
    assert out["messages"][2]["content"] == [{"type": "text", "text": "(reasoning omitted)"}]
    assert req["messages"][1]["content"][0]["type"] == "thinking"  # the input is untouched


def test_sample_transcripts_replay(capsys, sample_transcripts):
    assert cli.main(["replay", "--from-claude-code", str(sample_transcripts)]) == 0
    text = capsys.readouterr().out
    assert "Replayed 17 calls from 3 source file(s) in 3 conversation thread(s); 17 with recorded usage" in text
    assert cli.main(["replay", "--from-claude-code", str(sample_transcripts), "--json"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(lines) == 17 and all(x["request_id"].startswith("req_") for x in lines)
    assert all(x["cost_all_strong"] > 0 for x in lines)
