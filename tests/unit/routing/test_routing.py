"""Features of hand-built requests, and the ordered rules that turn them into a route."""
from __future__ import annotations

import json

import pytest
import yaml

from cascade_extproc import config
from cascade_extproc.config import ConfigError
from cascade_extproc.routing.features import Context, compile_keywords, extract
from cascade_extproc.routing.rules import RuleSet
from cascade_extproc.types import Api, Decision, Request, Route


def a_req(messages, **body) -> Request:
    return Request(Api.ANTHROPIC, {"model": "claude-sonnet-4-5", "max_tokens": 1024, "messages": messages, **body}, {})


def o_req(messages, **body) -> Request:
    return Request(Api.OPENAI, {"model": "gpt-4.1", "messages": messages, **body}, {})


def feats(req: Request) -> dict:
    return extract(req, len(json.dumps(req.body)))


DEFAULT_RULES = RuleSet.from_config(config.load().router.rules)


DEFAULT_CTX = Context(keywords=compile_keywords(config.load().router.keywords))


def decide_default(req: Request) -> Decision:
    return DEFAULT_RULES.decide(extract(req, len(json.dumps(req.body)), DEFAULT_CTX))


LONG_TASK = ("Please refactor the payment service so that retries use exponential backoff, "
             "add structured logging around every external call, and explain the trade-offs "
             "of idempotency keys versus at-least-once delivery for our webhook consumers.")
TOOL_USE = {"type": "tool_use", "id": "toolu_1", "name": "read_file", "input": {"path": "a.py"}}
BASH = {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "pytest -q"}}
OK = [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "ok"}]
PLAN = "<system-reminder>Plan mode is active. You MUST NOT make any edits.</system-reminder>"


# --- features: Anthropic -------------------------------------------------------------------

def test_anthropic_user_text_string():
    f = feats(a_req([{"role": "user", "content": "hello there"}]))  # 11 chars
    assert f["api"] == "anthropic"
    assert f["model"] == "claude-sonnet-4-5"
    assert f["last_turn"] == "user_text"
    assert f["last_turn_tokens"] == 3  # ceil(11 / 4)
    assert f["messages"] == 1
    assert f["stream"] is False
    assert f["tools"] == 0
    assert f["tool_choice"] == "auto"
    assert f["thinking"] is False
    assert f["has_code"] is False
    assert f["max_tokens"] == 1024


def test_anthropic_user_text_blocks():
    f = feats(a_req([{"role": "user", "content": [
        {"type": "text", "text": "abcd"}, {"type": "image", "source": {}}, {"type": "text", "text": "efgh1"}]}]))
    assert f["last_turn"] == "user_text"
    assert f["last_turn_tokens"] == 3  # 9 chars of text, the image counts nothing


def test_anthropic_tool_result_and_error():
    ok = {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "x" * 40},
        {"type": "tool_result", "tool_use_id": "toolu_2", "content": [{"type": "text", "text": "y" * 40}]}]}
    history = [{"role": "user", "content": "go"}, {"role": "assistant", "content": [TOOL_USE]}]
    f = feats(a_req(history + [ok]))
    assert f["last_turn"] == "tool_result"
    assert f["last_turn_tokens"] == 20  # 80 chars across both results
    assert f["messages"] == 3
    bad = {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "fine"},
        {"type": "tool_result", "tool_use_id": "toolu_2", "content": "Traceback", "is_error": True}]}
    assert feats(a_req(history + [bad]))["last_turn"] == "tool_error"


@pytest.mark.parametrize("last, kind", [
    ({"role": "assistant", "content": "Sure, here"}, "assistant"),
    ({"role": "assistant", "content": [TOOL_USE]}, "assistant"),
    ({"role": "user", "content": [{"type": "image", "source": {}}]}, "user_text"),  # an image is a user turn
    ({"role": "user", "content": None}, "other"),
    ({"role": "system", "content": "x"}, "other"),
])
def test_anthropic_other_last_turns(last, kind):
    assert feats(a_req([{"role": "user", "content": "hi"}, last]))["last_turn"] == kind


def test_anthropic_empty_or_malformed_messages():
    assert feats(a_req([]))["last_turn"] == "other"
    assert feats(a_req(["not a dict"]))["last_turn"] == "other"


