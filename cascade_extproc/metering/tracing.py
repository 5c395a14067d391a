"""Traces: one OpenTelemetry span per model call the sidecar handles, its provider calls as children.

Off by default (`tracing.enabled`), and then free: no provider is wrapped, no span is made, a
request costs a few checks of a module global. On, a request's span is written once, when its record
is finished (the ledger hands it here with the metrics and the log line), from that record: path,
rule, tokens, cost, baseline, served model, fallback reason. Its timing comes from the exchange
(begin) and each provider call the sidecar made for it (the draft, the verify call, the relay's
draft, the strong model's answer when the draft failed) is a child span timed around the call
itself, named and attributed after the OpenTelemetry GenAI semantic conventions (`gen_ai.*`),
so LLM observability tools show them as model calls.

A request's provider calls find its trace through a context variable the exchange sets (the
relay, serving a skipped request in another task, resumes it from the ticket). The span
continues the client's trace when a `traceparent` header came with the request.

No prompt or answer text is recorded unless `tracing.capture_content` says so, and then redacted
of keys as the log lines are (logs.py); client and draft keys never reach a span.
"""
from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, AsyncIterator, Iterable
from urllib.parse import urlsplit

from cascade_extproc.metering.logs import RedactingFormatter
from cascade_extproc.types import Decision, Response, Usage

if TYPE_CHECKING:
    from cascade_extproc.config import TracingConfig

RequestRecord = Any  # ledger.RequestRecord (the ledger imports this module, not the other way round)

log = logging.getLogger("cascade_extproc.tracing")

SERVICE_NAME = "cascade-extproc"
# The router's key features, on every request span whatever rule decided (plus those the rule read).
KEY_FEATURES = ("stream", "tools", "tool_choice", "messages", "last_turn", "last_turn_tokens", "context_tokens",
                "in_tool_loop", "recent_tools", "thinking", "images", "has_code", "keywords", "client",
                "cascade_saving")
MAX_CONTENT_CHARS = 16_000  # captured text per attribute, when capture_content is on


@dataclass
class Call:
    """One provider call made for a request: a child span."""

    role: str  # "draft" | "strong": which of the request's two providers
    api: str  # the API the provider speaks: gen_ai.provider.name
    server: str  # the provider's host
    model: str  # what was asked for ("" for the strong provider: the client's model)
    stream: bool
    start_ns: int
    end_ns: int = 0
    response: Response | None = None
    error: str = ""
    status: int = 0
    input_text: str = ""  # only with capture_content


@dataclass
class Trace:
    """One request's trace, from the exchange's start to its record."""

    traceparent: str
    tracestate: str
    start_ns: int = field(default_factory=time.time_ns)
    route: str = ""  # the router's route: names the strong model's calls (verify / escalation)
    features: dict[str, Any] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    done: bool = False


_current: ContextVar[Trace | None] = ContextVar("cascade_trace", default=None)
_tracer: "_Tracer | None" = None  # None: tracing off
_lock = threading.Lock()


def enabled() -> bool:
    return _tracer is not None


def begin(headers: dict[str, str]) -> Trace | None:
    """A new request (the exchange's start): its trace, or None when tracing is off."""
    if _tracer is None:
        return None
    trace = Trace(headers.get("traceparent", ""), headers.get("tracestate", ""))
    _current.set(trace)
    return trace


def envoy_parent(headers: dict[str, str], metadata: Iterable[Any] | None) -> None:
    """Envoy, when it traces, puts its ext_proc span's context on the gRPC stream's metadata: that
    span (itself in the client's trace, or in one Envoy started) is the request span's parent."""
    found = {}
    for item in metadata or ():
        key, value = item[0], item[1]
        if key in ("traceparent", "tracestate") and isinstance(value, str):
            found[key] = value
    if found.get("traceparent"):
        headers["traceparent"] = found["traceparent"]
        headers["tracestate"] = found.get("tracestate", "")


def decided(decision: Decision) -> None:
    """The router's decision, for the request's span (route and features)."""
    trace = _current.get()
    if trace is not None:
        key = {name: decision.all_features[name] for name in KEY_FEATURES if name in decision.all_features}
        trace.route, trace.features = str(decision.route), {**key, **decision.features}


def current() -> Trace | None:
    return _current.get()


def resume(trace: Trace | None) -> None:
    """Continue `trace` in this task (the relay serving a request the exchange registered); None:
    no trace (a task that serves several requests in turn must not keep the last one's)."""
    _current.set(trace)


