"""provenance: each provider only ever sees thinking signatures it issued itself."""
from __future__ import annotations

import copy
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from cascade_extproc.codecs import provenance
from cascade_extproc.codecs.provenance import DRAFT_TAG
from cascade_extproc.types import Block, Response, StopReason

SETTINGS = settings(max_examples=200, deadline=None)
THINKING_ON = {"type": "enabled", "budget_tokens": 1024}
OFF = {"type": "disabled"}
PLACEHOLDER = {"type": "text", "text": "(reasoning omitted)"}


def draft_thinking(text="d") -> dict:
    return {"type": "thinking", "thinking": text, "signature": DRAFT_TAG + "dsig"}


def strong_thinking(text="s") -> dict:
    return {"type": "thinking", "thinking": text, "signature": "ssig"}


REDACTED = {"type": "redacted_thinking", "data": "opaque"}
TOOL_USE = {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}
TOOL_RESULT = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "ok"}]}


def body(*assistant_turns: list, thinking: bool = True) -> dict:
    messages: list = [{"role": "user", "content": "q"}]
    for content in assistant_turns:
        messages += [{"role": "assistant", "content": content}, TOOL_RESULT]
    out = {"model": "m", "max_tokens": 2048, "messages": messages}
    if thinking:
        out["thinking"] = THINKING_ON
    return out


def assistant_contents(b: dict) -> list:
    return [m["content"] for m in b["messages"] if m["role"] == "assistant"]


# ---- for_strong -----------------------------------------------------------------------------------

def test_for_strong_drops_draft_thinking_and_keeps_strong_thinking():
    b = body([draft_thinking(), {"type": "text", "text": "a"}],
             [strong_thinking(), REDACTED, TOOL_USE])
    snapshot = copy.deepcopy(b)
    out = provenance.for_strong(b)
    assert b == snapshot  # the client's body is not mutated
    assert assistant_contents(out) == [[{"type": "text", "text": "a"}], [strong_thinking(), REDACTED, TOOL_USE]]
    assert out["thinking"] == THINKING_ON  # the final assistant turn kept its thinking
    assert out["messages"][0] is b["messages"][0] and out["messages"][2] is b["messages"][2]
    assert {k: v for k, v in out.items() if k != "messages"} == {k: v for k, v in b.items() if k != "messages"}


def test_for_strong_returns_none_when_nothing_changes():
    assert provenance.for_strong(body([strong_thinking(), TOOL_USE], [REDACTED, TOOL_USE])) is None
    assert provenance.for_strong(body([{"type": "text", "text": "a"}], thinking=False)) is None
    assert provenance.for_strong({"messages": [{"role": "assistant", "content": "draft? no, a string"}]}) is None
    assert provenance.for_strong({"messages": []}) is None


def test_for_strong_turns_thinking_off_when_the_final_assistant_turn_loses_its_thinking():
    b = body([strong_thinking(), TOOL_USE], [draft_thinking(), TOOL_USE])
    out = provenance.for_strong(b)
    assert out["thinking"] == OFF
    assert b["thinking"] == THINKING_ON
    assert assistant_contents(out) == [[strong_thinking(), TOOL_USE], [TOOL_USE]]


def test_for_strong_keeps_thinking_when_only_an_earlier_turn_loses_it():
    out = provenance.for_strong(body([draft_thinking(), TOOL_USE], [strong_thinking(), TOOL_USE]))
    assert out["thinking"] == THINKING_ON
    assert assistant_contents(out) == [[TOOL_USE], [strong_thinking(), TOOL_USE]]


def test_for_strong_keeps_thinking_when_the_final_turn_still_has_some():
    out = provenance.for_strong(body([draft_thinking(), REDACTED, TOOL_USE]))
    assert out["thinking"] == THINKING_ON
    assert assistant_contents(out) == [[REDACTED, TOOL_USE]]


def test_for_strong_without_thinking_in_the_request():
    out = provenance.for_strong(body([draft_thinking(), TOOL_USE], thinking=False))
    assert "thinking" not in out
    assert assistant_contents(out) == [[TOOL_USE]]