@pytest.mark.parametrize("choice, kind", [
    (None, "auto"), ({"type": "auto"}, "auto"), ({"type": "any"}, "any"),
    ({"type": "tool", "name": "read_file"}, "tool"), ({"type": "none"}, "none"), ({}, "unknown"), (3, "unknown"),
])
def test_anthropic_tool_choice(choice, kind):
    body = {} if choice is None else {"tool_choice": choice}
    assert feats(a_req([{"role": "user", "content": "hi"}], **body))["tool_choice"] == kind


def test_anthropic_tools_thinking_stream():
    tools = [{"name": f"t{i}", "input_schema": {"type": "object"}} for i in range(3)]
    f = feats(a_req([{"role": "user", "content": "hi"}], tools=tools, stream=True,
                    thinking={"type": "enabled", "budget_tokens": 2048}))
    assert f["tools"] == 3
    assert f["thinking"] is True
    assert f["stream"] is True
    assert feats(a_req([{"role": "user", "content": "hi"}], thinking={"type": "disabled"}))["thinking"] is False
    assert feats(a_req([{"role": "user", "content": "hi"}], stream="yes"))["stream"] is False


@pytest.mark.parametrize("text, code", [
    ("what does this do?\n```py\nx = 1\n```", True),
    ("fix it:\ndef f(x):\n    return x", True),
    ("   import os", True),
    ("SELECT * FROM t", True),
    ("#include <stdio.h>", True),
    ("I will define a class of problems", False),
    ("nothing to see", False),
])
def test_has_code(text, code):
    assert feats(a_req([{"role": "user", "content": text}]))["has_code"] is code


def test_context_tokens_from_body_bytes():
    req = a_req([{"role": "user", "content": "hi"}])
    assert extract(req, 4001)["context_tokens"] == 1001
    assert extract(req, 0)["context_tokens"] == 0


# --- features: OpenAI ----------------------------------------------------------------------

def test_openai_user_text_and_parts():
    f = feats(o_req([{"role": "system", "content": "be nice"}, {"role": "user", "content": "hello there"}],
                    max_completion_tokens=500, max_tokens=9))
    assert (f["api"], f["last_turn"], f["last_turn_tokens"], f["messages"]) == ("openai", "user_text", 3, 2)
    assert f["max_tokens"] == 500  # max_completion_tokens wins over the legacy max_tokens
    assert feats(o_req([{"role": "user", "content": "x"}], max_tokens=9))["max_tokens"] == 9
    assert feats(o_req([{"role": "user", "content": "x"}]))["max_tokens"] == 0
    parts = o_req([{"role": "user", "content": [{"type": "text", "text": "a" * 10},
                                                {"type": "image_url", "image_url": {"url": "data:"}}]}])
    assert feats(parts)["last_turn_tokens"] == 3


@pytest.mark.parametrize("last, kind", [
    ({"role": "tool", "tool_call_id": "c1", "content": "42"}, "tool_result"),
    ({"role": "assistant", "content": None, "tool_calls": []}, "assistant"),
    ({"role": "developer", "content": "x"}, "other"),
    ({"role": "system", "content": "x"}, "other"),
])
def test_openai_last_turns(last, kind):
    assert feats(o_req([{"role": "user", "content": "hi"}, last]))["last_turn"] == kind


@pytest.mark.parametrize("choice, kind", [
    (None, "auto"), ("auto", "auto"), ("none", "none"), ("required", "required"),
    ({"type": "function", "function": {"name": "f"}}, "function"),
])
def test_openai_tool_choice(choice, kind):
    body = {} if choice is None else {"tool_choice": choice}
    assert feats(o_req([{"role": "user", "content": "hi"}], **body))["tool_choice"] == kind


def test_openai_tools_and_thinking():
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}] * 2
    f = feats(o_req([{"role": "user", "content": "hi"}], tools=tools, reasoning_effort="high"))
    assert f["tools"] == 2 and f["thinking"] is True
    assert feats(o_req([{"role": "user", "content": "hi"}]))["thinking"] is False


# --- default rules -------------------------------------------------------------------------

