"""One HTTP request's trip through the sidecar: its body (with the headers we read), then, if
we asked to see it, the answer's headers and body, each → a ProcessingResponse; and, at the end,
one record in the ledger."""
from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import AsyncIterator, Protocol

from cascade_extproc import codecs
from cascade_extproc.cascade import verify
from cascade_extproc.cascade.bodies import draft_body, strong_body
from cascade_extproc.cascade.run import CascadeCall, CascadeError, run
from cascade_extproc.cascade.skipped import SkipCall
from cascade_extproc._proto import external_processor_pb2 as ep
from cascade_extproc.codecs import splice, sse
from cascade_extproc.codecs.translate import ResponsePlan
from cascade_extproc.config import Config
from cascade_extproc.extproc import mutations
from cascade_extproc.extproc.response import ResponseSide
from cascade_extproc.headers import (API_HEADER, CLIENT_PATHS, DEFAULT_ANTHROPIC_VERSION, PATH_HEADER,
                                     PROVIDER_PATHS, REQUEST_ATTRIBUTES)
from cascade_extproc.metering.ledger import Ledger, RequestRecord
from cascade_extproc.metering.prices import PriceTable, request_costs
from cascade_extproc.providers import HttpProvider, ProviderError
from cascade_extproc.extproc.relay import Relay
from cascade_extproc.routing.router import Router
from cascade_extproc.types import Api, Decision, Path, Request, Response, Route

log = logging.getLogger("cascade_extproc.handler")

# Credentials the strong provider accepts from the client; forwarded only to the strong provider.
STRONG_HEADERS = {
    Api.ANTHROPIC: ("x-api-key", "authorization", "anthropic-version", "anthropic-beta"),
    Api.OPENAI: ("authorization", "openai-organization", "openai-project"),
}


