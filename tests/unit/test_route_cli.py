"""`cascade-extproc route`: one JSON line per request with the router's decision."""
from __future__ import annotations

import io
import json
import sys

import pytest
import yaml

from cascade_extproc import cli

SIMPLE = {"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": [{"role": "user", "content": "thanks!"}]}
COMPLEX = {"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": [{"role": "user", "content": (
    "Design a migration plan for moving our monolith's billing module to a separate service, "
    "covering data ownership, dual writes, backfills and the rollback story.")}]}
LINES = [json.dumps(SIMPLE), "", json.dumps(COMPLEX), "{this is not json"]


def route(capsys, *argv) -> list[dict]:
    assert cli.main(["route", *argv]) == 0
    out = capsys.readouterr().out
    return [json.loads(line) for line in out.splitlines()]


@pytest.fixture
def requests_file(tmp_path):
    p = tmp_path / "requests.jsonl"
    p.write_text("\n".join(LINES) + "\n")
    return p


def test_route_file(capsys, requests_file):
    simple, complex_, bad = route(capsys, str(requests_file))
    assert simple == {"line": 1, "path": "guarded", "rule": "user-message",
                      "features": {"last_turn": "user_text", "last_turn_tokens": 2, "plan_mode": False,
                                   "user_intent": []}}
    assert (complex_["line"], complex_["path"], complex_["rule"], complex_["features"]) == (
        3, "cascade", "complex-turn", {})
    assert (bad["line"], bad["path"], bad["rule"], bad["features"]) == (4, "direct", "unparsed-body", {})
    assert "not valid JSON" in bad["error"]


def test_route_stdin(capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(LINES)))
    assert [(r["line"], r["path"]) for r in route(capsys, "-")] == [(1, "guarded"), (3, "cascade"), (4, "direct")]


def test_route_openai_api(capsys, tmp_path):
    p = tmp_path / "o.jsonl"
    p.write_text(json.dumps({"model": "gpt-4.1", "messages": [
        {"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "c", "content": "ok"}]}) + "\n")
    (out,) = route(capsys, str(p), "--api", "openai")
    assert (out["path"], out["rule"]) == ("guarded", "tool-loop")  # no call before it: not known to follow a command
    assert out["features"]["last_turn"] == "tool_result"


def test_route_config_changes_output(capsys, tmp_path, requests_file):
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({"router": {"rules": [
        {"name": "small", "when": {"last_turn_tokens": {"lt": 10}}, "route": "direct"},
        {"name": "big", "when": {"messages": {"ge": 1}}, "route": "skipped"},
    ]}}))
    simple, complex_, bad = route(capsys, str(requests_file), "--config", str(cfg))
    assert (simple["path"], simple["rule"], simple["features"]) == ("direct", "small", {"last_turn_tokens": 2})
    assert (complex_["path"], complex_["rule"], complex_["features"]) == ("skipped", "big", {"messages": 1})
    assert bad["rule"] == "unparsed-body"


def test_route_bad_config_exits_2_and_names_key(capsys, tmp_path, requests_file):
    cfg = tmp_path / "config.yaml"
    cfg.write_text("router:\n  rules:\n    - name: x\n      route: cascade\n      when: {nope: 1}\n")
    with pytest.raises(SystemExit) as info:
        cli.main(["route", str(requests_file), "--config", str(cfg)])
    assert info.value.code == 2
    captured = capsys.readouterr()
    assert "router.rules[0].when.nope" in captured.err
    assert captured.out == ""


def test_missing_file_is_a_clear_error(tmp_path, capsys):
    assert cli.main(["route", str(tmp_path / "nope.jsonl")]) == 2
    assert "nope.jsonl" in capsys.readouterr().err


def test_route_reads_replay_written_calls(tmp_path, capsys):
    src = tmp_path / "calls.jsonl"
    src.write_text(json.dumps({"request_id": "req_9", "usage": None, "request": {
        "model": "claude-opus-4-6", "max_tokens": 10, "messages": [{"role": "user", "content": "thanks"}]}}) + "\n")
    assert cli.main(["route", str(src)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["request_id"], out["path"], out["rule"]) == ("req_9", "guarded", "user-message")
