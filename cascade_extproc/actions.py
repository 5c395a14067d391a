"""What an answer does: the action a model's answer takes, read from its tool calls (pure).

Replay classifies the strong model's recorded answers with it, the guarded path the draft's live
answer, shadow mode both to compare them. A leaf: it imports only `types`.

Kinds: `file_edit` (Edit, Write, MultiEdit, NotebookEdit and their OpenAI-style namesakes),
`shell` (Bash and the like; `destructive` when the command matches a destructive pattern),
`read_only` (Read, Grep, Glob, LS, web lookups, the todo list), `subagent` (Task, Agent),
`text` (no tool call: an answer to the user), `other` (any other tool, MCP tools included).
The target is the file an edit or a read touches, or the program a shell command runs."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from cascade_extproc.types import Block

FILE_EDIT, SHELL, READ_ONLY, SUBAGENT, TEXT, OTHER = "file_edit", "shell", "read_only", "subagent", "text", "other"
KINDS = (FILE_EDIT, SHELL, READ_ONLY, SUBAGENT, TEXT, OTHER)
RISKY_KINDS = frozenset({FILE_EDIT, SUBAGENT})  # the default risky set (config: guard.risky_actions)


def _norm(name: str) -> str:
    """`MultiEdit`, `multi_edit` and `multi-edit` are one tool."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


# Tool names, normalised (lower case, letters and digits only). Claude Code's first, then the
# names OpenAI-style agents (Codex, Cursor-like and SDK examples) give the same actions.
FILE_EDIT_TOOLS = frozenset(_norm(n) for n in (
    "Edit", "Write", "MultiEdit", "NotebookEdit",
    "edit_file", "write_file", "create_file", "apply_patch", "str_replace", "str_replace_editor",
    "str_replace_based_edit_tool", "replace_in_file", "insert", "delete_file", "update_file", "patch"))
SHELL_TOOLS = frozenset(_norm(n) for n in (
    "Bash", "shell", "local_shell", "exec", "exec_command", "run_command", "execute_command",
    "run_terminal_cmd", "terminal", "run_shell_command"))
READ_ONLY_TOOLS = frozenset(_norm(n) for n in (
    "Read", "Grep", "Glob", "LS", "WebFetch", "WebSearch", "TodoRead", "TodoWrite", "BashOutput",
    "TaskOutput", "NotebookRead",
    "read_file", "list_dir", "list_directory", "list_files", "grep_search", "file_search",
    "codebase_search", "search", "search_files", "view", "web_search", "web_fetch", "fetch"))
SUBAGENT_TOOLS = frozenset(_norm(n) for n in ("Task", "Agent", "spawn_agent", "launch_agent", "dispatch_agent"))

# Shell commands that destroy or publish (searched anywhere in the command, case-insensitive).
DESTRUCTIVE_PATTERNS: tuple[str, ...] = (
    r"\brm\s+(?:\S+\s+)*?-(?:[a-z]*[rf][a-z]*|-recursive|-force)\b",  # rm -rf, rm -r, rm -f, rm --force
    r"\bgit\s+push\b.*(?:\s--force\b|\s--force-with-lease\b|\s-[a-z]*f\b|\s\+\S)",
    r"\bgit\s+reset\b.*\s--hard\b",
    r"\bgit\s+clean\b.*\s-[a-z]*f",
    r"\bgit\s+(?:checkout|restore)\s+(?:\S+\s+)*?(?:--\s+)?\.(?:\s|$|;|&)",  # discards the work tree
    r"\bgit\s+branch\s+(?:\S+\s+)*?-D\b",
    r"\bgit\s+stash\s+(?:drop|clear)\b",
    r"\b(?:npm|pnpm|yarn|bun)\s+publish\b",
    r"\btwine\s+upload\b", r"\b(?:poetry|uv|flit|hatch)\s+publish\b", r"\bcargo\s+publish\b",
    r"\bgem\s+push\b", r"\bdocker\s+push\b",
    r"\bdrop\s+(?:table|database|schema)\b", r"\btruncate\s+table\b",
    r"\bmkfs(?:\.\w+)?\b", r"\bdd\b.*\bof=", r">\s*/dev/(?:sd|nvme|hd)", r"\bshred\b",
    r"\bfind\b.*\s-delete\b", r"\bkubectl\s+delete\b", r"\bterraform\s+destroy\b",
)

_WRAPPERS = frozenset({"sudo", "env", "time", "nohup", "nice", "exec", "command", "builtin"})


def compile_patterns(patterns: Iterable[str]) -> tuple[re.Pattern[str], ...]:
    """Raises re.error on a bad pattern (config reports it under its key)."""
    return tuple(re.compile(p, re.IGNORECASE) for p in patterns)


DESTRUCTIVE = compile_patterns(DESTRUCTIVE_PATTERNS)


