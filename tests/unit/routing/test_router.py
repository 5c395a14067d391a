"""The router with its context: keyword classes, list features, the cost model in the rules."""
import json

import pytest
import yaml

from cascade_extproc import app, codecs, config
from cascade_extproc.config import ConfigError
from cascade_extproc.routing.features import Context, extract
from cascade_extproc.routing.router import Router
from cascade_extproc.routing.rules import RuleSet
from cascade_extproc.types import Api, Route

ROUTER = Router.from_config(config.load())


def req(messages, api=Api.ANTHROPIC, headers=None, **body):
    raw = json.dumps({"model": "claude-opus-4-6", "max_tokens": 1000, "messages": messages, **body}).encode()
    return codecs.parse_request(api, raw, headers or {}), len(raw)


def features(messages, **kw):
    r, n = req(messages, **kw)
    return extract(r, n, ROUTER.ctx)


TOOL_LOOP = [{"role": "user", "content": "list the files"},
             {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "Bash", "input": {}},
                                               {"type": "tool_use", "id": "t2", "name": "Read", "input": {}}]},
             {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "a.py"},
                                          {"type": "tool_result", "tool_use_id": "t2", "content": "x"}]}]


def test_tool_loop_features():
    f = features(TOOL_LOOP)
    assert f["in_tool_loop"] is True and f["recent_tools"] == ["Bash", "Read"]
    assert f["user_turns"] == 2 and f["messages"] == 3
    assert features(TOOL_LOOP[:1])["in_tool_loop"] is False


def test_keywords_images_client_strict_tools():
    f = features([{"role": "user", "content": "why does the build fail?"}],
                 headers={"user-agent": "claude-cli/2.0.1 (external, cli)"})
    assert f["keywords"] == ["planning", "debugging"] and f["client"] == "claude-cli"
    img = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA=="}}
    assert features([{"role": "user", "content": [img, {"type": "text", "text": "what is this"}]}])["images"] == 1
    tool = {"name": "t", "input_schema": {"type": "object"}, "strict": True}
    assert features([{"role": "user", "content": "hi"}], tools=[tool])["strict_tools"] is True
    openai_tool = {"type": "function", "function": {"name": "t", "parameters": {}, "strict": True}}
    assert features([{"role": "user", "content": "hi"}], api=Api.OPENAI, tools=[openai_tool])["strict_tools"] is True


def test_cascade_saving_feature_uses_the_price_table():
    assert features([{"role": "user", "content": "hi"}])["cascade_saving"] > 0  # tiny context, Opus
    unknown = features([{"role": "user", "content": "hi"}], model="some-unknown-model")
    assert unknown["cascade_saving"] is None


COMPLEX = "Now refactor the parser and explain the trade-offs in detail."


def test_priced_feature_needs_both_the_strong_and_the_draft_price(tmp_path):
    hi = [{"role": "user", "content": "hi"}]
    assert features(hi)["priced"] is True  # Opus, and deepseek-chat as the draft
    assert features(hi, api=Api.OPENAI, model="gpt-6.2-sol")["priced"] is True
    assert features(hi, model="some-unknown-model")["priced"] is False
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"providers": {"anthropic": {"draft": {"model": "unpriced-draft"}}}}))
    r, n = req(hi)
    assert extract(r, n, Router.from_config(config.load(path)).ctx)["priced"] is False
    assert extract(r, n, Context())["priced"] is None  # no price table: unset, matches nothing


def test_unpriced_strong_model_is_never_cascaded():
    # OpenAI traffic used to be unpriced, so every complex turn cascaded, whatever its context.
    for api, model in ((Api.OPENAI, "gpt-unknown-9"), (Api.ANTHROPIC, "some-unknown-model")):
        r, n = req([{"role": "user", "content": COMPLEX}], api=api, model=model)
        d = ROUTER.decide(r, n)
        assert (d.route, d.rule, d.features) == (Route.DIRECT, "unpriced-model", {"priced": False})
    r, n = req([{"role": "user", "content": COMPLEX}], api=Api.OPENAI, model="gpt-6.2-sol")
    assert (ROUTER.decide(r, n).route, ROUTER.decide(r, n).rule) == (Route.CASCADE, "complex-turn")
    # The skip rules come first: a short "thanks" is guarded whatever the model's price.
    r, n = req([{"role": "user", "content": "thanks"}], api=Api.OPENAI, model="gpt-unknown-9")
    assert ROUTER.decide(r, n).rule == "user-message"
    rules = [rule.name for rule in ROUTER.rules.rules]
    assert rules.index("unpriced-model") < rules.index("complex-turn")


def test_a_200k_token_openai_prompt_is_not_cascaded():
    # 200k tokens of context: the draft's input and the verify call's outweigh the output saved.
    # Where the strong model's cached reads are cheap, the draft's cold 200k (all misses) costs
    # more than the strong model's read and answer: not even a skip would pay (draft-cannot-save).
    history = [{"role": "user", "content": "x" * 800_000}, {"role": "assistant", "content": "ok"},
               {"role": "user", "content": COMPLEX}]
    for model in ("gpt-6.2-sol", "gpt-5.5", "gpt-6-astra"):
        r, n = req(history, api=Api.OPENAI, model=model)
        d = ROUTER.decide(r, n)
        # a draft that has cached nothing of it would cost more than the strong model's cached read:
        # no skip either (draft-cannot-save, before the skip rules); else the cascade's own rule
        assert d.route is Route.DIRECT and d.rule in ("draft-cannot-save", "cascade-cannot-save"), model
        assert d.all_features["cascade_saving"] < 0, model


