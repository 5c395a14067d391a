"""The shell of one HTTP request's trip through the sidecar: parse → decide → record → fallback →
answer side → finish. Its body (with the headers we read) first, then, if we asked to see it, the
answer's headers and body, each → a ProcessingResponse; and, at the end, one record in the ledger.

What happens to a request in between is its path's (paths/): the route → path table below picks
one. Direct and fallback stay here, because every path falls back."""
from __future__ import annotations

import logging
import time
from typing import AsyncIterator

from cascade_extproc import codecs
from cascade_extproc._proto import external_processor_pb2 as ep
from cascade_extproc.cascade.bodies import strong_body
from cascade_extproc.extproc import mutations
from cascade_extproc.extproc.access_log import AwaitingLog, Logged
from cascade_extproc.extproc.credentials import client_credentials
from cascade_extproc.extproc.paths import (AnswerSide, CascadePath, Facts, FallBack, PathFactory, Pending, Runtime,
                                           ShadowPath, SkipPath, Taken)
from cascade_extproc.extproc.paths.base import ask_usage, needs_usage_chunk
from cascade_extproc.extproc.response import ResponseSide, logged_usage
from cascade_extproc.headers import API_HEADER, CLIENT_PATHS, METADATA_NAMESPACE, METER_KEY, PROVIDER_PATHS, REQUEST_ATTRIBUTES
from cascade_extproc.metering import tracing
from cascade_extproc.metering.ledger import Ledger, RequestRecord
from cascade_extproc.metering.prices import request_costs
from cascade_extproc.types import Api, Decision, Path, Request, Route, Usage

log = logging.getLogger("cascade_extproc.handler")

# The router's route → the path that serves it. Shadow mode (cfg.mode) takes every request instead.
PATHS: dict[Route, PathFactory] = {Route.SKIPPED: SkipPath, Route.CASCADE: CascadePath}


def api_for(method: str, path: str, captured_api: str = "") -> Api | None:
    if method != "POST":
        return None
    bare = path.split("?", 1)[0]
    if captured_api in ("anthropic", "openai"):
        api = Api(captured_api)
        return api if bare == PROVIDER_PATHS[api] else None
    return CLIENT_PATHS.get(bare)


def headers_from(attributes) -> dict[str, str]:
    """The request headers Envoy sent as request_attributes (ProcessingRequest.attributes)."""
    out: dict[str, str] = {}
    for struct in attributes.values():
        for expr, value in struct.fields.items():
            name = REQUEST_ATTRIBUTES.get(expr)
            if name is not None and value.WhichOneof("kind") == "string_value":
                out[name] = value.string_value
    return out


