"""The agent runtime of the agentic suite: real tools over a temporary directory, the model's
tool calls executed, the loop run until the model answers without a tool call or the step limit.

The model is reached through `send` (a ChatRequest → the model's Response, or None when the call
failed), so the loop runs the same against a provider, the stack, or a scripted model in tests.
Tool failures (a bad path, an edit that matches nothing, a command that exits non-zero) go back
to the model as tool results marked is_error, as an agent runtime does; they never stop the run.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

from cascade_extproc.offline.eval import sandbox
from cascade_extproc.offline.eval.checks import PASS, Verdict
from cascade_extproc.offline.eval.tasks import AgenticTask
from cascade_extproc.types import Block, ChatRequest, Message, Response, Tool

SYSTEM = ("You are a coding agent. You work in a project directory through the tools: read_file, "
          "write_file, edit_file and bash (run a shell command there). Use them to do the task, check "
          "your work, and when it is done, answer with a one-line summary and no tool call.")
OUTPUT_LIMIT = 4000  # characters of a tool's output sent back to the model
CHECK_FILE = "_eval_check.py"


def _schema(**props: str) -> dict[str, Any]:
    return {"type": "object", "properties": {k: {"type": "string", "description": v} for k, v in props.items()},
            "required": list(props)}


TOOLS = [
    Tool("read_file", "Read a text file of the project.", _schema(path="file path, relative to the project")),
    Tool("write_file", "Create or overwrite a text file of the project.",
         _schema(path="file path, relative to the project", content="the whole new content")),
    Tool("edit_file", "Replace one exact occurrence of old_text with new_text in a file.",
         _schema(path="file path, relative to the project", old_text="text to replace (must occur once)",
                 new_text="the replacement")),
    Tool("bash", "Run a shell command in the project directory; returns its exit code and output.",
         _schema(command="the command, e.g. python test_calc.py")),
]


class ToolError(Exception):
    pass


class Workspace:
    """The project directory the tools act on; no path may leave it."""

    def __init__(self, root: Path, command_timeout: float = 20.0):
        self.root = root.resolve()
        self.command_timeout = command_timeout

    def write_files(self, files: dict[str, str]) -> None:
        for name, text in files.items():
            path = self._path(name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)

    def _path(self, name: Any) -> Path:
        if not isinstance(name, str) or not name.strip():
            raise ToolError("path: a relative file path is required")
        path = (self.root / name).resolve()
        if path != self.root and self.root not in path.parents:
            raise ToolError(f"path {name!r} is outside the project")
        return path

    def execute(self, name: str, args: dict[str, Any]) -> tuple[str, bool]:
        """(output, is_error) of one tool call."""
        try:
            return getattr(self, f"_tool_{name}")(args), False
        except AttributeError:
            return f"unknown tool {name!r}; the tools are {', '.join(t.name for t in TOOLS)}", True
        except ToolError as exc:
            return str(exc), True
        except (OSError, UnicodeDecodeError) as exc:
            return f"{type(exc).__name__}: {exc}", True

    def _tool_read_file(self, args: dict[str, Any]) -> str:
        path = self._path(args.get("path"))
        if not path.is_file():
            raise ToolError(f"no such file: {args.get('path')}")
        return path.read_text()[:OUTPUT_LIMIT]

    def _tool_write_file(self, args: dict[str, Any]) -> str:
        path, content = self._path(args.get("path")), args.get("content")
        if not isinstance(content, str):
            raise ToolError("content: a string is required")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        return f"wrote {len(content.encode())} bytes to {args['path']}"

    def _tool_edit_file(self, args: dict[str, Any]) -> str:
        path, old, new = self._path(args.get("path")), args.get("old_text"), args.get("new_text")
        if not isinstance(old, str) or not old or not isinstance(new, str):
            raise ToolError("old_text (non-empty) and new_text must be strings")
        if not path.is_file():
            raise ToolError(f"no such file: {args.get('path')}")
        text = path.read_text()
        n = text.count(old)
        if n != 1:
            raise ToolError(f"old_text occurs {n} times in {args['path']}; it must occur exactly once")
        path.write_text(text.replace(old, new))
        return f"edited {args['path']}"

    def _tool_bash(self, args: dict[str, Any]) -> str:
        command = args.get("command")
        if not isinstance(command, str) or not command.strip():
            raise ToolError("command: a string is required")
        out = sandbox.run_shell(command, self.root, self.command_timeout)
        if out.timed_out:
            raise ToolError(f"timed out after {self.command_timeout:.0f} s")
        text = f"exit code {out.returncode}\n{out.stdout}{out.stderr}"[:OUTPUT_LIMIT]
        if out.returncode:
            raise ToolError(text)
        return text


@dataclass
class AgentRun:
    steps: int = 0  # model calls made
    tool_calls: int = 0
    stopped: str = ""  # "answered" (no tool call), "step-limit", "model-error"
    transcript: list[Message] = field(default_factory=list)


Send = Callable[[ChatRequest], Awaitable[Response | None]]


async def run(task: AgenticTask, ws: Workspace, send: Send, model: str, max_tokens: int | None = None,
              temperature: float | None = 0.0) -> AgentRun:
    """Drive the model through `task` in `ws` (its files already written)."""
    messages = [Message("user", [Block("text", text=task.prompt)])]
    out = AgentRun(transcript=messages)
    while out.steps < task.max_steps:
        req = ChatRequest(model=model, messages=list(messages), system=SYSTEM, tools=TOOLS,
                          max_tokens=max_tokens or task.max_tokens, temperature=temperature)
        out.steps += 1
        resp = await send(req)
        if resp is None:
            out.stopped = "model-error"
            return out
        blocks = [b for b in resp.blocks if b.type in ("text", "tool_use") and (b.type != "text" or b.text)]
        calls = [b for b in blocks if b.type == "tool_use"]
        messages.append(Message("assistant", blocks or [Block("text", text="(empty answer)")]))
        if not calls:
            out.stopped = "answered"
            return out
        results = []
        for call in calls:
            text, is_error = ws.execute(call.name, call.input)
            out.tool_calls += 1
            results.append(Block("tool_result", tool_use_id=call.id, content=[Block("text", text=text or "(no output)")],
                                 is_error=is_error))
        messages.append(Message("user", results))
    out.stopped = "step-limit"
    return out


def check(task: AgenticTask, ws: Workspace, timeout: float = 20.0) -> Verdict:
    """Run the task's test in the final project directory (written now, so the model could not
    have changed it)."""
    (ws.root / CHECK_FILE).write_text(task.test)
    outcome = sandbox.run_shell(f"python -E -s {CHECK_FILE}", ws.root, timeout)  # -I would hide the project's modules
    return PASS if outcome.ok else Verdict(False, outcome.summary())