def test_for_strong_keeps_thinking_when_the_final_turn_lost_it_but_calls_no_tool():
    """Only a tool_use turn (an active tool loop) must start with its thinking."""
    out = provenance.for_strong(body([strong_thinking(), TOOL_USE], [draft_thinking(), {"type": "text", "text": "a"}]))
    assert out["thinking"] == THINKING_ON
    assert assistant_contents(out)[-1] == [{"type": "text", "text": "a"}]


def test_for_strong_empty_assistant_turn_gets_a_placeholder():
    out = provenance.for_strong(body([draft_thinking()], [draft_thinking("x"), draft_thinking("y")]))
    assert assistant_contents(out) == [[PLACEHOLDER], [PLACEHOLDER]]
    assert out["thinking"] == THINKING_ON  # no tool_use in the final turn


def test_for_strong_ignores_what_it_does_not_understand():
    b = {"thinking": THINKING_ON, "messages": [
        "not a message", {"role": "assistant", "content": [draft_thinking(), "odd", 3, TOOL_USE]}]}
    out = provenance.for_strong(b)
    assert out["messages"] == ["not a message", {"role": "assistant", "content": ["odd", 3, TOOL_USE]}]


# ---- for_draft ------------------------------------------------------------------------------------

def test_for_draft_untags_its_own_and_drops_strong_thinking():
    b = body([strong_thinking(), REDACTED, TOOL_USE],
             [draft_thinking(), {"type": "text", "text": "a"}])
    snapshot = copy.deepcopy(b)
    out = provenance.for_draft(b)
    assert b == snapshot
    assert assistant_contents(out) == [
        [TOOL_USE], [{"type": "thinking", "thinking": "d", "signature": "dsig"}, {"type": "text", "text": "a"}]]
    assert out["thinking"] == THINKING_ON


def test_for_draft_turns_thinking_off_when_the_final_tool_turn_loses_its_thinking():
    b = body([draft_thinking(), TOOL_USE], [strong_thinking(), REDACTED, TOOL_USE])
    out = provenance.for_draft(b)
    assert assistant_contents(out) == [[{"type": "thinking", "thinking": "d", "signature": "dsig"}, TOOL_USE],
                                       [TOOL_USE]]
    assert out["thinking"] == OFF and b["thinking"] == THINKING_ON
    # The final tool turn still thinking (the draft's own): thinking stays on.
    out = provenance.for_draft(body([strong_thinking(), TOOL_USE], [draft_thinking(), TOOL_USE]))
    assert out["thinking"] == THINKING_ON


def test_for_draft_returns_none_when_nothing_changes():
    assert provenance.for_draft(body([{"type": "text", "text": "a"}, TOOL_USE])) is None
    assert provenance.for_draft({"messages": [{"role": "user", "content": [strong_thinking()]}]}) is None


def test_for_draft_empty_assistant_turn_gets_a_placeholder():
    out = provenance.for_draft(body([strong_thinking(), REDACTED]))
    assert assistant_contents(out) == [[PLACEHOLDER]]


def test_untag_only_removes_the_leading_tag():
    sig = DRAFT_TAG + "abc" + DRAFT_TAG
    out = provenance.for_draft(body([{"type": "thinking", "thinking": "t", "signature": sig}]))
    assert assistant_contents(out)[0][0]["signature"] == "abc" + DRAFT_TAG


# ---- what the client may be shown, and what the API wants ------------------------------------------

def test_strip_reasoning_keeps_everything_but_thinking():
    r = Response("id", "m", [Block("thinking", text="t", signature="sig"), Block("redacted_thinking", text="x"),
                             Block("text", text="a"), Block("tool_use", id="t", name="f")], StopReason.END_TURN)
    assert [b.type for b in provenance.strip_reasoning(copy.deepcopy(r)).blocks] == ["text", "tool_use"]