class Exchange:
    """State of one ext_proc stream (one model call)."""

    def __init__(self, runtime: Runtime, ledger: Ledger, headers: dict[str, str],
                 awaiting: AwaitingLog | None = None):
        """`awaiting`: where a record waits for Envoy's access log (metering off the critical
        path); without it, the answers to meter are read here, as they pass."""
        self.rt = runtime
        self.awaiting = awaiting
        self._logged = False  # the record waits for Envoy's access log entry
        self.ledger = ledger
        self.headers = headers
        self.api: Api | None = api_for(headers.get(":method", ""), headers.get(":path", ""),
                                       headers.get(API_HEADER, ""))
        self.started = time.monotonic()
        self.record: RequestRecord | None = None
        self.req: Request | None = None
        self.answer: AnswerSide | None = None  # set when we watch the answer on its way back
        self.decision: Decision | None = None  # the router's, with the conversation it continues
        self._recorded = False
        self.trace = tracing.begin(headers)  # None: tracing off

    # ---- request ---------------------------------------------------------------------------

    def _pass(self, api: Api | str, rule: str) -> ep.ProcessingResponse:
        """Leave the request alone, unread."""
        self.record = self._new_record(api, rule, "", Facts(Path.DIRECT))
        self.finish()
        return mutations.continue_body(Path.DIRECT)

    async def on_body(self, msg: ep.HttpBody) -> AsyncIterator[ep.ProcessingResponse]:
        api = self.api
        if api is None:
            yield self._pass("none", "not-a-model-call")
            return
        encoding = self.headers.get("content-encoding", "identity").lower()
        if encoding not in ("", "identity"):  # compressed: not ours to read, the provider's to judge
            yield self._pass(api, "encoded-body")
            return
        if "json" not in self.headers.get("content-type", "application/json").lower():
            yield self._pass(api, "not-json")
            return
        try:
            req = codecs.parse_request(api, msg.body, self.headers)
        except codecs.CodecError:
            # Not ours to judge: the provider answers malformed requests in its own words.
            yield self._pass(api, "unparsed-body")
            return
        self.req = req
        try:
            decision = self.decision = self.rt.router.decide(req, len(msg.body))
        except Exception:
            log.exception("routing failed")
            yield self._fallback(req, "router-error", "route")
            return
        if self.trace is not None:
            tracing.decided(decision)
        draft_key = ""
        if self.rt.cfg.mode == "shadow":
            path = ShadowPath(self.rt, self.ledger, self._report)
        else:
            if decision.route is not Route.DIRECT and not client_credentials(req):
                # Not served at the sidecar's expense: the strong provider answers it (its 401).
                decision = Decision(Route.DIRECT, "no-client-credentials", decision.features,
                                    decision.all_features, decision.conversation)
            if decision.route is Route.DIRECT:
                yield self._take(req, decision.rule, self._to_strong(req, Facts(Path.DIRECT)))
                return
            draft_key = self.rt.cfg.providers.for_api(api).draft.api_key() or ""
            if not draft_key:
                yield self._fallback(req, decision.rule, "no-draft-key")
                return
            factory = PATHS.get(decision.route)
            if factory is None:  # a route no path serves (yet): the strong model answers
                yield self._fallback(req, decision.rule, "no-path")
                return
            path = factory(self.rt, self.ledger, self._report)
        try:
            step = path.take(req, decision, draft_key)
            if isinstance(step, Pending):
                yield mutations.extend_timeout(step.wait_s)
                step = await step.run()
        except FallBack as fb:
            yield self._fallback(req, decision.rule, fb.reason, fb.usage)
            return
        yield self._take(req, decision.rule, step)

    def _to_strong(self, req: Request, facts: Facts) -> Taken:
        """Continue to the strong provider: the client's bytes unless the history needs fixing
        or we must ask for usage; the answer is metered on the way back."""
        usage_injected = needs_usage_chunk(req, self.rt.cfg)
        try:
            body = strong_body(req)
            if usage_injected:
                body = ask_usage(body)
        except Exception:  # an edit we cannot make safely: send the client's own bytes
            log.exception("could not adjust the request for the strong provider; sending it as it is")
            body, usage_injected = req.raw, False
        response = mutations.continue_body(facts.path, None if body is req.raw else body, usage_injected=usage_injected)
        return Taken(response, facts, meter=True)

    def _fallback(self, req: Request, rule: str, reason: str,
                  spent: dict[str, Usage] | None = None) -> ep.ProcessingResponse:
        """The strong model answers the client's request; `spent`: what the path used before (a
        draft's usage), recorded beside the strong model's."""
        facts = Facts(Path.FALLBACK, usage=dict(spent or {}), fallback_reason=reason)
        return self._take(req, rule, self._to_strong(req, facts))

    def _take(self, req: Request, rule: str, taken: Taken) -> ep.ProcessingResponse:
        """Record what the path did, watch the answer it asked to, and hand Envoy its response."""
        self.record = self._new_record(req.api, rule, req.model, taken.facts)
        return self._answered(taken)

    def _answered(self, taken: Taken) -> ep.ProcessingResponse:
        self.answer = taken.answer
        if taken.meter and taken.answer is None and self.req is not None and self.rt.cfg.metering:
            if self.awaiting is not None:  # Envoy meters it; its access log finishes the record
                token = self.awaiting.expect(self._on_logged)
                self._logged = True
                taken.response.dynamic_metadata.fields[METADATA_NAMESPACE].struct_value.update({METER_KEY: token})
            else:  # read the answer here, as it passes
                self.answer = ResponseSide(self.req.api)
        if taken.status:
            self.finish(taken.status)
        return taken.response

    @property
    def wants_answer(self) -> bool:
        """Whether the server reads (or changes) the answer: if not, the stream ends with the body's answer."""
        return self.answer is not None

    def _on_logged(self, logged: Logged | None) -> None:
        """Envoy's access log entry for this request (None: it never came): finish the record."""
        rec = self.record
        if rec is None or self._recorded:
            return
        if logged is not None and self.req is not None:
            usage, model = logged_usage(self.req.api, logged)
            if usage is not None:
                rec.usage["strong"] = usage
                if model:
                    rec.served_model = model
        self._logged = False
        latency = logged.latency_s if logged is not None else None
        self._finish_record(logged.status if logged is not None else 0, latency_s=latency)

    # ---- response --------------------------------------------------------------------------

    async def on_response_headers(self, msg: ep.HttpHeaders) -> AsyncIterator[ep.ProcessingResponse]:
        side = self.answer
        if side is None:
            yield mutations.passthrough("response_headers")
            return
        step = side.on_headers(msg)
        if isinstance(step, Pending):  # the path answers from here after all (the relay unreachable)
            yield mutations.extend_timeout(step.wait_s)
            rec, self.answer = self.record, None
            if rec is not None and step.facts is not None:
                _apply(rec, step.facts)
            taken = await step.run()
            if rec is not None:
                _apply(rec, taken.facts)
            yield self._answered(taken)
            return
        yield self._seen(side, step)

    async def on_response_body(self, msg: ep.HttpBody) -> AsyncIterator[ep.ProcessingResponse]:
        side = self.answer
        if side is None:
            yield mutations.passthrough("response_body")
            return
        yield self._seen(side, side.on_body(msg))

    def _seen(self, side: AnswerSide, out: ep.ProcessingResponse) -> ep.ProcessingResponse:
        """The answer side has seen a part of the answer: once it is over, so is the record."""
        if side.finished:
            self.finish(side.status)
        return out

    # ---- the record ----------------------------------------------------------------------------

    def _new_record(self, api: Api | str, rule: str, model: str, facts: Facts) -> RequestRecord:
        rec = RequestRecord(request_id=self.headers.get("x-request-id", ""), api=str(api), path=facts.path,
                            rule=rule, model=model, trace=self.trace)
        _apply(rec, facts)
        return rec

    def _report(self, facts: Facts, status: int) -> None:
        """What a path learned after the body phase (the relay served a skipped request): record it."""
        if self.record is None:
            return
        _apply(self.record, facts)
        self._recorded = False
        self._finish_record(status, settle=False)

    def finish(self, status: int = 0) -> None:
        """Complete the record (usage, costs, latency) and hand it to the ledger, once. A skipped
        request's record is the relay's to finish, unless the relay never got it."""
        self._finish_record(status)

    def _finish_record(self, status: int = 0, settle: bool = True, latency_s: float | None = None) -> None:
        if self._recorded or self.record is None or self._logged:
            return  # (_logged: Envoy's access log finishes it)
        rec, side = self.record, self.answer
        if settle and side is not None and not side.settle(rec):
            return  # the relay has it: it reports when done
        self._recorded = True
        rec.status = status or (side.status if side else 0)
        rec.latency_s = latency_s if latency_s is not None and latency_s >= 0 else time.monotonic() - self.started
        if self.req is not None:
            draft = self.rt.cfg.providers.for_api(self.req.api).draft
            rec.cost_usd, rec.baseline_usd = request_costs(
                rec.path, self.rt.prices, self.req.model, draft.model, rec.usage.get("strong"),
                rec.usage.get("draft"), self.rt.cfg.router.economics.instruction_tokens)
            if self.decision is not None:
                # The live baseline from the cache model, and the conversation's caches updated
                # from what the providers reported (docs/metrics.md, "Cost and baseline").
                try:
                    base = self.rt.router.settle(self.decision, self.req, rec.path, rec.usage.get("strong"),
                                                 rec.usage.get("draft"))
                except Exception:
                    log.exception("the cache model failed; the request keeps its plain baseline")
                    base = None
                if base is not None and base >= 0 and rec.cost_usd is not None:
                    rec.baseline_usd = base
        self.ledger.record(rec)


def _apply(rec: RequestRecord, facts: Facts) -> None:
    """What a path says happened, into the request's one record."""
    rec.path, rec.served_model, rec.usage = facts.path, facts.served_model or rec.model, dict(facts.usage)
    rec.fallback_reason, rec.error, rec.shadow_route = facts.fallback_reason, facts.error, facts.shadow_route