@pytest.mark.parametrize("req, route, rule", [
    (a_req([{"role": "user", "content": "hi"}], model="claude-haiku-4-5"), Route.DIRECT, "cheap-model-requested"),
    (o_req([{"role": "user", "content": LONG_TASK}], model="gpt-4.1-mini"), Route.DIRECT, "cheap-model-requested"),
    (a_req([{"role": "user", "content": LONG_TASK}], tool_choice={"type": "any"}), Route.DIRECT, "forced-tool-choice"),
    (o_req([{"role": "user", "content": LONG_TASK}], tool_choice="required"), Route.DIRECT, "forced-tool-choice"),
    (a_req([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Sure"}]),
     Route.DIRECT, "unknown-last-turn"),
    # after a command that succeeded: skipped (the next step is rarely an edit)
    (a_req([{"role": "user", "content": "go"}, {"role": "assistant", "content": [BASH]},
            {"role": "user", "content": OK}]), Route.SKIPPED, "after-shell-command"),
    (o_req([{"role": "user", "content": "go"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": "shell", "arguments": '{"command": "ls"}'}}]},
            {"role": "tool", "tool_call_id": "c", "content": "ok"}]), Route.SKIPPED, "after-shell-command"),
    # any other step of a tool loop is guarded: after a read, a huge command output, a failure
    (a_req([{"role": "user", "content": "go"}, {"role": "assistant", "content": [TOOL_USE]},
            {"role": "user", "content": OK}]), Route.GUARDED, "tool-loop"),
    (o_req([{"role": "user", "content": "go"}, {"role": "tool", "tool_call_id": "c", "content": "ok"}]),
     Route.GUARDED, "tool-loop"),  # no assistant turn before it: not known to follow a command
    (a_req([{"role": "user", "content": "go"}, {"role": "assistant", "content": [BASH]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "x" * 9000}]}]),
     Route.GUARDED, "tool-loop"),
    (a_req([{"role": "user", "content": "go"}, {"role": "assistant", "content": [BASH]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "boom",
                                          "is_error": True}]}]), Route.GUARDED, "tool-loop"),
    # what the user wrote: guarded, unless long, a planning question, or in plan mode
    (a_req([{"role": "user", "content": "thanks!"}]), Route.GUARDED, "user-message"),
    (a_req([{"role": "user", "content": "```x```"}]), Route.GUARDED, "user-message"),
    (a_req([{"role": "user", "content": "fix the failing test in a.py"}]), Route.GUARDED, "user-message"),
    (a_req([{"role": "user", "content": LONG_TASK}]), Route.CASCADE, "complex-turn"),  # refactor, trade-offs
    (a_req([{"role": "user", "content": "word " * 1000}]), Route.CASCADE, "complex-turn"),  # a long paste
    (a_req([{"role": "user", "content": [{"type": "text", "text": PLAN}, {"type": "text", "text": "add a cache"}]}]),
     Route.CASCADE, "complex-turn"),
])
def test_default_rules(req, route, rule):
    d = decide_default(req)
    assert (d.route, d.rule) == (route, rule)


def test_decision_reports_only_the_features_its_rule_used():
    d = decide_default(a_req([{"role": "user", "content": "thanks!"}]))
    assert d.features == {"last_turn": "user_text", "last_turn_tokens": 2, "plan_mode": False, "user_intent": []}


def test_first_match_wins():
    rs = RuleSet.from_config([
        {"name": "first", "route": "skipped", "when": {"api": "anthropic"}},
        {"name": "second", "route": "cascade", "when": {"api": "anthropic"}},
        {"name": "catch-all", "route": "direct"},
    ])
    d = rs.decide(feats(a_req([{"role": "user", "content": "hi"}])))
    assert (d.route, d.rule) == (Route.SKIPPED, "first")
    d = rs.decide(feats(o_req([{"role": "user", "content": "hi"}])))
    assert (d.route, d.rule) == (Route.DIRECT, "catch-all")


def test_changing_a_rule_in_a_config_file_changes_the_decision(tmp_path):
    req = a_req([{"role": "user", "content": "thanks!"}])
    before = decide_default(req)
    assert (before.route, before.rule) == (Route.GUARDED, "user-message")

    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"router": {"rules": [
        {"name": "everything-small", "when": {"last_turn_tokens": {"lt": 1000}}, "route": "cascade"},
        {"name": "rest", "route": "direct"},
    ]}}))
    rules = RuleSet.from_config(config.load(path).router.rules)
    after = rules.decide(feats(req))
    assert (after.route, after.rule) == (Route.CASCADE, "everything-small")
    assert after.features == {"last_turn_tokens": 2}


# --- conditions ----------------------------------------------------------------------------

