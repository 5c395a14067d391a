"""The skipped path, on the ext_proc side: the request goes to the relay (cascade/skipped.py asks
the draft and streams its answer back through Envoy). This server keeps the request under a
ticket, and Envoy takes the relay route with it and an empty body. The relay finishes the record;
if Envoy cannot reach it, the strong model answers from here (path fallback)."""
from __future__ import annotations

import logging
import time

from cascade_extproc import codecs
from cascade_extproc._proto import external_processor_pb2 as ep
from cascade_extproc.cascade import draft_checks
from cascade_extproc.cascade.bodies import draft_body, strong_body
from cascade_extproc.cascade.skipped import SkipCall
from cascade_extproc.codecs.translate import ResponsePlan
from cascade_extproc.extproc import mutations
from cascade_extproc.extproc.credentials import draft_auth, strong_headers
from cascade_extproc.extproc.paths.base import (FallBack, Facts, Pending, Report, Runtime, Taken, ask_usage,
                                                encode_answer, needs_usage_chunk)
from cascade_extproc.headers import PATH_HEADER
from cascade_extproc.metering.ledger import Ledger, RequestRecord
from cascade_extproc.providers import ProviderError
from cascade_extproc.types import Api, Decision, Path, Request

log = logging.getLogger("cascade_extproc.handler")


class SkipPath:
    def __init__(self, rt: Runtime, ledger: Ledger, report: Report):
        self.rt = rt
        self.report = report

    def take(self, req: Request, decision: Decision, draft_key: str) -> Taken:
        try:
            return self._take(req, draft_key)
        except Exception:
            log.exception("skipped-path rewrite failed")
            raise FallBack("internal-error") from None

    def _take(self, req: Request, draft_key: str) -> Taken:
        cfg = self.rt.cfg
        draft = cfg.providers.for_api(req.api).draft
        draft_api = draft.api(req.api)
        budget = cfg.cascade.draft_max_tokens
        body = draft_body(req, draft_api, draft.model, stream=req.stream, budget=budget)
        usage_injected = needs_usage_chunk(req, cfg)
        if usage_injected and draft_api is req.api:
            body = ask_usage(body)
        strong = strong_body(req)
        if usage_injected:
            strong = ask_usage(strong)
        # The draft's reasoning never reaches the client (provenance): it is asked without
        # thinking, and whatever it reasons anyway (a reasoning model does, asked or not) is
        # dropped on the way: its signature would break the client's next strong turn.
        strip = draft_api is not req.api or draft_api is Api.ANTHROPIC
        plan = ResponsePlan(req.api, draft_api, strip, req.wants_usage_chunk, int(time.time()))
        call = SkipCall(
            req=req, body=body, plan=plan,
            draft=self.rt.providers[(req.api, "draft")], draft_headers=draft_auth(req, draft_api, draft_key),
            strong=self.rt.providers[(req.api, "strong")], strong_headers=strong_headers(req),
            strong_body=strong, timeout_s=cfg.cascade.draft_timeout_s,
            strong_timeout_s=cfg.cascade.verify_timeout_s, on_done=self._done, served_model=draft.model,
            deadline=time.monotonic() + cfg.cascade.skipped_max_s, limited=draft_checks.limited(req, budget),
            detect_repetition=cfg.cascade.detect_repetition)
        ticket = self.rt.relay.register(call)
        return Taken(mutations.to_relay(ticket, usage_injected=usage_injected),
                     Facts(Path.SKIPPED, served_model=draft.model), answer=RelayWatch(self.rt, call, ticket))

    def _done(self, call: SkipCall) -> None:
        """The relay served the request: with the draft, or the strong model when the draft failed first."""
        self.report(Facts(call.path, call.served_model, call.usage, call.reason, call.error), call.status)


class RelayWatch:
    """The relay's answer on its way back through Envoy. The relay meters it and finishes the
    record; this side only names the path when the strong model answered, and recovers when
    Envoy could not reach the relay at all."""

    finished = False  # the relay's to finish

    def __init__(self, rt: Runtime, call: SkipCall, ticket: str):
        self.rt = rt
        self.call = call
        self.ticket = ticket
        self.status = 0

    def on_headers(self, msg: ep.HttpHeaders) -> ep.ProcessingResponse | Pending:
        call = self.call
        if not call.taken and _status(msg) >= 400:
            # Envoy could not reach the relay (its own error reply): answer from the strong model.
            self.rt.relay.discard(self.ticket)
            reason = f"relay-http-{_status(msg)}"
            return Pending(self.rt.cfg.cascade.verify_timeout_s + 5, lambda: self._recover(reason),
                           Facts(Path.FALLBACK, fallback_reason=reason))
        # The relay answered: with the draft, or, when the draft failed first, the strong model.
        return mutations.response_headers(mutations.Mode.NONE,
                                          {PATH_HEADER: str(call.path)} if call.path is not Path.SKIPPED else None)

    def on_body(self, msg: ep.HttpBody) -> ep.ProcessingResponse:
        return mutations.passthrough("response_body")

    def settle(self, rec: RequestRecord) -> bool:
        if self.call.taken:
            return False  # the relay has it, and reports it when it is done
        if self.rt.relay.discard(self.ticket) is not None:  # the client left before Envoy routed it
            rec.error, self.status = "client-gone", 499
        return True

    async def _recover(self, reason: str) -> Taken:
        """The relay could not be reached: answer from the strong model ourselves, so an
        answerable request never turns into an error."""
        req = self.call.req
        try:
            answer = await self.rt.providers[(req.api, "strong")].complete(
                strong_body(req), strong_headers(req), self.rt.cfg.cascade.verify_timeout_s)
        except ProviderError as exc:
            status = exc.status or 502
            # The strong provider's own error, in the client's format.
            body = codecs.for_api(req.api).error_body(status, exc.message or f"upstream error: {exc.reason}")
            return Taken(mutations.immediate(status, body, codecs.CONTENT_TYPE_JSON, Path.FALLBACK),
                         Facts(Path.FALLBACK, fallback_reason=reason), status=status)
        body, content_type = encode_answer(req, answer)
        return Taken(mutations.immediate(200, body, content_type, Path.FALLBACK),
                     Facts(Path.FALLBACK, answer.model or req.model, {"strong": answer.usage}, reason), status=200)


def _status(msg: ep.HttpHeaders) -> int:
    for h in msg.headers.headers:
        if h.key == ":status":
            return int((h.raw_value.decode() or h.value or "0"))
    return 0
