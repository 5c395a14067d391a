"""Draft → verify → accepted | enhanced: the driver of the verification protocol (verify.py), against
the providers' Protocol. Raises CascadeError for the caller to fall back."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from cascade_extproc.cascade import verify
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


async def run(req: Request, call: CascadeCall) -> Outcome:
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