class Runtime(Protocol):
    """What a request reads from the runtime that app.py builds from a Config (app.Runtime)."""

    cfg: Config
    router: Router
    prices: PriceTable
    providers: dict[tuple[Api, str], HttpProvider]  # (client api, "draft" | "strong")
    relay: Relay
    shadow_slots: asyncio.Semaphore
    cascade_slots: asyncio.Semaphore


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

    def __init__(self, runtime: Runtime, ledger: Ledger, headers: dict[str, str]):
        self.rt = runtime
        self.ledger = ledger
        self.headers = headers
        self.api: Api | None = api_for(headers.get(":method", ""), headers.get(":path", ""),
                                       headers.get(API_HEADER, ""))
        self.started = time.monotonic()
        self.record: RequestRecord | None = None
        self.req: Request | None = None
        self.response: ResponseSide | None = None  # set when we watch the answer
        self._strong_answer: asyncio.Future[Response | None] | None = None  # shadow comparisons
        self._skip_call: SkipCall | None = None  # skipped: the relay serves it and finishes the record
        self._ticket = ""
        self._recorded = False

    # ---- request ---------------------------------------------------------------------------

    def _pass(self, api: Api | str, rule: str) -> ep.ProcessingResponse:
        """Leave the request alone, unread."""
        self._start(api, Path.DIRECT, rule, "")
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
            self._start(api, Path.DIRECT, "unparsed-body", "")
            self.finish()
            yield mutations.continue_body(Path.DIRECT)
            return
        self.req = req
        try:
            decision = self.rt.router.decide(req, len(msg.body))
        except Exception:
            log.exception("routing failed")
            yield self._fallback(req, "router-error", "route")
            return
        if self.rt.cfg.mode == "shadow":
            yield self._shadow(req, decision)
            return
        if decision.route is not Route.DIRECT and not _client_credentials(req):
            # Not served at the sidecar's expense: the strong provider answers it (its 401).
            decision = Decision(Route.DIRECT, "no-client-credentials", decision.features)
        if decision.route is Route.DIRECT:
            self._start(api, Path.DIRECT, decision.rule, req.model)
            yield self._to_strong(req, Path.DIRECT)
            return
        draft_key = self.rt.cfg.providers.for_api(api).draft.api_key()
        if not draft_key:
            yield self._fallback(req, decision.rule, "no-draft-key")
            return
        if decision.route is Route.SKIPPED:
            try:
                resp = self._skip(req, decision.rule, draft_key)
            except Exception:
                log.exception("skipped-path rewrite failed")
                yield self._fallback(req, decision.rule, "internal-error")
                return
            yield resp
            return
        if self.rt.cascade_slots.locked():
            # Overloaded: the request passes through rather than queueing or failing.
            yield self._fallback(req, decision.rule, "overload")
            return
        cfg = self.rt.cfg.cascade
        # Envoy's message timeout is short; a cascade asks for what it needs, no more.
        yield mutations.extend_timeout(cfg.draft_timeout_s + cfg.verify_timeout_s + 5)
        async with self.rt.cascade_slots:
            yield await self._cascade(req, draft_key, decision.rule)

    def _to_strong(self, req: Request, path: Path) -> ep.ProcessingResponse:
        """Continue to the strong provider: the client's bytes unless the history needs fixing
        or we must ask for usage; the answer is metered on the way back."""
        ask_usage = _needs_usage_chunk(req, self.rt.cfg)
        try:
            body = strong_body(req)
            if ask_usage:
                body = _ask_usage(body)
        except Exception:  # an edit we cannot make safely: send the client's own bytes
            log.exception("could not adjust the request for the strong provider; sending it as it is")
            body, ask_usage = req.raw, False
        # Without metering there is nothing to read: Envoy then skips the answer's body for us.
        self.response = ResponseSide(req.api) if self.rt.cfg.metering else None
        return mutations.continue_body(path, None if body is req.raw else body, usage_injected=ask_usage)

    def _skip(self, req: Request, rule: str, draft_key: str) -> ep.ProcessingResponse:
        """Hand the request to the relay (cascade/skipped.py), which asks the draft and streams its answer
        back through Envoy: this server keeps the request under a ticket, Envoy takes the relay
        route with it and an empty body."""
        cfg = self.rt.cfg
        draft = cfg.providers.for_api(req.api).draft
        draft_api = draft.api(req.api)
        body = draft_body(req, draft_api, draft.model, stream=req.stream)
        ask_usage = _needs_usage_chunk(req, cfg)
        if ask_usage and draft_api is req.api:
            body = _ask_usage(body)
        strong = strong_body(req)
        if ask_usage:
            strong = _ask_usage(strong)
        # The draft's reasoning never reaches the client (provenance): it is asked without
        # thinking, and whatever it reasons anyway (a reasoning model does, asked or not) is
        # dropped on the way: its signature would break the client's next strong turn.
        strip = draft_api is not req.api or draft_api is Api.ANTHROPIC
        plan = ResponsePlan(req.api, draft_api, strip, req.wants_usage_chunk, int(time.time()))
        self._start(req.api, Path.SKIPPED, rule, req.model, served=draft.model)
        self._skip_call = SkipCall(
            req=req, body=body, plan=plan,
            draft=self.rt.providers[(req.api, "draft")], draft_headers=_draft_auth(req, draft_api, draft_key),
            strong=self.rt.providers[(req.api, "strong")], strong_headers=_strong_headers(req),
            strong_body=strong, timeout_s=cfg.cascade.draft_timeout_s,
            strong_timeout_s=cfg.cascade.verify_timeout_s, on_done=self._skip_done, served_model=draft.model)
        self._ticket = self.rt.relay.register(self._skip_call)
        return mutations.to_relay(self._ticket, usage_injected=ask_usage)

    def _skip_done(self, call: SkipCall) -> None:
        rec = self.record
        assert rec is not None
        rec.path, rec.usage, rec.served_model = call.path, call.usage, call.served_model
        rec.fallback_reason, rec.error = call.reason, call.error
        self._recorded = False
        self._finish_record(call.status)

    async def _cascade(self, req: Request, draft_key: str, rule: str) -> ep.ProcessingResponse:
        cfg = self.rt.cfg
        draft = cfg.providers.for_api(req.api).draft
        call = CascadeCall(
            draft=self.rt.providers[(req.api, "draft")],
            draft_model=draft.model,
            draft_headers=_draft_auth(req, draft.api(req.api), draft_key),
            strong=self.rt.providers[(req.api, "strong")],
            strong_headers=_strong_headers(req),
            draft_timeout_s=cfg.cascade.draft_timeout_s,
            verify_timeout_s=cfg.cascade.verify_timeout_s,
            on_call=self.ledger.metrics.provider_duration,
        )
        try:
            outcome = await run(req, call)
        except CascadeError as exc:
            if exc.draft is not None and cfg.cascade.on_verify_failure == "serve_draft":
                log.warning("verification failed (%s); serving the unverified draft", exc)
                self._start(req.api, Path.SKIPPED, rule, req.model, served=draft.model)
                assert self.record is not None
                self.record.fallback_reason = "verify-failed-served-draft"
                self.record.usage["draft"] = exc.draft.usage
                self.finish(200)
                body, content_type = _encode(req, exc.draft)
                return mutations.immediate(200, body, content_type, Path.SKIPPED)
            log.warning("cascade %s failed: %s; falling back to the strong model", exc.stage, exc)
            return self._fallback(req, rule, f"{exc.stage}-failed")
        except Exception:
            log.exception("cascade crashed; falling back to the strong model")
            return self._fallback(req, rule, "internal-error")
        served = draft.model if outcome.path is Path.ACCEPTED else outcome.verdict.model or req.model
        self._start(req.api, outcome.path, rule, req.model, served=served)
        assert self.record is not None
        self.record.usage = {"draft": outcome.draft.usage, "strong": outcome.verdict.usage}
        self.finish(200)
        body, content_type = _encode(req, outcome.response)
        return mutations.immediate(200, body, content_type, outcome.path)

    def _fallback(self, req: Request, rule: str, reason: str) -> ep.ProcessingResponse:
        self._start(req.api, Path.FALLBACK, rule, req.model)
        assert self.record is not None
        self.record.fallback_reason = reason
        return self._to_strong(req, Path.FALLBACK)

    def _shadow(self, req: Request, decision: Decision) -> ep.ProcessingResponse:
        """Decide, record what would have happened, change nothing."""
        self._start(req.api, Path.DIRECT, decision.rule, req.model)
        assert self.record is not None
        self.record.shadow_route = str(decision.route)
        shadow = self.rt.cfg.shadow
        sampled = decision.route is not Route.DIRECT and random.random() < shadow.sample_rate \
            and not self.rt.shadow_slots.locked()
        self.response = ResponseSide(req.api) if self.rt.cfg.metering or sampled else None
        if sampled:
            self._strong_answer = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().create_task(self._compare_with_draft(req, decision.rule))
        return mutations.continue_body(Path.DIRECT)

    async def _compare_with_draft(self, req: Request, rule: str) -> None:
        """Shadow sampling: ask the draft too, in the background, and score the agreement."""
        draft = self.rt.cfg.providers.for_api(req.api).draft
        key = draft.api_key()
        if not key or self._strong_answer is None:
            return
        async with self.rt.shadow_slots:
            try:
                body = draft_body(req, draft.api(req.api), draft.model, stream=False)
                answer = await self.rt.providers[(req.api, "draft")].complete(
                    body, _draft_auth(req, draft.api(req.api), key), self.rt.cfg.cascade.draft_timeout_s)
                strong = await asyncio.wait_for(self._strong_answer, self.rt.cfg.cascade.verify_timeout_s)
            except (ProviderError, asyncio.TimeoutError, codecs.CodecError):
                return
            if strong is not None:
                self.ledger.record_agreement(rule, verify.agree(answer, strong,
                                                                self.rt.cfg.shadow.agreement_threshold))

    # ---- response --------------------------------------------------------------------------

    async def on_response_headers(self, msg: ep.HttpHeaders) -> AsyncIterator[ep.ProcessingResponse]:
        call = self._skip_call
        if call is not None:
            if not call.taken and _status(msg) >= 400:
                # Envoy could not reach the relay (its own error reply): answer from the strong model.
                self.rt.relay.discard(self._ticket)
                async for resp in self._recover(f"relay-http-{_status(msg)}"):
                    yield resp
                return
            # The relay answered: with the draft, or, when the draft failed first, the strong model.
            yield mutations.response_headers(mutations.Mode.NONE,
                                             {PATH_HEADER: str(call.path)} if call.path is not Path.SKIPPED else None)
            return
        if self.response is None:
            yield mutations.passthrough("response_headers")
            return
        out = self.response.on_headers(msg)
        if self.response.finished:
            self.finish(self.response.status)
        yield out

    async def on_response_body(self, msg: ep.HttpBody) -> AsyncIterator[ep.ProcessingResponse]:
        if self.response is None:
            yield mutations.passthrough("response_body")
            return
        out = self.response.on_body(msg)
        if self.response.finished:
            self.finish(self.response.status)
        yield out

    async def _recover(self, reason: str) -> AsyncIterator[ep.ProcessingResponse]:
        """The relay could not be reached: answer from the strong model ourselves, so an
        answerable request never turns into an error."""
        req, rec = self.req, self.record
        assert req is not None and rec is not None
        timeout = self.rt.cfg.cascade.verify_timeout_s
        yield mutations.extend_timeout(timeout + 5)
        rec.path, rec.fallback_reason, rec.usage = Path.FALLBACK, reason, {}
        self._skip_call = None
        try:
            answer = await self.rt.providers[(req.api, "strong")].complete(strong_body(req),
                                                                          _strong_headers(req), timeout)
        except ProviderError as exc:
            status = exc.status or 502
            self.finish(status)
            # The strong provider's own error, in the client's format.
            yield mutations.immediate(status, codecs.for_api(req.api).error_body(status, exc.message or f"upstream error: {exc.reason}"),
                                      codecs.CONTENT_TYPE_JSON, Path.FALLBACK)
            return
        rec.usage["strong"], rec.served_model = answer.usage, answer.model or req.model
        self.finish(200)
        body, content_type = _encode(req, answer)
        yield mutations.immediate(200, body, content_type, Path.FALLBACK)

    # ---- the record ----------------------------------------------------------------------------

    def _start(self, api: Api | str, path: Path, rule: str, model: str, served: str = "") -> None:
        self.record = RequestRecord(request_id=self.headers.get("x-request-id", ""), api=str(api),
                                    path=path, rule=rule, model=model, served_model=served or model)

    def finish(self, status: int = 0) -> None:
        """Complete the record (usage, costs, latency) and hand it to the ledger, once. A skipped
        request's record is the relay's to finish, unless the relay never got it."""
        call = self._skip_call
        if call is not None and not self._recorded:
            if call.taken:
                return
            if self.rt.relay.discard(self._ticket) is not None:  # the client left before Envoy routed it
                assert self.record is not None
                self.record.error, status = "client-gone", 499
        self._finish_record(status)

    def _finish_record(self, status: int = 0) -> None:
        if self._recorded or self.record is None:
            return
        self._recorded = True
        rec, resp = self.record, self.response
        rec.status = status or (resp.status if resp else 0)
        rec.latency_s = time.monotonic() - self.started
        if resp is not None and resp.usage is not None:
            rec.usage["strong"] = resp.usage
            if resp.answer is not None and resp.answer.model:
                rec.served_model = resp.answer.model
        if self._strong_answer is not None and not self._strong_answer.done():
            self._strong_answer.set_result(resp.answer if resp else None)
        if self.req is not None:
            draft = self.rt.cfg.providers.for_api(self.req.api).draft
            rec.cost_usd, rec.baseline_usd = request_costs(
                rec.path, self.rt.prices, self.req.model, draft.model, rec.usage.get("strong"),
                rec.usage.get("draft"), self.rt.cfg.router.economics.instruction_tokens)
        self.ledger.record(rec)