def finished(rec: RequestRecord) -> None:
    """The request's record is complete: write its span and its calls' (once)."""
    trace, tracer = rec.trace, _tracer
    if trace is None or tracer is None or trace.done:
        return
    trace.done = True
    try:
        tracer.emit(trace, rec)
    except Exception:  # a trace is never worth a request
        log.exception("could not write the request's trace")
    finally:  # the ledger keeps recent records: not their calls' answers
        rec.trace, trace.calls = None, []


# ---- provider calls ---------------------------------------------------------------------------


class TracedProvider:
    """A provider whose calls, made for a traced request, become that request's child spans.
    Wrapped around the real one only when tracing is on (app.runtime_from)."""

    def __init__(self, inner: Any, role: str, model: str = ""):
        self._inner = inner
        self.api = inner.api
        self.role = role
        self.model = model
        self.server = urlsplit(getattr(inner, "url", "")).hostname or ""

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def _call(self, trace: Trace, body: Any, stream: bool) -> Call:
        call = Call(self.role, str(self.api), self.server, self.model, stream, time.time_ns())
        tracer = _tracer
        if tracer is not None and tracer.capture_content:
            call.input_text = tracer.content(body)
        trace.calls.append(call)
        return call

    async def complete(self, body: Any, headers: dict[str, str], timeout_s: float) -> Response:
        trace = _current.get()
        if trace is None:
            return await self._inner.complete(body, headers, timeout_s)
        call = self._call(trace, body, stream=False)
        try:
            call.response = await self._inner.complete(body, headers, timeout_s)
            return call.response
        except BaseException as exc:
            call.error, call.status = _error(exc)
            raise
        finally:
            call.end_ns = time.time_ns()

    def open(self, body: bytes, headers: dict[str, str], timeout_s: float):
        trace = _current.get()
        if trace is None:
            return self._inner.open(body, headers, timeout_s)
        return self._open(trace, body, headers, timeout_s)

    @contextlib.asynccontextmanager
    async def _open(self, trace: Trace, body: bytes, headers: dict[str, str],
                    timeout_s: float) -> AsyncIterator[Any]:
        call = self._call(trace, body, stream=True)
        try:
            async with self._inner.open(body, headers, timeout_s) as up:
                yield up
        except BaseException as exc:
            call.error, call.status = _error(exc)
            raise
        finally:
            call.end_ns = time.time_ns()


def _error(exc: BaseException) -> tuple[str, int]:
    """error.type: the provider's HTTP status, or what went wrong in words (ProviderError.reason)."""
    status = int(getattr(exc, "status", 0) or 0)
    if status >= 300:
        return f"http-{status}", status
    reason = getattr(exc, "reason", "") or type(exc).__name__
    return str(reason).split(":")[0].replace(" ", "-"), 0


# ---- the exporter side ------------------------------------------------------------------------


def configure(cfg: "TracingConfig", secrets: Iterable[str] = (), exporter: Any = None) -> None:
    """Tracing as `cfg` says (the standard OTEL_* variables fill what it leaves empty). Called at
    start and on every config reload; a changed section replaces the exporter (the old one is
    flushed in the background). `exporter`: a SpanExporter instead of OTLP (tests)."""
    global _tracer
    with _lock:
        old = _tracer
        on = cfg.enabled and os.environ.get("OTEL_SDK_DISABLED", "").lower() != "true" \
            and os.environ.get("OTEL_TRACES_EXPORTER", "").lower() != "none"
        if old is not None and on and old.cfg == cfg and exporter is None:
            return
        _tracer = _Tracer(cfg, secrets, exporter) if on else None
    if old is not None:
        threading.Thread(target=old.shutdown, name="tracing-shutdown", daemon=True).start()
    if _tracer is not None:
        log.info("tracing on: OTLP/%s to %s", _tracer.protocol, _tracer.endpoint or "the exporter's default")


def flush() -> None:
    """Export what is queued now (tests)."""
    if _tracer is not None:
        _tracer.provider.force_flush()


def shutdown() -> None:
    """Flush what is queued and stop (the server is stopping)."""
    global _tracer
    with _lock:
        old, _tracer = _tracer, None
    if old is not None:
        old.shutdown()