def test_cheap_openai_models_go_direct():
    for model in ("gpt-5.4-mini", "gpt-5.4-nano", "gpt-5.6-luna", "gpt-6-luna"):
        r, n = req([{"role": "user", "content": COMPLEX}], api=Api.OPENAI, model=model)
        assert ROUTER.decide(r, n).rule == "cheap-model-requested", model


def test_long_context_complex_turn_goes_direct_by_the_cost_rule():
    history = [{"role": "user", "content": "x" * 400_000}, {"role": "assistant", "content": "ok"},
               {"role": "user", "content": "Now refactor the parser and explain the trade-offs in detail. " * 3}]
    r, n = req(history)
    d = ROUTER.decide(r, n)
    assert (d.route, d.rule) == (Route.DIRECT, "cascade-cannot-save")
    assert d.features["cascade_saving"] < 0
    r, n = req(history[-1:])
    assert ROUTER.decide(r, n).route is Route.CASCADE  # the same turn without the long context


def test_default_paths():
    cases = {
        "thanks": (Route.GUARDED, "user-message"),
        "why is this slow?": (Route.CASCADE, "complex-turn"),  # short, but asks for reasoning
        "fix the failing test": (Route.GUARDED, "user-message"),  # an edit it leads to is verified
    }
    for text, expected in cases.items():
        r, n = req([{"role": "user", "content": text}])
        d = ROUTER.decide(r, n)
        assert (d.route, d.rule) == expected, text
    r, n = req(TOOL_LOOP)
    assert ROUTER.decide(r, n).rule == "after-shell-command"  # Bash outranks Read: the step ran a command
    error_loop = TOOL_LOOP[:2] + [{"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "t1", "content": "Traceback...", "is_error": True},
        {"type": "tool_result", "tool_use_id": "t2", "content": "x"}]}]
    r, n = req(error_loop)
    assert ROUTER.decide(r, n).route is Route.GUARDED  # a failed tool: the draft's answer is checked


def test_list_feature_operators():
    def decide(when, f):
        return RuleSet.from_config([{"name": "r", "route": "skipped", "when": when}]).decide(f).rule
    f = {"keywords": ["planning"], "recent_tools": ["Bash"]}
    assert decide({"keywords": "planning"}, f) == "r"  # scalar shorthand: contains
    assert decide({"keywords": ["debugging", "planning"]}, f) == "r"  # list shorthand: any_of
    assert decide({"keywords": {"none_of": ["planning"]}}, f) == "no-rule-matched"
    assert decide({"recent_tools": {"contains": "Read"}}, f) == "no-rule-matched"
    for bad in ({"keywords": {"eq": "x"}}, {"keywords": {"any_of": "x"}}, {"tools": {"contains": "x"}}):
        with pytest.raises(ConfigError):
            RuleSet.from_config([{"name": "r", "route": "skipped", "when": bad}])


def test_keyword_classes_and_economics_from_config(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"router": {
        "keywords": {"urgent": "asap|urgent"},
        "rules": [{"name": "urgent", "route": "direct", "when": {"keywords": "urgent"}},
                  {"name": "rest", "route": "skipped"}]}}))
    router = Router.from_config(config.load(path))
    r, n = req([{"role": "user", "content": "URGENT: ship it"}])
    assert router.decide(r, n).rule == "urgent"
    path.write_text(yaml.safe_dump({"router": {"keywords": {"bad": "("}}}))
    with pytest.raises(ConfigError) as err:
        app.load_config(path)
    assert err.value.key == "router.keywords.bad"
    path.write_text(yaml.safe_dump({"router": {"economics": {"accept_rate": 2}}}))
    with pytest.raises(ConfigError) as err:
        config.load(path)
    assert err.value.key == "router.economics.accept_rate"


def test_features_without_context_still_work():
    r, n = req([{"role": "user", "content": "hi"}])
    f = extract(r, n, Context())
    assert f["keywords"] == [] and f["cascade_saving"] is None


def test_long_last_turn_is_classified_by_its_head_and_tail():
    filler = "lorem ipsum dolor sit amet " * 20_000  # ~540 KB
    f = features([{"role": "user", "content": "why does the build fail?\n" + filler}])
    assert f["keywords"] == ["planning", "debugging"]  # asked at the start
    f = features([{"role": "user", "content": filler + "\n```python\nprint(1)\n```"}])
    assert f["has_code"] is True  # code at the end
    f = features([{"role": "user", "content": filler + "why does it fail" + filler}])
    assert f["keywords"] == []  # the middle of a huge paste is not scanned


def test_a_skip_that_would_let_the_strong_cache_go_cold_goes_direct():
    # A command ran (the skip rule would take it), but the strong model last saw the conversation
    # 58 minutes ago with a 1-hour cache and turns come every 5 minutes: skipped, the next strong
    # call would write the whole prefix again. Going strong now reads it and keeps it warm.
    from cascade_extproc.metering.cache import Conversation
    loop = [{"role": "user", "content": "run the tests"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "Bash",
                                               "input": {"command": "pytest"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}]}]
    r, n = req(loop)

    def conv(seen_at):
        c = Conversation()
        c.strong.saw(seen_at, "claude-opus-4-6", 100_000, 3600.0, context=100_000)
        c.pace_s = 300.0
        return c
    fresh = ROUTER.decide(r, n, now=10_000.0, conversation=conv(10_000.0 - 600))
    assert (fresh.route, fresh.rule) == (Route.SKIPPED, "after-shell-command")
    late = ROUTER.decide(r, n, now=10_000.0, conversation=conv(10_000.0 - 3480))
    assert (late.route, late.rule) == (Route.DIRECT, "draft-cannot-save")
    assert late.features["skip_saving"] < 0