def test_final_tool_turn_lacks_thinking():
    lacks = provenance.final_tool_turn_lacks_thinking
    assert lacks(body([strong_thinking(), TOOL_USE], [TOOL_USE]))
    assert lacks(body([{"type": "text", "text": "let me look"}, TOOL_USE]))
    assert lacks({**body([TOOL_USE]), "thinking": {"type": "adaptive"}})
    assert not lacks(body([strong_thinking(), TOOL_USE]))  # it starts with its thinking
    assert not lacks(body([REDACTED, TOOL_USE]))
    assert not lacks(body([TOOL_USE], [{"type": "text", "text": "done"}]))  # no tool call: no tool loop
    assert not lacks(body([TOOL_USE], thinking=False))
    assert not lacks({**body([TOOL_USE]), "thinking": {"type": "disabled"}})
    assert not lacks({"thinking": THINKING_ON, "messages": "not a list"})


def test_might_need_changes():
    assert provenance.might_need_changes(json.dumps(body([strong_thinking()], thinking=False)).encode())
    assert not provenance.might_need_changes(json.dumps(body([TOOL_USE], thinking=False)).encode())
    # For the strong provider, only a draft's tagged signature can need changing.
    strong_only = json.dumps(body([strong_thinking()], thinking=False)).encode()
    assert not provenance.might_need_changes(strong_only, for_strong_provider=True)
    tagged = json.dumps(body([{**strong_thinking(), "signature": provenance.DRAFT_TAG + "s"}], thinking=False)).encode()
    assert provenance.might_need_changes(tagged, for_strong_provider=True)


# ---- property: random mixed histories ---------------------------------------------------------------

other_block = st.sampled_from([{"type": "text", "text": "a"}, TOOL_USE, {"type": "image", "source": {}}])
thinking_block = st.one_of(st.builds(draft_thinking, st.text(max_size=5)),
                           st.builds(strong_thinking, st.text(max_size=5)), st.just(REDACTED))
histories = st.builds(lambda turns, on: body(*turns, thinking=on),
                      st.lists(st.lists(st.one_of(other_block, thinking_block), max_size=4), max_size=4),
                      st.booleans())


def _thinking(blocks: list) -> list:
    return [b for b in blocks if b["type"] in ("thinking", "redacted_thinking")]


def _others(blocks: list) -> list:
    return [b for b in blocks if b["type"] not in ("thinking", "redacted_thinking")]


@SETTINGS
@given(histories)
def test_for_strong_property(b):
    snapshot = copy.deepcopy(b)
    out = provenance.for_strong(b)
    assert b == snapshot
    has_draft = any(provenance._draft_issued(x) for c in assistant_contents(b) for x in c)
    assert (out is None) == (not has_draft)
    if out is None:
        return
    for before, after in zip(assistant_contents(b), assistant_contents(out), strict=True):
        assert _thinking(after) == [x for x in _thinking(before) if not x.get("signature", "").startswith(DRAFT_TAG)]
        # A turn left with nothing gets a placeholder: the API refuses empty assistant turns.
        assert _others(after) == (_others(before) or ([PLACEHOLDER] if not _thinking(after) else []))
    assert out.get("thinking") == _expected_thinking(b, out)


def _expected_thinking(before: dict, after: dict):
    """Off exactly when thinking was on and the final assistant turn calls a tool without first
    thinking (the API's rule); else as the client sent it."""
    last = assistant_contents(after)[-1] if assistant_contents(after) else []
    lacks = TOOL_USE in last and not (last and last[0]["type"] in ("thinking", "redacted_thinking"))
    return OFF if "thinking" in before and lacks else before.get("thinking")


@SETTINGS
@given(histories)
def test_for_draft_property(b):
    out = provenance.for_draft(b)
    has_thinking = any(_thinking(c) for c in assistant_contents(b))
    assert (out is None) == (not has_thinking)
    if out is None:
        return
    for before, after in zip(assistant_contents(b), assistant_contents(out), strict=True):
        assert _thinking(after) == [{**x, "signature": x["signature"][len(DRAFT_TAG):]} for x in _thinking(before)
                                    if x["type"] == "thinking" and x["signature"].startswith(DRAFT_TAG)]
        assert _others(after) == (_others(before) or ([PLACEHOLDER] if not _thinking(after) else []))
    assert out.get("thinking") == _expected_thinking(b, out)
