"""`replay`: decisions, costs under them vs all-strong, the report and the JSON lines."""
import io
import json

import pytest

from cascade_extproc import cli, config
from cascade_extproc.offline import replay
from cascade_extproc.offline.transcripts import RecordedCall, RecordedUsage, write_jsonl
from cascade_extproc.types import Route, Usage

CFG = config.load()
USAGE = RecordedUsage(input_tokens=10, output_tokens=1000, cache_read_tokens=20000, cache_write_tokens=2000,
                      cache_write_1h_tokens=2000)


def call(rid, messages, usage=USAGE, model="claude-opus-4-6"):
    return RecordedCall(rid, "s1", model, "2026-01-01T00:00:00Z",
                        {"model": model, "max_tokens": 32000, "messages": messages, "stream": True}, usage, "t.jsonl")


TOOL_RESULT = [{"role": "user", "content": "list"},
               {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "LS", "input": {}}]},
               {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "a.py"}]}]
COMPLEX = [{"role": "user", "content": "Design a plan to migrate the billing service, with trade-offs. " * 3}]


def test_costs_by_path_hand_computed():
    rows = replay.plan([call("a", TOOL_RESULT), call("b", COMPLEX), call("c", COMPLEX, model="claude-haiku-4-5")], CFG)
    assert [(r.path, r.rule) for r in rows] == [("skipped", "tool-result-followup"), ("cascade", "complex-turn"),
                                               ("direct", "cheap-model-requested")]
    # Opus: 10·5 + 1000·25 + 2000·10 (1 h writes) + 20000·0.5 = 50 + 25,000 + 20,000 + 10,000
    strong = 55050e-6
    assert rows[0].cost_all_strong == pytest.approx(strong)
    # Skipped: the same tokens at deepseek-chat prices: 10·.27 + 1000·1.1 + 2000·.27 + 20000·.07
    draft = (2.7 + 1100 + 540 + 1400) * 1e-6
    assert rows[0].cost_routed == pytest.approx(draft)
    # Cascade: draft + verify input (recorded input + 1000 draft + 150 instruction fresh, same cache)
    # + expected output 0.7·10 + 0.3·1000 tokens at $25
    verify = (1160 * 5 + 20000 * 0.5 + 2000 * 10) * 1e-6 + (0.7 * 10 + 0.3 * 1000) * 25e-6
    assert rows[1].cost_routed == pytest.approx(draft + verify)
    assert rows[2].cost_routed == rows[2].cost_all_strong  # direct: unchanged


def test_unknown_prices_and_missing_usage_are_reported_not_guessed():
    rows = replay.plan([call("a", COMPLEX, model="mystery-model"), call("b", COMPLEX, usage=None)], CFG)
    assert rows[0].cost_all_strong is None and rows[1].cost_all_strong is None
    out = io.StringIO()
    replay.report(rows, out, sources=1, accept_rate=0.7)
    assert "0 with recorded usage and known prices" in out.getvalue()


def test_report_is_a_readable_table():
    rows = replay.plan([call("a", TOOL_RESULT), call("b", COMPLEX)], CFG)
    out = io.StringIO()
    replay.report(rows, out, sources=1, accept_rate=0.7)
    text = out.getvalue()
    assert "path     calls  share  all-strong cost  routed cost" in text
    assert "tool-result-followup" in text and "below all-strong" in text


def test_routed_cost_direct_needs_no_draft_price():
    prices = replay.Router.from_config(CFG).ctx.prices
    u = Usage(input_tokens=1000)
    assert replay.routed_cost(Route.DIRECT, "claude-opus-4-6", u, CFG, prices) == pytest.approx(0.005)


def test_cli_write_then_replay_json(tmp_path, capsys):
    src = tmp_path / "calls.jsonl"
    with src.open("w") as f:
        write_jsonl([call("req_1", TOOL_RESULT), call("req_2", COMPLEX)], f)
    assert cli.main(["replay", str(src), "--json"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [(x["request_id"], x["path"], x["rule"]) for x in lines] == [
        ("req_1", "skipped", "tool-result-followup"), ("req_2", "cascade", "complex-turn")]
    assert all(x["cost_all_strong"] > 0 and x["cost_routed"] > 0 for x in lines)


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
    assert "Replayed 17 calls from 3 source file(s); 17 with recorded usage" in text
    assert cli.main(["replay", "--from-claude-code", str(sample_transcripts), "--json"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(lines) == 17 and all(x["request_id"].startswith("req_") for x in lines)
    assert all(x["cost_all_strong"] > 0 for x in lines)