class _Tracer:
    def __init__(self, cfg: "TracingConfig", secrets: Iterable[str], exporter: Any = None):
        # Imported here: with tracing off, the SDK is never loaded.
        from opentelemetry.propagators.textmap import DefaultGetter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.cfg = cfg
        self.capture_content = cfg.capture_content
        self._redactor = RedactingFormatter("%(message)s", secrets)
        env = os.environ.get
        self.protocol = cfg.protocol or env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") \
            or env("OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc"
        self.endpoint = cfg.endpoint or None  # None: the exporter reads OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT
        if exporter is not None:
            pass
        elif self.protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
            exporter = OTLPSpanExporter(endpoint=self.endpoint, insecure=_insecure(self.endpoint))
        else:  # http/protobuf
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
            endpoint = self.endpoint
            if endpoint and not urlsplit(endpoint).path.strip("/"):
                endpoint = endpoint.rstrip("/") + "/v1/traces"  # a collector's base address
            exporter = HttpExporter(endpoint=endpoint)
        sampler = None  # None: OTEL_TRACES_SAMPLER(_ARG), else parent-based always-on
        if cfg.sample_ratio is not None:
            sampler = ParentBased(TraceIdRatioBased(cfg.sample_ratio))
        # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES apply; the config's attributes over them.
        attributes = {"service.name": env("OTEL_SERVICE_NAME") or SERVICE_NAME}
        resource = Resource.create({**attributes, **cfg.resource_attributes}) if cfg.resource_attributes \
            else Resource.create(attributes)
        self.provider = TracerProvider(resource=resource, sampler=sampler)
        self.provider.add_span_processor(BatchSpanProcessor(exporter))
        self.tracer = self.provider.get_tracer("cascade_extproc")
        self._propagator = TraceContextTextMapPropagator()
        self._getter = DefaultGetter()

    def shutdown(self) -> None:
        try:
            self.provider.shutdown()
        except Exception:
            log.exception("tracing: shutdown failed")

    def content(self, body: Any) -> str:
        if isinstance(body, (bytes, bytearray)):
            text = bytes(body[:MAX_CONTENT_CHARS * 2]).decode("utf-8", "replace")
        else:
            import json
            text = json.dumps(body, ensure_ascii=False)[:MAX_CONTENT_CHARS * 2]
        return self._redactor.redact(text)[:MAX_CONTENT_CHARS]

    def emit(self, trace: Trace, rec: RequestRecord) -> None:
        from opentelemetry import trace as otel
        from opentelemetry.trace import SpanKind, Status, StatusCode

        parent = None
        if trace.traceparent:
            carrier = {"traceparent": trace.traceparent, "tracestate": trace.tracestate}
            parent = self._propagator.extract(carrier)
        end_ns = time.time_ns()
        calls = [c for c in trace.calls if c.end_ns]  # a background call still running is left out
        span = self.tracer.start_span(f"cascade {rec.path}", context=parent, kind=SpanKind.SERVER,
                                      start_time=trace.start_ns)
        if not span.is_recording():  # sampled out (the ratio, or a client's unsampled trace): no work
            return
        span.set_attributes(self._request_attributes(trace, rec, calls))
        if rec.status >= 500 or rec.error:
            span.set_status(Status(StatusCode.ERROR, rec.error or f"http-{rec.status}"))
        ctx = otel.set_span_in_context(span)
        for call in calls:
            child = self.tracer.start_span(f"chat {call.model or rec.model}", context=ctx, kind=SpanKind.CLIENT,
                                           start_time=call.start_ns,
                                           attributes=self._call_attributes(trace, rec, call))
            if call.error:
                child.set_status(Status(StatusCode.ERROR, call.error))
            child.end(end_time=call.end_ns)
        span.end(end_time=end_ns)

    def _request_attributes(self, trace: Trace, rec: RequestRecord, calls: list[Call]) -> dict[str, Any]:
        a: dict[str, Any] = {
            "cascade.request_id": rec.request_id, "cascade.api": rec.api, "cascade.path": str(rec.path),
            "cascade.rule": rec.rule, "cascade.route": trace.route, "cascade.model": rec.model,
            "cascade.served_model": rec.served_model, "http.response.status_code": rec.status,
            "openinference.span.kind": "CHAIN"}
        if rec.path in ("accepted", "enhanced"):
            a["cascade.verdict"] = "accept" if rec.path == "accepted" else "answer"
        for name in ("fallback_reason", "error", "shadow_route"):
            if getattr(rec, name):
                a[f"cascade.{name}"] = getattr(rec, name)
        if rec.cost_usd is not None:
            a["cascade.cost_usd"] = rec.cost_usd
        if rec.baseline_usd is not None:
            a["cascade.baseline_usd"] = rec.baseline_usd
        for role, usage in rec.usage.items():
            for kind, n in _kinds(usage):
                a[f"cascade.tokens.{role}.{kind}"] = n
        # Numbers and names (features.py computes no text), never the conversation's words.
        for name, value in trace.features.items():
            value = _attribute(value)
            if value is not None:
                a[f"cascade.feature.{name}"] = value
        if rec.model:
            a["gen_ai.request.model"] = rec.model
        if rec.served_model:
            a["gen_ai.response.model"] = rec.served_model
        if not calls and rec.api in ("anthropic", "openai"):
            # Envoy made the model call (direct, fallback): this span is that call for LLM tools.
            # With calls of our own, their spans carry the tokens (each counted once in a trace).
            a.update({"gen_ai.operation.name": "chat", "gen_ai.provider.name": rec.api,
                      "openinference.span.kind": "LLM"})
            usage = rec.usage.get("strong") or rec.usage.get("draft")
            if usage is not None:
                a.update(_gen_ai_usage(usage))
        return a

    def _call_attributes(self, trace: Trace, rec: RequestRecord, call: Call) -> dict[str, Any]:
        name = _call_name(rec, trace, call)
        model = call.model or rec.model
        a: dict[str, Any] = {
            "gen_ai.operation.name": "chat", "gen_ai.provider.name": call.api, "gen_ai.system": call.api,
            "gen_ai.request.model": model, "server.address": call.server, "cascade.call": name,
            "cascade.role": call.role, "openinference.span.kind": "LLM", "llm.model_name": model}
        resp = call.response
        usage = resp.usage if resp is not None else None
        response_model = resp.model if resp is not None else ""
        if resp is None and not call.error:  # a stream the relay read: the record has its usage
            usage = rec.usage.get(call.role)
            response_model = rec.served_model if _served_by(rec, call.role) else ""
        if response_model:
            a["gen_ai.response.model"] = response_model
        if resp is not None and resp.stop_reason:
            a["gen_ai.response.finish_reasons"] = [str(resp.stop_reason)]
        if usage is not None:
            a.update(_gen_ai_usage(usage))
        if call.error:
            a["error.type"] = call.error
            if call.status:
                a["http.response.status_code"] = call.status
        if self.capture_content:
            if call.input_text:
                a["gen_ai.input.messages"] = call.input_text
            if resp is not None and resp.text:
                a["gen_ai.output.messages"] = self._redactor.redact(resp.text)[:MAX_CONTENT_CHARS]
        return a


