"""The conversation features: what the previous steps did and what the user last asked, on
hand-built Anthropic and OpenAI conversations."""
from __future__ import annotations

import json

from cascade_extproc.routing.features import MAX_STEPS, Context, compile_keywords, extract
from cascade_extproc.types import Api, Request

CTX = Context(keywords=compile_keywords({"planning": r"\bplan\b", "debugging": r"\bfix\b"}))


def a_feats(messages) -> dict:
    body = {"model": "claude-sonnet-4-5", "max_tokens": 64, "messages": messages}
    return extract(Request(Api.ANTHROPIC, body, {}), len(json.dumps(body)), CTX)


def o_feats(messages) -> dict:
    body = {"model": "gpt-4.1", "messages": messages}
    return extract(Request(Api.OPENAI, body, {}), len(json.dumps(body)), CTX)


def call(name, n=1, **inp) -> dict:
    return {"type": "tool_use", "id": f"t{n}", "name": name, "input": inp}


def result(n=1, error=False, text="ok") -> dict:
    return {"type": "tool_result", "tool_use_id": f"t{n}", "content": text, **({"is_error": True} if error else {})}


def step(*calls) -> list:
    """An assistant turn calling `calls`, and the user turn answering them."""
    return [{"role": "assistant", "content": list(calls)},
            {"role": "user", "content": [result(c["id"][1:]) for c in calls]}]


def reminder(text) -> dict:
    return {"type": "text", "text": f"<system-reminder>{text}</system-reminder>"}


def test_no_assistant_turn_yet():
    f = a_feats([{"role": "user", "content": "please fix it"}])
    assert (f["prev_action"], f["edit_streak"], f["steps_since_user"], f["tool_error"]) == ("none", 0, 0, False)
    assert f["user_intent"] == ["debugging"] and f["plan_mode"] is False


def test_prev_action_is_the_last_assistant_turn_and_its_riskiest_call():
    msgs = [{"role": "user", "content": "go"}, *step(call("Edit", 1, file_path="a.py")),
            *step(call("Read", 2, file_path="a.py"), call("Bash", 3, command="ls"))]
    assert a_feats(msgs)["prev_action"] == "shell"  # a command outranks a read; the older edit is not last
    assert a_feats(msgs[:3])["prev_action"] == "file_edit"
    text = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "and?"}]
    assert a_feats(text)["prev_action"] == "text"


def test_prev_action_openai_tool_calls():
    msgs = [{"role": "user", "content": "go"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "read_file", "arguments": '{"path": "a"}'}},
                {"id": "c2", "type": "function", "function": {"name": "apply_patch", "arguments": "not json"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "x"}, {"role": "tool", "tool_call_id": "c2", "content": "y"}]
    f = o_feats(msgs)
    assert f["prev_action"] == "file_edit" and f["steps_since_user"] == 1 and f["edit_streak"] == 1
    assert o_feats(msgs[:1] + [{"role": "assistant", "content": "sure"}, {"role": "user", "content": "ok"}])[
        "prev_action"] == "text"


def test_tool_error():
    msgs = [{"role": "user", "content": "go"}, {"role": "assistant", "content": [call("Bash", command="x")]},
            {"role": "user", "content": [result(error=True)]}]
    assert a_feats(msgs)["tool_error"] is True
    msgs[-1] = {"role": "user", "content": [result()]}
    assert a_feats(msgs)["tool_error"] is False


def test_edit_streak_counts_edits_in_a_row_back_from_the_last_step():
    edit = lambda n: call("Edit", n, file_path="a.py")  # noqa: E731
    msgs = [{"role": "user", "content": "go"}, *step(edit(1)), *step(call("Read", 2, file_path="a")),
            *step(edit(3)), *step(call("Write", 4, file_path="b")), *step(edit(5))]
    assert a_feats(msgs)["edit_streak"] == 3  # Edit, Write, Edit; the read before breaks it
    msgs += step(call("Grep", 6, pattern="x"))
    assert a_feats(msgs)["edit_streak"] == 0


def test_steps_since_the_user_wrote_ignore_tool_results_and_reminders():
    msgs = [{"role": "user", "content": "first"}, {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "now please fix a.py"},
            *step(call("Read", 1, file_path="a.py")), *step(call("Bash", 2, command="ls"))]
    # a reminder riding on a tool result's turn is not the user writing
    msgs[-1]["content"].append(reminder("The user opened a.py"))
    f = a_feats(msgs)
    assert f["steps_since_user"] == 2
    assert f["user_intent"] == ["debugging"]  # from "now please fix a.py", the last thing the user wrote
    msgs.append({"role": "assistant", "content": "done"})
    msgs.append({"role": "user", "content": [reminder("plan something")]})  # only a reminder: not the user
    f = a_feats(msgs)
    assert f["steps_since_user"] == 3 and f["user_intent"] == ["debugging"]


def test_steps_since_user_stops_at_max_steps():
    msgs = [{"role": "user", "content": "plan it"}]
    for n in range(MAX_STEPS + 10):
        msgs += step(call("Read", n, file_path="a"))
    f = a_feats(msgs)
    assert f["steps_since_user"] == MAX_STEPS and f["user_intent"] == []  # too far back to look


def test_plan_mode_from_claude_codes_reminder():
    on = {"role": "user", "content": [reminder("Plan mode is active. You MUST NOT make any edits."),
                                      {"type": "text", "text": "add a cache"}]}
    assert a_feats([on])["plan_mode"] is True
    # still on during the loop that follows
    assert a_feats([on, *step(call("Read", 1, file_path="a"))])["plan_mode"] is True
    # ended: Claude Code says so in a later turn
    off = {"role": "user", "content": [reminder("## Exited Plan Mode\nYou can now make edits."),
                                       {"type": "text", "text": "go"}]}
    assert a_feats([on, {"role": "assistant", "content": "Plan: ..."}, off])["plan_mode"] is False
    # the user writing the words is not plan mode; nor is a reminder about something else
    assert a_feats([{"role": "user", "content": "is plan mode active?"}])["plan_mode"] is False
    assert a_feats([{"role": "user", "content": [reminder("Todo list is empty"),
                                                 {"type": "text", "text": "hi"}]}])["plan_mode"] is False


def test_plan_mode_only_since_the_last_user_message():
    on = {"role": "user", "content": [reminder("Plan mode is active."), {"type": "text", "text": "plan it"}]}
    later = {"role": "user", "content": "now do something else"}
    assert a_feats([on, {"role": "assistant", "content": "ok"}, later])["plan_mode"] is False
