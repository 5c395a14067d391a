"""The cascade path: the draft answers, the strong model verifies (cascade/run.py), and the server
answers Envoy itself with an ImmediateResponse: the draft (accepted) or the strong model's own
answer (enhanced). Any failure falls back to the strong model, or, under
`on_verify_failure: serve_draft`, serves the unverified draft when only verification failed."""
from __future__ import annotations

import logging

from cascade_extproc.cascade.run import CascadeCall, CascadeError, run
from cascade_extproc.extproc import mutations
from cascade_extproc.extproc.credentials import draft_auth, strong_headers
from cascade_extproc.extproc.paths.base import FallBack, Facts, Pending, Report, Runtime, Taken, encode_answer
from cascade_extproc.metering.ledger import Ledger
from cascade_extproc.types import Decision, Path, Request

log = logging.getLogger("cascade_extproc.handler")


class CascadePath:
    def __init__(self, rt: Runtime, ledger: Ledger, report: Report):
        self.rt = rt
        self.metrics = ledger.metrics

    def take(self, req: Request, decision: Decision, draft_key: str) -> Pending:
        if self.rt.cascade_slots.locked():
            # Overloaded: the request passes through rather than queueing or failing.
            raise FallBack("overload")
        cfg = self.rt.cfg.cascade
        # Envoy's message timeout is short; a cascade asks for what it needs, no more.
        return Pending(cfg.draft_timeout_s + cfg.verify_timeout_s + 5, lambda: self._run(req, draft_key))

    def _timed(self, provider: str, call: str, seconds: float) -> None:
        self.metrics.provider_duration.labels(provider, call).observe(seconds)

    async def _run(self, req: Request, draft_key: str) -> Taken:
        cfg = self.rt.cfg
        draft = cfg.providers.for_api(req.api).draft
        call = CascadeCall(
            draft=self.rt.providers[(req.api, "draft")],
            draft_model=draft.model,
            draft_headers=draft_auth(req, draft.api(req.api), draft_key),
            strong=self.rt.providers[(req.api, "strong")],
            strong_headers=strong_headers(req),
            draft_timeout_s=cfg.cascade.draft_timeout_s,
            verify_timeout_s=cfg.cascade.verify_timeout_s,
            on_call=self._timed,
            draft_max_tokens=cfg.cascade.draft_max_tokens,
            detect_repetition=cfg.cascade.detect_repetition,
        )
        async with self.rt.cascade_slots:
            try:
                outcome = await run(req, call)
            except CascadeError as exc:
                if exc.draft is not None and cfg.cascade.on_verify_failure == "serve_draft":
                    log.warning("verification failed (%s); serving the unverified draft", exc)
                    body, content_type = encode_answer(req, exc.draft)
                    return Taken(mutations.immediate(200, body, content_type, Path.SKIPPED),
                                 Facts(Path.SKIPPED, draft.model, {"draft": exc.draft.usage},
                                       fallback_reason="verify-failed-served-draft"), status=200)
                log.warning("cascade %s failed: %s; falling back to the strong model", exc.stage, exc)
                raise FallBack(exc.reason, {"draft": exc.spent.usage} if exc.spent else None) from None
            except Exception:
                log.exception("cascade crashed; falling back to the strong model")
                raise FallBack("internal-error") from None
        served = draft.model if outcome.path is Path.ACCEPTED else outcome.verdict.model or req.model
        body, content_type = encode_answer(req, outcome.response)
        return Taken(mutations.immediate(200, body, content_type, outcome.path),
                     Facts(outcome.path, served, {"draft": outcome.draft.usage, "strong": outcome.verdict.usage}),
                     status=200)