def _call_name(rec: RequestRecord, trace: Trace, call: Call) -> str:
    """What the call was for: the draft (sampled in the background, in shadow mode), the verify
    call, or the strong model answering because the draft could not (an escalation)."""
    if call.role == "draft":
        return "shadow-draft" if rec.shadow_route else "draft"
    return "verify" if trace.route == "cascade" else "escalation"


def _served_by(rec: RequestRecord, role: str) -> bool:
    drafted = rec.path in ("skipped", "accepted")
    return drafted if role == "draft" else not drafted


def _kinds(u: Usage) -> list[tuple[str, int]]:
    return [("input", u.input_tokens), ("output", u.output_tokens), ("cache_read", u.cache_read_tokens),
            ("cache_write", u.cache_write_tokens)]


def _gen_ai_usage(u: Usage) -> dict[str, int]:
    # gen_ai.usage.input_tokens counts every input token, cached ones included (the conventions).
    return {"gen_ai.usage.input_tokens": u.input_tokens + u.cache_read_tokens + u.cache_write_tokens,
            "gen_ai.usage.output_tokens": u.output_tokens,
            "gen_ai.usage.cache_read.input_tokens": u.cache_read_tokens,
            "gen_ai.usage.cache_creation.input_tokens": u.cache_write_tokens,
            "llm.token_count.prompt": u.input_tokens + u.cache_read_tokens + u.cache_write_tokens,
            "llm.token_count.completion": u.output_tokens}


def _attribute(value: Any) -> Any:
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    return None


def _insecure(endpoint: str | None) -> bool | None:
    """gRPC: plaintext for http:// endpoints (a collector beside the pod), TLS for https://;
    None lets the exporter decide (OTEL_EXPORTER_OTLP_INSECURE)."""
    if not endpoint:
        return None
    return endpoint.startswith("http://")
