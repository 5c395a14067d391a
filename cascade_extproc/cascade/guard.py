"""The guarded skip's decision (pure): the draft has answered; is its answer one to serve unchecked?

A safe answer (by the policy: actions.py, the config's `guard` section) is served as it is; a
risky one goes to the strong model, to verify it (accepted | enhanced) or, under
`guard.on_risky: direct`, to answer the request itself. The reason it escalated is the risky
action's kind (`file_edit`, `subagent`, `text`, ...) or `destructive_shell`: the metrics' label,
the log line's and the answer's `x-cascade-guard` header."""
from __future__ import annotations

from dataclasses import dataclass

from cascade_extproc.actions import Action, Policy
from cascade_extproc.types import Response

SERVE, VERIFY, DIRECT = "serve", "verify", "direct"
DESTRUCTIVE_SHELL = "destructive_shell"


@dataclass(frozen=True)
class Judgement:
    action: Action  # what the draft's answer does
    step: str  # SERVE, VERIFY or DIRECT
    reason: str = ""  # why it escalated ("" when served)

    @property
    def escalated(self) -> bool:
        return self.step != SERVE


def reason(action: Action, policy: Policy) -> str:
    """Why `action` may not be served unchecked, or "" when it may."""
    if action.kind in policy.risky_kinds:
        return action.kind
    if policy.destructive_shell and action.destructive:
        return DESTRUCTIVE_SHELL
    return ""


def judge(draft: Response, policy: Policy, on_risky: str = VERIFY) -> Judgement:
    """The draft's answer (its reasoning already stripped) judged by what it does."""
    action = policy.classify(draft.blocks)
    why = reason(action, policy)
    if not why:
        return Judgement(action, SERVE)
    return Judgement(action, DIRECT if on_risky == DIRECT else VERIFY, why)


def header(j: Judgement) -> str:
    """The `x-cascade-guard` value: `served`, or `<step>:<reason>` (e.g. `verify:file_edit`)."""
    return "served" if not j.escalated else f"{j.step}:{j.reason}"