def _status(msg: ep.HttpHeaders) -> int:
    for h in msg.headers.headers:
        if h.key == ":status":
            return int((h.raw_value.decode() or h.value or "0"))
    return 0


def _client_credentials(req: Request) -> bool:
    """Whether the client sent what the strong provider authenticates it by."""
    keys = ("x-api-key", "authorization") if req.api is Api.ANTHROPIC else ("authorization",)
    return any(req.headers.get(k, "").strip() for k in keys)


def _strong_headers(req: Request) -> dict[str, str]:
    return {k: req.headers[k] for k in STRONG_HEADERS[req.api] if k in req.headers}


def _needs_usage_chunk(req: Request, cfg: Config) -> bool:
    """An OpenAI stream reports usage only when asked; we ask to meter it (and Envoy's usage
    filter hides the answer from the client)."""
    return (cfg.metering and req.api is Api.OPENAI and req.stream
            and not req.wants_usage_chunk)


def _ask_usage(body: bytes) -> bytes:
    return splice.replace_value(body, "stream_options", {"include_usage": True})


def _draft_auth(req: Request, draft_api: Api, key: str) -> dict[str, str]:
    """The sidecar's own draft credentials, in the draft API's header."""
    if draft_api is Api.ANTHROPIC:
        return {"x-api-key": key,
                "anthropic-version": req.headers.get("anthropic-version", DEFAULT_ANTHROPIC_VERSION)}
    return {"authorization": f"Bearer {key}"}


def _encode(req: Request, resp: Response) -> tuple[bytes, str]:
    codec, created = codecs.for_api(req.api), int(time.time())
    if req.stream:
        return codec.encode_sse(resp, created, req.wants_usage_chunk), sse.CONTENT_TYPE
    return codec.encode_json(resp, created), codecs.CONTENT_TYPE_JSON