def one_rule(when) -> RuleSet:
    return RuleSet.from_config([{"name": "r", "route": "cascade", "when": when}])


def hits(when, **features) -> bool:
    return one_rule(when).decide(features).rule == "r"


@pytest.mark.parametrize("op, arg, value, expected", [
    ("eq", 5, 5, True), ("eq", 5, 6, False),
    ("ne", 5, 6, True), ("ne", 5, 5, False),
    ("lt", 5, 4, True), ("lt", 5, 5, False),
    ("le", 5, 5, True), ("le", 5, 6, False),
    ("gt", 5, 6, True), ("gt", 5, 5, False),
    ("ge", 5, 5, True), ("ge", 5, 4, False),
    ("in", [1, 2], 2, True), ("in", [1, 2], 3, False),
    ("not_in", [1, 2], 3, True), ("not_in", [1, 2], 2, False),
])
def test_operators(op, arg, value, expected):
    assert hits({"tools": {op: arg}}, tools=value) is expected


def test_matches_is_a_regex_search():
    assert hits({"model": {"matches": "(?i)haiku"}}, model="claude-HAIKU-4-5")
    assert not hits({"model": {"matches": "^haiku"}}, model="claude-haiku")


def test_shorthands():
    assert hits({"last_turn": ["user_text", "tool_result"]}, last_turn="tool_result")  # list → in
    assert not hits({"last_turn": ["user_text", "tool_result"]}, last_turn="assistant")
    assert hits({"last_turn": "assistant"}, last_turn="assistant")  # scalar → eq
    assert not hits({"last_turn": "assistant"}, last_turn="user_text")
    assert hits({"has_code": False}, has_code=False)
    assert not hits({"has_code": False}, has_code=True)


def test_all_conditions_of_a_rule_must_hold():
    when = {"tools": {"ge": 1, "lt": 3}, "last_turn": "user_text"}
    assert hits(when, tools=2, last_turn="user_text")
    assert not hits(when, tools=3, last_turn="user_text")
    assert not hits(when, tools=2, last_turn="assistant")


def test_in_and_not_in_on_the_same_feature():
    when = {"last_turn": {"in": ["user_text", "tool_result"], "not_in": ["tool_result"]}}
    assert hits(when, last_turn="user_text")
    assert not hits(when, last_turn="tool_result")
    assert not hits(when, last_turn="assistant")


def test_condition_of_the_wrong_type_is_rejected_at_load():
    # A string threshold on a number feature would silently never match: name the key instead.
    for when, key in [({"model": {"lt": 5}}, "router.rules[0].when.model.lt"),
                      ({"last_turn_tokens": {"gt": "10"}}, "router.rules[0].when.last_turn_tokens.gt"),
                      ({"stream": {"in": [True, "yes"]}}, "router.rules[0].when.stream.in[1]"),
                      ({"model": {"in": [["x"]]}}, "router.rules[0].when.model.in[0]")]:
        with pytest.raises(ConfigError) as err:
            RuleSet.from_config([{"name": "bad", "route": "cascade", "when": when}])
        assert err.value.key == key


def test_missing_feature_value_is_a_non_match_not_a_crash():
    rs = RuleSet.from_config([{"name": "big", "route": "cascade", "when": {"max_tokens": {"gt": 3}}},
                              {"name": "next", "route": "skipped"}])
    assert rs.decide({"max_tokens": None}).rule == "next"


def test_no_rule_matched_is_direct():
    d = one_rule({"api": "openai"}).decide(feats(a_req([{"role": "user", "content": "hi"}])))
    assert (d.route, d.rule, d.features) == (Route.DIRECT, "no-rule-matched", {})  # all_features: every one
    assert RuleSet.from_config([]).decide({"api": "anthropic"}).rule == "no-rule-matched"


def test_rule_without_when_always_matches():
    d = RuleSet.from_config([{"name": "all", "route": "skipped"}]).decide({})
    assert (d.route, d.rule, d.features) == (Route.SKIPPED, "all", {})


def test_a_rule_may_route_guarded():
    rs = RuleSet.from_config([{"name": "guard-edits", "route": "guarded", "when": {"api": "anthropic"}}])
    assert rs.decide({"api": "anthropic"}).route is Route.GUARDED
    with pytest.raises(ConfigError):
        RuleSet.from_config([{"name": "bad", "route": "guard"}])
