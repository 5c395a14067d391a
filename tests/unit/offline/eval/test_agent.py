"""The agent runtime against a scripted model: its tool calls are executed for real in the task's
directory, results go back as tool results (errors marked), the loop ends when the model answers
without a tool call or at the step limit, and the final files are what the check judges."""
from __future__ import annotations

import asyncio
import dataclasses

from cascade_extproc.offline.eval import agent
from cascade_extproc.offline.eval.suites import agentic
from cascade_extproc.types import Block, ChatRequest, Response, StopReason

FIX_BUG = agentic.TASKS[0]


def _call(name: str, **args) -> Block:
    _call.n = getattr(_call, "n", 0) + 1
    return Block("tool_use", id=f"toolu_{_call.n}", name=name, input=args)


def _reply(*blocks: Block) -> Response:
    stop = StopReason.TOOL_USE if any(b.type == "tool_use" for b in blocks) else StopReason.END_TURN
    return Response(id="msg", model="scripted", blocks=list(blocks), stop_reason=stop)


class Scripted:
    def __init__(self, *replies: Response | None):
        self.replies = list(replies)
        self.requests: list[ChatRequest] = []

    async def __call__(self, req: ChatRequest) -> Response | None:
        self.requests.append(req)
        return self.replies.pop(0)


def _run(task, ws, model):
    return asyncio.run(agent.run(task, ws, model, "m"))


def _ws(tmp_path, task=FIX_BUG) -> agent.Workspace:
    ws = agent.Workspace(tmp_path)
    ws.write_files(task.files)
    return ws


def test_a_model_that_reads_edits_and_tests_solves_the_task(tmp_path):
    ws = _ws(tmp_path)
    model = Scripted(
        _reply(Block("text", text="Let me look."), _call("read_file", path="calc.py")),
        _reply(_call("edit_file", path="calc.py", old_text="a - b", new_text="a + b")),
        _reply(_call("bash", command="python test_calc.py")),
        _reply(Block("text", text="Fixed add.")))
    run = _run(FIX_BUG, ws, model)
    assert (run.steps, run.tool_calls, run.stopped) == (4, 3, "answered")
    assert agent.check(FIX_BUG, ws).passed
    # what the model saw: the file, the edit, the test's output, each answering its call
    results = [b for m in model.requests[-1].messages if m.role == "user" for b in m.blocks if b.type == "tool_result"]
    assert [r.is_error for r in results] == [False, False, False]
    assert "a - b" in results[0].content[0].text
    assert "exit code 0" in results[2].content[0].text and "ok" in results[2].content[0].text
    assert results[0].tool_use_id == model.requests[1].messages[1].blocks[1].id
    assert {t.name for t in model.requests[0].tools} == {"read_file", "write_file", "edit_file", "bash"}


def test_tool_failures_go_back_to_the_model_as_errors(tmp_path):
    ws = _ws(tmp_path)
    model = Scripted(
        _reply(_call("read_file", path="../../etc/passwd"), _call("read_file", path="/etc/passwd"),
               _call("edit_file", path="calc.py", old_text="nothing like this", new_text="x"),
               _call("bash", command="python test_calc.py"), _call("launch_rockets"),
               _call("write_file", path="notes.txt")),
        _reply(Block("text", text="I give up.")))
    run = _run(FIX_BUG, ws, model)
    results = model.requests[1].messages[-1].blocks
    assert [r.is_error for r in results] == [True] * 6
    texts = [r.content[0].text for r in results]
    assert "outside the project" in texts[0] and "outside the project" in texts[1]
    assert "occurs 0 times" in texts[2] and "AssertionError" in texts[3]
    assert "unknown tool" in texts[4] and "content" in texts[5]
    assert run.stopped == "answered" and not agent.check(FIX_BUG, ws).passed


def test_the_loop_stops_at_the_step_limit(tmp_path):
    task = dataclasses.replace(FIX_BUG, max_steps=3)
    model = Scripted(*[_reply(_call("bash", command="true")) for _ in range(5)])
    run = _run(task, _ws(tmp_path, task), model)
    assert (run.steps, run.stopped) == (3, "step-limit")


def test_a_failed_model_call_ends_the_run(tmp_path):
    run = _run(FIX_BUG, _ws(tmp_path), Scripted(None))
    assert (run.steps, run.stopped) == (1, "model-error")


def test_a_command_that_hangs_is_cut(tmp_path):
    ws = agent.Workspace(tmp_path, command_timeout=1)
    text, is_error = ws.execute("bash", {"command": "sleep 30"})
    assert is_error and "timed out" in text


def test_write_file_creates_directories_inside_the_project(tmp_path):
    ws = agent.Workspace(tmp_path)
    text, is_error = ws.execute("write_file", {"path": "pkg/mod.py", "content": "x = 1\n"})
    assert not is_error and (tmp_path / "pkg" / "mod.py").read_text() == "x = 1\n"
