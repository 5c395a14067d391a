"""One HTTP request's trip through the sidecar: request headers and body, then (when we rewrite
the answer) response headers and body, each → a ProcessingResponse."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import AsyncIterator, Callable
from urllib.parse import urlsplit

from cascade_extproc import cascade, codecs
from cascade_extproc._proto import external_processor_pb2 as ep
from cascade_extproc.codecs import anthropic, openai, sse
from cascade_extproc.codecs.translate import ResponsePlan, ResponseTranslator, translate_json
from cascade_extproc.config import Config
from cascade_extproc.extproc import mutations
from cascade_extproc.extproc.mutations import Mode
from cascade_extproc.headers import ROUTE_HEADER
from cascade_extproc.metrics import Metrics
from cascade_extproc.providers import API_PATH, HttpProvider
from cascade_extproc.routing.router import Router
from cascade_extproc.types import Api, Path, Request, Response, Route, StreamError

log = logging.getLogger("cascade_extproc.requests")

# Client-facing paths (without query) → the API they speak. OpenAI clients use base URL
# http://envoy/openai/v1 so the two APIs never share a path.
CLIENT_PATHS = {"/v1/messages": Api.ANTHROPIC, "/openai/v1/chat/completions": Api.OPENAI}
# Credentials the strong provider accepts from the client; forwarded only to the strong provider.
STRONG_HEADERS = {
    Api.ANTHROPIC: ("x-api-key", "authorization", "anthropic-version", "anthropic-beta"),
    Api.OPENAI: ("authorization", "openai-organization", "openai-project"),
}
# The client's identity at the strong provider: never sent to the draft provider.
CLIENT_CREDENTIALS = ("x-api-key", "authorization", "openai-organization", "openai-project")
DEFAULT_ANTHROPIC_VERSION = "2023-06-01"


@dataclass(frozen=True)
class Runtime:
    """Everything built from one Config; replaced whole when the config changes."""

    cfg: Config
    router: Router
    providers: dict[tuple[Api, str], HttpProvider]  # (client api, "draft" | "strong")


def api_for(method: str, path: str) -> Api | None:
    if method != "POST":
        return None
    return CLIENT_PATHS.get(path.split("?", 1)[0])


class Exchange:
    """State of one ext_proc stream (one HTTP request)."""

    def __init__(self, runtime: Runtime, metrics: Metrics):
        self.rt = runtime
        self.metrics = metrics
        self.headers: dict[str, str] = {}
        self.api: Api | None = None
        self.started = time.monotonic()
        self.plan: ResponsePlan | None = None  # set when the answer must be rewritten
        self._translator: ResponseTranslator | None = None
        self._response_mode = ""  # "stream" | "json" | "error"
        self._status = 0

    # ---- request ---------------------------------------------------------------------------

    def on_headers(self, msg: ep.HttpHeaders) -> ep.ProcessingResponse:
        self.headers = _headers(msg)
        self.api = api_for(self.headers.get(":method", ""), self.headers.get(":path", ""))
        if self.api is None:
            self._record(Path.DIRECT, "none", "not-a-model-call")
            return mutations.continue_headers(Path.DIRECT, skip_body=not msg.end_of_stream)
        if msg.end_of_stream:  # a model call without a body: let the provider answer it
            self._record(Path.DIRECT, self.api, "empty-body")
            return mutations.continue_headers(Path.DIRECT)
        return mutations.want_body_and_response_headers()

    async def on_body(self, msg: ep.HttpBody) -> AsyncIterator[ep.ProcessingResponse]:
        api = self.api
        if api is None:
            yield mutations.passthrough("request_body")
            return
        try:
            req = codecs.parse_request(api, msg.body, self.headers)
        except codecs.CodecError:
            # Not ours to judge: the provider answers malformed requests in its own words.
            self._record(Path.DIRECT, api, "unparsed-body")
            yield mutations.continue_body(Path.DIRECT)
            return
        try:
            decision = self.rt.router.decide(req, len(msg.body))
        except Exception:
            log.exception("routing failed")
            yield self._fallback(req, "router-error", "route")
            return
        if decision.route is Route.DIRECT:
            self._record(Path.DIRECT, api, decision.rule)
            yield mutations.continue_body(Path.DIRECT, _strong_fix(req))
            return
        draft_key = self.rt.cfg.providers.for_api(api).draft.api_key()
        if not draft_key:
            yield self._fallback(req, decision.rule, "no-draft-key")
            return
        if decision.route is Route.SKIPPED:
            try:
                resp = self._skip(req, draft_key)
            except Exception:
                log.exception("skipped-path rewrite failed")
                yield self._fallback(req, decision.rule, "internal-error")
                return
            self._record(Path.SKIPPED, api, decision.rule)
            yield resp
            return
        cfg = self.rt.cfg.cascade
        # Envoy's message timeout is short; a cascade asks for what it needs, no more.
        yield mutations.extend_timeout(cfg.draft_timeout_s + cfg.verify_timeout_s + 5)
        yield await self._cascade(req, draft_key, decision.rule)

    def _skip(self, req: Request, draft_key: str) -> ep.ProcessingResponse:
        draft = self.rt.cfg.providers.for_api(req.api).draft
        draft_api = draft.api(req.api)
        body = cascade.draft_body(req, draft_api, draft.model, stream=req.stream)
        query = urlsplit(self.headers.get(":path", "")).query
        path = urlsplit(draft.base_url).path.rstrip("/") + API_PATH[draft_api] + (f"?{query}" if query else "")
        headers = {ROUTE_HEADER: f"draft-{req.api}", ":path": path, **_draft_auth(req, draft_api, draft_key)}
        remove = [h for h in CLIENT_CREDENTIALS if h not in headers]
        tag = req.api is Api.ANTHROPIC and (draft_api is not req.api or "thinking" in req.body)
        if draft_api is not req.api or tag:
            include_usage = bool((req.body.get("stream_options") or {}).get("include_usage"))
            self.plan = ResponsePlan(req.api, draft_api, tag, include_usage, int(time.time()))
        return mutations.reroute_body(body, headers, remove)

    async def _cascade(self, req: Request, draft_key: str, rule: str) -> ep.ProcessingResponse:
        cfg = self.rt.cfg
        draft = cfg.providers.for_api(req.api).draft
        call = cascade.CascadeCall(
            draft=self.rt.providers[(req.api, "draft")],
            draft_model=draft.model,
            draft_headers=_draft_auth(req, draft.api(req.api), draft_key),
            strong=self.rt.providers[(req.api, "strong")],
            strong_headers={k: req.headers[k] for k in STRONG_HEADERS[req.api] if k in req.headers},
            draft_timeout_s=cfg.cascade.draft_timeout_s,
            verify_timeout_s=cfg.cascade.verify_timeout_s,
        )
        t0 = time.monotonic()
        try:
            outcome = await cascade.run(req, call)
        except cascade.CascadeError as exc:
            if exc.draft is not None and cfg.cascade.on_verify_failure == "serve_draft":
                log.warning("verification failed (%s); serving the unverified draft", exc)
                self.metrics.fallbacks.labels("verify-failed-served-draft").inc()
                self._record(Path.SKIPPED, req.api, rule)
                body, content_type = _encode(req, exc.draft)
                return mutations.immediate(200, body, content_type, Path.SKIPPED)
            log.warning("cascade %s failed: %s; falling back to the strong model", exc.stage, exc)
            return self._fallback(req, rule, f"{exc.stage}-failed")
        except Exception:
            log.exception("cascade crashed; falling back to the strong model")
            return self._fallback(req, rule, "internal-error")
        self.metrics.cascade_seconds.labels(str(outcome.path)).observe(time.monotonic() - t0)
        self._record(outcome.path, req.api, rule)
        body, content_type = _encode(req, outcome.response)
        return mutations.immediate(200, body, content_type, outcome.path)

    def _fallback(self, req: Request, rule: str, reason: str) -> ep.ProcessingResponse:
        self.metrics.fallbacks.labels(reason).inc()
        self._record(Path.FALLBACK, req.api, rule)
        return mutations.continue_body(Path.FALLBACK, _strong_fix(req))

    # ---- response (only when self.plan is set) ----------------------------------------------

    def on_response_headers(self, msg: ep.HttpHeaders) -> ep.ProcessingResponse:
        if self.plan is None:
            return mutations.passthrough("response_headers")
        headers = _headers(msg)
        self._status = int(headers.get(":status", "0") or 0)
        self._translator = ResponseTranslator(self.plan)
        # The body changes size: Envoy refuses a mutated body that disagrees with content-length.
        if self._status >= 300:
            if not self.plan.translating:
                return mutations.response_headers(Mode.NONE)
            self._response_mode = "error"
            return mutations.response_headers(Mode.BUFFERED, {"content-type": codecs.CONTENT_TYPE_JSON},
                                              ["content-length"])
        if headers.get("content-type", "").startswith("text/event-stream"):
            self._response_mode = "stream"
            return mutations.response_headers(Mode.STREAMED, {"content-type": sse.CONTENT_TYPE},
                                              ["content-length"])
        self._response_mode = "json"
        return mutations.response_headers(Mode.BUFFERED, {"content-type": codecs.CONTENT_TYPE_JSON},
                                          ["content-length"])

    def on_response_body(self, msg: ep.HttpBody) -> ep.ProcessingResponse:
        if self.plan is None or self._translator is None:
            return mutations.passthrough("response_body")
        if self._response_mode == "stream":
            try:
                return mutations.response_body(self._translator.stream_chunk(msg.body, msg.end_of_stream))
            except Exception:
                # Mid-stream there is no way back; end the stream the client's way.
                log.exception("stream translation failed")
                return mutations.response_body(_stream_error(self.plan))
        if self._response_mode == "error":
            return mutations.response_body(self._translator.error_body(self._status, msg.body))
        return mutations.response_body(translate_json(self.plan, msg.body))

    def _record(self, path: Path, api: Api | str, rule: str) -> None:
        self.metrics.requests.labels(str(path), str(api), rule).inc()
        log.info("request path=%s api=%s rule=%s decided_ms=%.1f", path, api, rule,
                 (time.monotonic() - self.started) * 1000)


def _headers(msg: ep.HttpHeaders) -> dict[str, str]:
    return {h.key.lower(): h.raw_value.decode("utf-8", "replace") or h.value for h in msg.headers.headers}


def _strong_fix(req: Request) -> bytes | None:
    """A corrected body when the history holds blocks the strong provider would refuse."""
    body = cascade.strong_body(req)
    return None if body is req.raw else body


def _draft_auth(req: Request, draft_api: Api, key: str) -> dict[str, str]:
    """The sidecar's own draft credentials, in the draft API's header."""
    if draft_api is Api.ANTHROPIC:
        return {"x-api-key": key,
                "anthropic-version": req.headers.get("anthropic-version", DEFAULT_ANTHROPIC_VERSION)}
    return {"authorization": f"Bearer {key}"}


def _stream_error(plan: ResponsePlan) -> bytes:
    enc = anthropic.StreamEncoder() if plan.client is Api.ANTHROPIC else openai.StreamEncoder(plan.created, False)
    return enc.encode(StreamError(502, "the draft provider's stream could not be translated"))


def _encode(req: Request, resp: Response) -> tuple[bytes, str]:
    if req.api is Api.ANTHROPIC:
        if req.stream:
            return anthropic.encode_sse(resp), sse.CONTENT_TYPE
        return anthropic.encode_json(resp), codecs.CONTENT_TYPE_JSON
    created = int(time.time())
    if req.stream:
        include_usage = bool((req.body.get("stream_options") or {}).get("include_usage"))
        return openai.encode_sse(resp, created, include_usage), sse.CONTENT_TYPE
    return openai.encode_json(resp, created), codecs.CONTENT_TYPE_JSON


def runtime_from(cfg: Config, session, make_provider: Callable = HttpProvider) -> Runtime:
    providers = {}
    for api in Api:
        pair = cfg.providers.for_api(api)
        for role in ("draft", "strong"):
            prov = getattr(pair, role)
            providers[(api, role)] = make_provider(prov.api(api), prov.base_url, session)
    return Runtime(cfg=cfg, router=Router.from_config(cfg), providers=providers)
