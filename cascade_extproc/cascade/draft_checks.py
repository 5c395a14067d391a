"""Is the draft's answer one to serve? The checks every path that uses the draft makes on it: the
cascade and the skipped path today, the guarded path (issue 16) when it comes, which calls
`failed_draft` on an answer it holds whole, or feeds a `DraftWatch` a stream it relays.

A draft fails when it loops (repetition.py, on its text and its tool calls' arguments; its
reasoning is never served and not judged) or when it stopped for length under the output budget
the sidecar set (cascade.draft_max_tokens; bodies.draft_limit): not under a limit the client set
itself, which is the client's own answer to have. The reasons are the fallback reasons (or, for a
skipped stream the client already has part of, the error) the ledger and the metrics record.
"""
from __future__ import annotations

import dataclasses

from cascade_extproc.cascade.bodies import draft_limit
from cascade_extproc.cascade.repetition import RepetitionDetector, looping_answer
from cascade_extproc.types import BlockDelta, Request, Response, StopReason, StreamEnd, StreamEvent, Usage

DEGENERATE = "draft-degenerate"  # the draft loops
BUDGET = "draft-budget"  # the draft stopped for length under the sidecar's budget
DEADLINE = "draft-deadline"  # the skipped path's time limit (cascade.skipped_max_s) ran out


def limited(req: Request, budget: int | None) -> bool:
    """Is the draft's output limit the sidecar's (the budget), not the client's own?"""
    return draft_limit(req, budget) is not None


def failure(answer: Response, *, limited: bool, detect_repetition: bool) -> str:
    """Why a whole draft answer is not one to serve (DEGENERATE, BUDGET), or "" when it is."""
    if detect_repetition and looping_answer(answer):
        return DEGENERATE
    if answer.stop_reason is StopReason.MAX_TOKENS and limited:
        return BUDGET
    return ""


def failed_draft(req: Request, answer: Response, budget: int | None, detect_repetition: bool) -> str:
    """`failure` for a draft asked for `req` under `budget` (cascade.draft_max_tokens)."""
    return failure(answer, limited=limited(req, budget), detect_repetition=detect_repetition)


class DraftWatch:
    """The same checks on a draft's stream as it comes: fed its events (the provider's, before
    any translation), it says why the draft failed so far, and how much it has said."""

    def __init__(self, *, limited: bool, detect_repetition: bool):
        self.limited = limited
        self.detector = RepetitionDetector() if detect_repetition else None
        self.chars = 0  # of text, tool-call arguments and reasoning: the output, estimated
        self.looping = False
        self.ended_by_us = ""  # BUDGET: the draft stopped for length under our limit

    def see(self, events: list[StreamEvent]) -> str:
        """Why the draft has failed, these events seen: DEGENERATE, BUDGET, or ""."""
        for ev in events:
            if isinstance(ev, BlockDelta) and ev.kind in ("text", "json", "thinking"):
                self.chars += len(ev.value)
                if self.detector is not None and ev.kind != "thinking" and \
                        self.detector.feed(ev.value, json_text=ev.kind == "json"):
                    self.looping = True
            elif isinstance(ev, StreamEnd) and ev.stop_reason is StopReason.MAX_TOKENS and self.limited:
                self.ended_by_us = BUDGET
        return DEGENERATE if self.looping else self.ended_by_us

    def usage(self, reported: Usage | None) -> Usage:
        """The draft's usage so far: its own count where it gave one, else ~4 characters a token
        (a stream cut short by us has not told its usage yet)."""
        seen = reported or Usage()
        return dataclasses.replace(seen, output_tokens=max(seen.output_tokens, -(-self.chars // 4)))
