"""Shadow mode (`mode: shadow`): decide, record what would have happened, change nothing. The
request goes on to the strong provider untouched; for a sample of would-be draft turns the draft
is asked too, in the background, and its answer scored against the strong model's."""
from __future__ import annotations

import asyncio
import random

from cascade_extproc import codecs
from cascade_extproc.cascade import verify
from cascade_extproc.cascade.bodies import draft_body
from cascade_extproc.extproc import mutations
from cascade_extproc.extproc.credentials import draft_auth
from cascade_extproc.extproc.paths.base import Facts, Report, Runtime, Taken
from cascade_extproc.extproc.response import ResponseSide
from cascade_extproc.metering.ledger import Ledger
from cascade_extproc.providers import ProviderError
from cascade_extproc.types import Decision, Path, Request, Response, Route


class ShadowPath:
    def __init__(self, rt: Runtime, ledger: Ledger, report: Report):
        self.rt = rt
        self.ledger = ledger

    def take(self, req: Request, decision: Decision, draft_key: str) -> Taken:
        shadow = self.rt.cfg.shadow
        sampled = decision.route is not Route.DIRECT and random.random() < shadow.sample_rate \
            and not self.rt.shadow_slots.locked()
        # Only a sampled request's answer is read here (the comparison needs the strong answer);
        # the others are metered by Envoy (Taken.meter).
        side = ResponseSide(req.api) if sampled else None
        if sampled and side is not None:
            loop = asyncio.get_running_loop()
            strong_answer: asyncio.Future[Response | None] = loop.create_future()
            side.on_settled = lambda answer: strong_answer.done() or strong_answer.set_result(answer)
            loop.create_task(self._compare_with_draft(req, decision.rule, strong_answer))
        return Taken(mutations.continue_body(Path.DIRECT), Facts(Path.DIRECT, shadow_route=str(decision.route)),
                     answer=side, meter=side is None)

    async def _compare_with_draft(self, req: Request, rule: str, strong_answer: asyncio.Future[Response | None]) -> None:
        """Shadow sampling: ask the draft too, in the background, and score the agreement."""
        cfg = self.rt.cfg
        draft = cfg.providers.for_api(req.api).draft
        key = draft.api_key()
        if not key:
            return
        async with self.rt.shadow_slots:
            try:
                body = draft_body(req, draft.api(req.api), draft.model, stream=False,
                                  budget=cfg.cascade.draft_max_tokens)
                answer = await self.rt.providers[(req.api, "draft")].complete(
                    body, draft_auth(req, draft.api(req.api), key), cfg.cascade.draft_timeout_s)
                strong = await asyncio.wait_for(strong_answer, cfg.cascade.verify_timeout_s)
            except (ProviderError, asyncio.TimeoutError, codecs.CodecError):
                return
            if strong is not None:
                self.ledger.record_agreement(rule, verify.agree(answer, strong, cfg.shadow.agreement_threshold))
