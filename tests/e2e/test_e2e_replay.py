"""`replay --target`: recorded calls sent through a real stack; latency per served path."""
import json

from cascade_extproc import cli
from cascade_extproc.offline.transcripts import RecordedCall, RecordedUsage, write_jsonl

USAGE = RecordedUsage(10, 200, 5000, 100)


def _call(rid, messages):
    return RecordedCall(rid, "s", "claude-sonnet-5", "", {"model": "claude-sonnet-5", "max_tokens": 2000,
                                                          "messages": messages, "stream": True}, USAGE, "x")


CALLS = [
    _call("r1", [{"role": "user", "content": "hi"}]),
    _call("r2", [{"role": "user", "content": "Plan the migration of our queue to a log, step by step, "
                                            "with the trade-offs of each option and a rollback path."}]),
    _call("r3", [{"role": "user", "content": "sim:tool=LS"},
                 {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "LS", "input": {}}]},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "a.py"}]}]),
]


def test_replay_through_a_running_stack(stack, tmp_path, capsys):
    src = tmp_path / "calls.jsonl"
    with src.open("w") as f:
        write_jsonl(CALLS, f)
    # decided by the stack's own rules (tests/e2e/rules.yaml), so the two columns can agree
    assert cli.main(["replay", str(src), "--config", str(stack.config_path), "--target", stack.anthropic_url,
                     "--json"]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [(r["path"], r["served_path"], r["status"]) for r in rows] == [
        ("skipped", "skipped", 200), ("cascade", "accepted", 200), ("skipped", "skipped", 200)]
    assert all(r["latency_ms"] > 0 for r in rows)
    assert cli.main(["replay", str(src), "--target", stack.anthropic_url]) == 0
    text = capsys.readouterr().out
    assert "served path  calls  p50 ms  p95 ms  errors" in text


def test_sample_transcripts_through_the_stack(stack, capsys, sample_transcripts):
    # Recorded thinking carries Anthropic's signatures, which the simulated providers refuse.
    assert cli.main(["replay", "--from-claude-code", str(sample_transcripts), "--target", stack.anthropic_url,
                     "--drop-thinking", "--json"]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(rows) == 17 and all(r["status"] == 200 for r in rows), [r for r in rows if r["status"] != 200]