@dataclass(frozen=True)
class Action:
    kind: str  # one of KINDS
    tool: str = ""  # the tool's name as called ("" for text)
    target: str = ""  # the file path, or the shell command's program
    destructive: bool = False  # shell only: the command matches a destructive pattern


def program(command: str) -> str:
    """The program a shell command runs: the first word past `cd DIR &&`, variable assignments
    and wrappers (sudo, env, time...), without its directory."""
    for part in re.split(r"&&|\|\||;|\n", command):
        words = part.split()
        while words and ("=" in words[0] and not words[0].startswith("=") or words[0] in _WRAPPERS):
            words = words[1:]
        if words and words[0] != "cd":
            return words[0].rsplit("/", 1)[-1]
    return ""


def is_destructive(command: str, patterns: Sequence[re.Pattern[str]] | None = None) -> bool:
    return any(p.search(command) for p in (DESTRUCTIVE if patterns is None else patterns))


def _file(inp: dict[str, Any]) -> str:
    for key in ("file_path", "path", "notebook_path", "filename", "file", "target_file"):
        v = inp.get(key)
        if isinstance(v, str) and v:
            return v
    return ""


def classify_tool_call(name: str, input: dict[str, Any] | None,
                       patterns: Sequence[re.Pattern[str]] | None = None) -> Action:
    """One tool call's action. `patterns`: the destructive shell patterns (default DESTRUCTIVE)."""
    inp = input if isinstance(input, dict) else {}
    n = _norm(name)
    if n in FILE_EDIT_TOOLS:
        return Action(FILE_EDIT, name, _file(inp))
    if n in SHELL_TOOLS:
        cmd = inp.get("command", inp.get("cmd", ""))
        if isinstance(cmd, list):  # OpenAI's local_shell: an argv
            cmd = " ".join(str(c) for c in cmd)
        cmd = cmd if isinstance(cmd, str) else ""
        return Action(SHELL, name, program(cmd), is_destructive(cmd, patterns))
    if n in SUBAGENT_TOOLS:
        return Action(SUBAGENT, name, str(inp.get("subagent_type", "") or ""))
    if n in READ_ONLY_TOOLS:
        return Action(READ_ONLY, name, _file(inp))
    return Action(OTHER, name, _file(inp))


# The riskiest of several tool calls: a destructive command, a subagent, a file edit, a command,
# another tool, a read.
_RANK = {OTHER: 2, READ_ONLY: 1, SHELL: 3, FILE_EDIT: 4, SUBAGENT: 5}


def _rank(a: Action) -> int:
    return 6 if a.destructive else _RANK.get(a.kind, 0)


def classify(blocks: Iterable[Block], patterns: Sequence[re.Pattern[str]] | None = None) -> Action:
    """An answer's action, from its content blocks: the riskiest of its tool calls, or `text`."""
    calls = [classify_tool_call(b.name, b.input, patterns) for b in blocks if b.type == "tool_use"]
    return max(calls, key=_rank) if calls else Action(TEXT)


def classify_json(content: Any, patterns: Sequence[re.Pattern[str]] | None = None) -> Action:
    """The same over raw Anthropic-style content (a list of dicts, or a string), as transcripts
    record it."""
    if not isinstance(content, list):
        return Action(TEXT)
    blocks = [Block("tool_use", name=str(c.get("name", "")), input=c.get("input") or {})
              for c in content if isinstance(c, dict) and c.get("type") == "tool_use"]
    return classify(blocks, patterns)


def is_risky(action: Action, risky_kinds: frozenset[str] | set[str] = RISKY_KINDS,
             destructive_shell: bool = True) -> bool:
    """Whether serving `action` unchecked is a bet the policy will not take: its kind is in the
    risky set (add "text" for a final answer to the user), or it is a destructive command."""
    return action.kind in risky_kinds or (destructive_shell and action.destructive)


@dataclass(frozen=True)
class Policy:
    """Which actions a skip may not serve unchecked: the config's `guard` section, compiled."""

    risky_kinds: frozenset[str] = RISKY_KINDS
    destructive_shell: bool = True
    patterns: tuple[re.Pattern[str], ...] = DESTRUCTIVE

    @classmethod
    def from_config(cls, guard: Any) -> "Policy":
        """From a config.GuardConfig (checked there: known kinds, patterns that compile)."""
        kinds = set(guard.risky_actions) | ({TEXT} if guard.text_is_risky else set())
        base = DESTRUCTIVE_PATTERNS if guard.destructive_patterns is None else tuple(guard.destructive_patterns)
        return cls(frozenset(kinds), guard.destructive_shell,
                   compile_patterns((*base, *guard.extra_destructive_patterns)))

    def classify(self, blocks: Iterable[Block]) -> Action:
        return classify(blocks, self.patterns)

    def classify_tool_call(self, name: str, input: dict[str, Any] | None) -> Action:
        return classify_tool_call(name, input, self.patterns)

    def is_risky(self, action: Action) -> bool:
        return is_risky(action, self.risky_kinds, self.destructive_shell)
