"""Draft → verify → accepted | enhanced: the driver of the verification protocol (verify.py), against
the providers' Protocol; and the guarded skip: draft → judged (guard.py) → served, or verified.
Raises CascadeError for the caller to fall back."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from cascade_extproc.actions import Policy
from cascade_extproc.cascade import guard, verify
from cascade_extproc.cascade.bodies import draft_body, verify_body
from cascade_extproc.cascade.draft_checks import DEGENERATE, failed_draft
from cascade_extproc.codecs import provenance
from cascade_extproc.providers import Provider, ProviderError
from cascade_extproc.types import Path, Request, Response


# Observes a provider call: (provider, call, seconds), e.g. ("strong", "verify", 1.2).
CallTimer = Callable[[str, str, float], None]


class CascadeError(Exception):
    def __init__(self, stage: str, cause: Exception | str, draft: Response | None = None, reason: str = "",
                 spent: Response | None = None):
        super().__init__(f"{stage}: {cause}")
        self.stage = stage  # "draft" or "verify"
        self.reason = reason or f"{stage}-failed"  # the fallback reason, in the metrics and the log line
        self.draft = draft  # the unverified draft, when verification is what failed
        self.spent = spent or draft  # a draft that was paid for, served or not (its usage is metered)


@dataclass
class Outcome:
    path: Path
    response: Response  # what the client gets
    draft: Response
    verdict: Response


@dataclass
class CascadeCall:
    """Everything one cascade needs besides the request."""

    draft: Provider
    draft_model: str
    draft_headers: dict[str, str]
    strong: Provider
    strong_headers: dict[str, str]
    draft_timeout_s: float
    verify_timeout_s: float
    on_call: CallTimer | None = None  # told how long each of the two calls took
    draft_max_tokens: int | None = None  # the draft's output budget (bodies.draft_limit)
    detect_repetition: bool = False  # a draft caught looping (repetition.py) is a failed draft


async def _timed(call: CascadeCall, provider: str, name: str, coro):
    t0 = time.monotonic()
    try:
        return await coro
    finally:
        if call.on_call is not None:
            call.on_call(provider, name, time.monotonic() - t0)


async def ask_draft(req: Request, call: CascadeCall) -> Response:
    """The draft's answer, buffered, its reasoning stripped: the one draft call of every path the
    server drafts on itself (the cascade, the guarded skip), so what judges a draft judges both."""
    body = draft_body(req, call.draft.api, call.draft_model, budget=call.draft_max_tokens)
    try:
        draft = await _timed(call, "draft", "draft", call.draft.complete(body, call.draft_headers,
                                                                         call.draft_timeout_s))
    except ProviderError as exc:
        raise CascadeError("draft", exc) from exc
    # A failed draft (draft_checks: it loops, or ran out of our budget) is never verified, let
    # alone served: the strong model answers instead.
    failed = failed_draft(req, draft, call.draft_max_tokens, call.detect_repetition)
    if failed:
        why = "the draft repeats itself" if failed == DEGENERATE else "the draft ran out of its output budget"
        raise CascadeError("draft", why, reason=failed, spent=draft)
    provenance.strip_reasoning(draft)
    return draft


async def verify_draft(req: Request, call: CascadeCall, draft: Response) -> Outcome:
    """The strong model checks `draft`: accepted (the draft is served) or enhanced (its own answer)."""
    nonce = verify.new_nonce()
    try:
        verdict = await _timed(call, "strong", "verify", call.strong.complete(
            verify_body(req, draft, nonce), call.strong_headers, call.verify_timeout_s))
    except ProviderError as exc:
        raise CascadeError("verify", exc, draft) from exc
    judged = verify.judge(verdict, nonce)
    if judged is verify.Verdict.ACCEPT:
        return Outcome(Path.ACCEPTED, draft, draft, verdict)
    if judged is verify.Verdict.ANSWER:
        return Outcome(Path.ENHANCED, verdict, draft, verdict)
    raise CascadeError("verify", "unusable verdict", draft)


async def run(req: Request, call: CascadeCall) -> Outcome:
    return await verify_draft(req, call, await ask_draft(req, call))


@dataclass
class GuardedOutcome:
    """A guarded skip: what the draft did, and what became of it."""

    judgement: guard.Judgement
    draft: Response
    verified: Outcome | None = None  # the strong model's verification, when the draft was risky and on_risky is verify


async def guarded(req: Request, call: CascadeCall, policy: Policy, on_risky: str = "verify") -> GuardedOutcome:
    """The draft answers; a safe answer is served as it is, a risky one verified by the strong
    model (on_risky "verify") or left for the strong model to answer itself ("direct": the caller
    sends the original request on). A failed draft raises CascadeError("draft"), as the cascade's."""
    draft = await ask_draft(req, call)
    judgement = guard.judge(draft, policy, on_risky)
    if judgement.step != guard.VERIFY:
        return GuardedOutcome(judgement, draft)
    return GuardedOutcome(judgement, draft, await verify_draft(req, call, draft))
