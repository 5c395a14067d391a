"""The guarded skip (route `guarded`): the server asks the draft itself, as the cascade does (a
buffered call within cascade.draft_timeout_s), and judges its answer by what it does
(cascade/guard.py) before the client sees a byte:
- safe (by the config's `guard` section): served as it is, as JSON or a complete SSE stream
  (path `skipped`, `x-cascade-guard: served`);
- risky: the strong model verifies it (accepted | enhanced, `x-cascade-guard: verify:<reason>`),
  or, under `guard.on_risky: direct`, answers the client's request itself (path `direct`);
- the draft failed (an error: `draft-failed`; it loops: `draft-degenerate`; it stopped at the
  output budget, cascade.draft_max_tokens: `draft-budget`; cascade/draft_checks.py, as the
  cascade's): the strong model answers the client's request (path `fallback`); verification
  failed: the same (`verify-failed`), never the unchecked draft.
Every outcome is recorded with the draft's action and why it escalated (metrics, log line)."""
from __future__ import annotations

import logging

from cascade_extproc.cascade import guard
from cascade_extproc.cascade.run import CascadeError, guarded
from cascade_extproc.extproc import mutations
from cascade_extproc.extproc.paths.cascade import cascade_call
from cascade_extproc.extproc.paths.base import FallBack, Facts, Pending, Report, Runtime, Taken, ToStrong, encode_answer
from cascade_extproc.headers import GUARD_HEADER
from cascade_extproc.metering.ledger import Ledger
from cascade_extproc.types import Decision, Path, Request

log = logging.getLogger("cascade_extproc.handler")


class GuardedPath:
    def __init__(self, rt: Runtime, ledger: Ledger, report: Report):
        self.rt = rt
        self.metrics = ledger.metrics

    def take(self, req: Request, decision: Decision, draft_key: str) -> Pending:
        if self.rt.cascade_slots.locked():  # the server's own provider calls are at their limit
            raise FallBack("overload")
        cfg = self.rt.cfg
        wait = cfg.cascade.draft_timeout_s + (cfg.cascade.verify_timeout_s if cfg.guard.on_risky == guard.VERIFY else 0)
        return Pending(wait + 5, lambda: self._run(req, draft_key))

    def _timed(self, provider: str, call: str, seconds: float) -> None:
        self.metrics.provider_duration.labels(provider, call).observe(seconds)

    async def _run(self, req: Request, draft_key: str) -> Taken:
        cfg = self.rt.cfg
        draft = cfg.providers.for_api(req.api).draft
        call = cascade_call(self.rt, req, draft_key, self._timed)  # the cascade's draft call, alike
        async with self.rt.cascade_slots:
            try:
                out = await guarded(req, call, self.rt.guard, cfg.guard.on_risky)
            except CascadeError as exc:
                # A failed draft (an error; it loops or ran out of its budget: draft_checks.py), or
                # a risky draft whose check failed: never served unchecked.
                log.warning("guarded skip: %s failed: %s; the strong model answers", exc.stage, exc)
                usage = {"draft": exc.spent.usage} if exc.spent is not None else {}
                action = self.rt.guard.classify(exc.draft.blocks) if exc.draft is not None else None
                reason = guard.reason(action, self.rt.guard) if action is not None else ""
                raise ToStrong(Facts(Path.FALLBACK, usage=usage, fallback_reason=exc.reason, guarded=True,
                                     guard_action=action, escalation=reason or exc.reason)) from None
            except Exception:
                log.exception("guarded skip crashed; falling back to the strong model")
                raise ToStrong(Facts(Path.FALLBACK, fallback_reason="internal-error", guarded=True,
                                     escalation="internal-error")) from None
        j = out.judgement
        facts = dict(guarded=True, guard_action=j.action, escalation=j.reason)
        if j.step == guard.DIRECT:
            raise ToStrong(Facts(Path.DIRECT, usage={"draft": out.draft.usage}, **facts))
        if j.step == guard.SERVE:
            body, content_type = encode_answer(req, out.draft)
            return Taken(mutations.immediate(200, body, content_type, Path.SKIPPED, {GUARD_HEADER: guard.header(j)}),
                         Facts(Path.SKIPPED, draft.model, {"draft": out.draft.usage}, **facts), status=200)
        verified = out.verified
        assert verified is not None  # guard.VERIFY: guarded() verified it
        served = draft.model if verified.path is Path.ACCEPTED else verified.verdict.model or req.model
        body, content_type = encode_answer(req, verified.response)
        return Taken(mutations.immediate(200, body, content_type, verified.path, {GUARD_HEADER: guard.header(j)}),
                     Facts(verified.path, served, {"draft": verified.draft.usage, "strong": verified.verdict.usage},
                           **facts), status=200)
