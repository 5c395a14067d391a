"""The guarded skip: its decision (cascade/guard.py, pure) and its driver (cascade/run.guarded)
against in-memory providers: a safe draft is served without the strong model, a risky one goes to
it, a failed draft raises for the caller to fall back."""
from __future__ import annotations

import asyncio
import re

import pytest

from cascade_extproc import codecs
from cascade_extproc.actions import Action, Policy
from cascade_extproc.cascade import guard
from cascade_extproc.cascade.run import CascadeCall, CascadeError, guarded
from cascade_extproc.config import parse
from cascade_extproc.providers import ProviderStatus
from cascade_extproc.providers.mock import FakeProvider
from cascade_extproc.types import Api, Block, Path, Response, StopReason

POLICY = Policy()


def said(*blocks: Block, model: str = "draft") -> Response:
    stop = StopReason.TOOL_USE if any(b.type == "tool_use" for b in blocks) else StopReason.END_TURN
    return Response(id="id", model=model, blocks=list(blocks), stop_reason=stop)


def call(name: str, **inp) -> Block:
    return Block("tool_use", id=f"toolu_{name}", name=name, input=inp)


TEXT = Block("text", text="Looking at it.")
THINKING = Block("thinking", text="I will rm -rf it all", signature="sig")


@pytest.mark.parametrize("answer, step, reason, kind", [
    (said(TEXT), guard.SERVE, "", "text"),
    (said(TEXT, call("Read", file_path="/r/a.py")), guard.SERVE, "", "read_only"),
    (said(call("Grep", pattern="x"), call("Glob", pattern="*")), guard.SERVE, "", "read_only"),
    (said(call("Bash", command="pytest -q")), guard.SERVE, "", "shell"),
    (said(call("Edit", file_path="/r/a.py", old_string="a", new_string="b")), guard.VERIFY, "file_edit", "file_edit"),
    (said(call("Read", file_path="a"), call("Write", file_path="b", content="")), guard.VERIFY, "file_edit",
     "file_edit"),
    (said(call("Task", prompt="p", subagent_type="x")), guard.VERIFY, "subagent", "subagent"),
    (said(call("Bash", command="git push --force origin main")), guard.VERIFY, "destructive_shell", "shell"),
    (said(call("Bash", command="cd /r && rm -rf build")), guard.VERIFY, "destructive_shell", "shell"),
    (said(call("mcp__db__query", sql="select 1")), guard.SERVE, "", "other"),
])
def test_the_draft_is_judged_by_what_it_does(answer, step, reason, kind):
    j = guard.judge(answer, POLICY)
    assert (j.step, j.reason, j.action.kind) == (step, reason, kind)
    assert j.escalated is (step != guard.SERVE)
    assert guard.header(j) == ("served" if step == guard.SERVE else f"verify:{reason}")


def test_the_config_decides_what_is_risky_and_where_it_goes():
    text_risky = Policy.from_config(parse({"guard": {"text_is_risky": True}}).guard)
    assert guard.judge(said(TEXT), text_risky).reason == "text"
    shell_risky = Policy.from_config(parse({"guard": {"risky_actions": ["shell"], "destructive_shell": False}}).guard)
    assert guard.judge(said(call("Bash", command="ls")), shell_risky).reason == "shell"
    assert guard.judge(said(call("Edit", file_path="a")), shell_risky).step == guard.SERVE  # edits allowed now
    j = guard.judge(said(call("Write", file_path="a")), POLICY, on_risky="direct")
    assert (j.step, j.reason, guard.header(j)) == (guard.DIRECT, "file_edit", "direct:file_edit")
    assert guard.judge(said(TEXT), POLICY, on_risky="direct").step == guard.SERVE


def test_the_reason_names_the_risk():
    assert guard.reason(Action("shell", "Bash", "rm", True), POLICY) == "destructive_shell"
    assert guard.reason(Action("shell", "Bash", "rm", True), Policy(destructive_shell=False)) == ""
    assert guard.reason(Action("subagent", "Task"), POLICY) == "subagent"


# ---- the driver ---------------------------------------------------------------------------------

RAW = b'{"model": "claude-sonnet-5", "max_tokens": 256, "messages": [{"role": "user", "content": "Fix the bug."}]}'


def nonce(body) -> str:
    return re.search(r"nonce=([0-9a-f]+)", body["messages"][-1]["content"][-1]["text"]).group(1)


def run_guarded(draft_answer, strong=None, on_risky="verify", draft_error=None):
    draft = FakeProvider(error=draft_error) if draft_error else FakeProvider(lambda b: draft_answer)
    strong = strong or FakeProvider(lambda b: said(Block("text", text=f"ACCEPT {nonce(b)}"), model="strong"))
    req = codecs.parse_request(Api.ANTHROPIC, RAW, {"x-api-key": "client"})
    c = CascadeCall(draft=draft, draft_model="draft-model", draft_headers={"x-api-key": "sidecar"}, strong=strong,
                    strong_headers={"x-api-key": "client"}, draft_timeout_s=3, verify_timeout_s=4)
    return asyncio.run(guarded(req, c, POLICY, on_risky)), draft, strong


def test_a_safe_draft_is_served_without_asking_the_strong_model():
    read = said(TEXT, call("Read", file_path="/r/a.py"))
    out, draft, strong = run_guarded(read)
    assert out.judgement.step == guard.SERVE and out.draft is read and out.verified is None
    assert len(draft.calls) == 1 and strong.calls == []
    body, headers, timeout = draft.calls[0]
    assert body["model"] == "draft-model" and headers["x-api-key"] == "sidecar" and timeout == 3


def test_a_risky_draft_is_verified_accepted_or_enhanced():
    edit = said(call("Edit", file_path="/r/a.py", old_string="a", new_string="b"))
    out, _, strong = run_guarded(edit)
    assert out.judgement.reason == "file_edit" and out.verified.path is Path.ACCEPTED
    assert out.verified.response is edit
    body, headers, timeout = strong.calls[0]
    assert headers["x-api-key"] == "client" and timeout == 4 and "[cascade-verify" in body["messages"][-1]["content"][-1]["text"]
    mine = said(Block("text", text="Do not edit that file."), model="strong")
    out, _, _ = run_guarded(edit, strong=FakeProvider(lambda b: mine))
    assert out.verified.path is Path.ENHANCED and out.verified.response is mine


def test_a_risky_draft_under_direct_is_left_to_the_strong_model():
    out, _, strong = run_guarded(said(call("Task", prompt="p")), on_risky="direct")
    assert (out.judgement.step, out.judgement.reason, out.verified) == (guard.DIRECT, "subagent", None)
    assert strong.calls == []


def test_the_drafts_reasoning_is_stripped_before_it_is_judged_or_served():
    out, _, _ = run_guarded(said(THINKING, Block("text", text="Done.")))
    assert [b.type for b in out.draft.blocks] == ["text"] and out.judgement.step == guard.SERVE


def test_failures_raise_with_their_stage():
    with pytest.raises(CascadeError) as info:
        run_guarded(None, draft_error=ProviderStatus(529))
    assert info.value.stage == "draft" and info.value.draft is None
    edit = said(call("Write", file_path="a", content=""))
    with pytest.raises(CascadeError) as info:
        run_guarded(edit, strong=FakeProvider(error=ProviderStatus(500)))
    assert info.value.stage == "verify" and info.value.draft is edit
