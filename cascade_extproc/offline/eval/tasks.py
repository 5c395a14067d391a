"""What a suite is made of: single-turn tasks (an answer, checked) and agentic tasks (files in a
directory, changed by the model through tools, checked by a test). Each carries a known-good and
a known-bad answer, so its check is itself tested (tests/unit/offline/eval/test_suites.py)."""
from __future__ import annotations

from dataclasses import dataclass, field

from cascade_extproc.offline.eval.checks import Check


@dataclass(frozen=True)
class Task:
    id: str
    kind: str  # code | math | instruct
    prompt: str
    check: Check
    good: str  # an answer the check must pass
    bad: str  # a plausible wrong answer the check must fail
    system: str = ""
    max_tokens: int = 512


@dataclass(frozen=True)
class AgenticTask:
    """The model works in a temporary directory holding `files`, with the harness's tools
    (agent.py), until it stops calling tools or `max_steps` model calls were made. Then `test`
    (a Python script, written into the directory after the model is done, so the model cannot
    change it) runs there: exit 0 passes."""

    id: str
    prompt: str
    files: dict[str, str]
    test: str
    good: dict[str, str]  # files that, written over `files`, make the test pass
    bad: dict[str, str] = field(default_factory=dict)  # files that keep it failing ({}: untouched)
    max_steps: int = 8
    kind: str = "agentic"
    max_tokens: int = 1024


AnyTask = Task | AgenticTask
