"""metering/tracing.py on its own: the spans a finished record makes, read from the SDK's in-memory
exporter (the e2e test, tests/e2e/test_e2e_traces.py, sends them through Envoy to a real OTLP
receiver). A provider call made for a traced request is a child span; tracing off makes nothing."""
from __future__ import annotations

import asyncio
import dataclasses

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from cascade_extproc import app, config
from cascade_extproc.config import TracingConfig
from cascade_extproc.metering import tracing
from cascade_extproc.metering.ledger import Ledger, RequestRecord
from cascade_extproc.metering.metrics import Metrics
from cascade_extproc.providers import ProviderStatus
from cascade_extproc.providers.mock import FakeProvider
from cascade_extproc.types import Api, Block, Decision, Path, Response, Route, StopReason, Usage

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
DRAFT_KEY = "sk-draft-0123456789abcdef"


def answer(text: str, model: str, usage: Usage) -> Response:
    return Response(id="id", model=model, blocks=[Block("text", text=text)], stop_reason=StopReason.END_TURN,
                    usage=usage)


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    tracing.configure(TracingConfig(enabled=True), [DRAFT_KEY], exporter=exporter)
    yield lambda: (tracing.flush(), exporter.get_finished_spans())[1]
    tracing.shutdown()


async def _cascade(headers: dict[str, str], draft, strong) -> RequestRecord:
    trace = tracing.begin(headers)
    tracing.decided(Decision(Route.CASCADE, "long-question", {"last_turn": "user_text", "context_tokens": 1200,
                                                              "has_code": False, "keywords": ["planning"],
                                                              "recent_tools": [], "odd": {"x": 1}}))
    d = tracing.TracedProvider(draft, "draft", "draft-model")
    s = tracing.TracedProvider(strong, "strong")
    first = await d.complete(b'{"model": "draft-model", "messages": []}', {"authorization": f"Bearer {DRAFT_KEY}"}, 5)
    second = await s.complete(b'{"model": "claude-x", "messages": []}', {"x-api-key": "client-secret"}, 5)
    rec = RequestRecord("req-1", "anthropic", Path.ACCEPTED, "long-question", "claude-x", served_model="draft-model",
                        usage={"draft": first.usage, "strong": second.usage}, cost_usd=0.001, baseline_usd=0.01,
                        status=200, trace=trace)
    Ledger(Metrics()).record(rec)
    return rec


def test_a_cascade_is_one_request_span_with_the_draft_and_verify_calls_as_children(spans):
    draft = FakeProvider(lambda b: answer("Draft.", "draft-model-0324", Usage(10, 5, 100, 0)))
    strong = FakeProvider(lambda b: answer("ACCEPT n", "claude-x-2025", Usage(20, 3, 0, 50)))
    asyncio.run(_cascade({"traceparent": PARENT}, draft, strong))
    got = {s.name: s for s in spans()}
    assert set(got) == {"cascade accepted", "chat draft-model", "chat claude-x"}
    root, d, v = got["cascade accepted"], got["chat draft-model"], got["chat claude-x"]
    # The client's trace goes on: its trace id, its span as the parent.
    assert f"{root.context.trace_id:032x}" == TRACE_ID and f"{root.parent.span_id:016x}" == "00f067aa0ba902b7"
    for child in (d, v):
        assert child.parent.span_id == root.context.span_id and child.context.trace_id == root.context.trace_id
        assert root.start_time <= child.start_time <= child.end_time <= root.end_time
    a = root.attributes
    assert (a["cascade.path"], a["cascade.rule"], a["cascade.route"], a["cascade.verdict"]) == \
        ("accepted", "long-question", "cascade", "accept")
    assert (a["cascade.cost_usd"], a["cascade.baseline_usd"], a["cascade.served_model"]) == (0.001, 0.01, "draft-model")
    assert (a["cascade.tokens.draft.cache_read"], a["cascade.tokens.strong.cache_write"]) == (100, 50)
    assert (a["cascade.feature.context_tokens"], a["cascade.feature.keywords"]) == (1200, ("planning",))
    assert "cascade.feature.odd" not in a and "gen_ai.usage.input_tokens" not in a  # the calls carry the tokens
    assert d.attributes["cascade.call"] == "draft" and v.attributes["cascade.call"] == "verify"
    for key, want in {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "anthropic",
                      "gen_ai.request.model": "draft-model", "gen_ai.response.model": "draft-model-0324",
                      "gen_ai.usage.input_tokens": 110, "gen_ai.usage.output_tokens": 5,
                      "gen_ai.usage.cache_read.input_tokens": 100}.items():
        assert d.attributes[key] == want, key
    assert (v.attributes["gen_ai.request.model"], v.attributes["gen_ai.usage.input_tokens"]) == ("claude-x", 70)
    # No text by default, and no key, anywhere.
    text = repr([dict(s.attributes) for s in got.values()])
    assert "gen_ai.input.messages" not in text and "Draft." not in text
    assert DRAFT_KEY not in text and "client-secret" not in text


def test_without_a_traceparent_the_request_starts_a_trace(spans):
    ok = FakeProvider(lambda b: answer("x", "m", Usage(1, 1)))
    asyncio.run(_cascade({}, ok, ok))
    roots = [s for s in spans() if s.parent is None]
    assert [s.name for s in roots] == ["cascade accepted"]


def test_a_failed_call_is_an_error_span_with_its_type(spans):
    async def go():
        trace = tracing.begin({})
        tracing.decided(Decision(Route.CASCADE, "r", {}))
        failing = tracing.TracedProvider(FakeProvider(error=ProviderStatus(529, "overloaded")), "draft", "draft-model")
        with pytest.raises(ProviderStatus):
            await failing.complete(b"{}", {}, 5)
        Ledger(Metrics()).record(RequestRecord("r", "openai", Path.FALLBACK, "r", "gpt-x", status=200,
                                               fallback_reason="draft-failed", trace=trace))
    asyncio.run(go())
    got = {s.name: s for s in spans()}
    call = got["chat draft-model"]
    assert call.status.status_code.name == "ERROR"
    assert (call.attributes["error.type"], call.attributes["http.response.status_code"]) == ("http-529", 529)
    root = got["cascade fallback"]
    assert root.attributes["cascade.fallback_reason"] == "draft-failed"


def test_a_direct_request_span_is_the_model_call_envoy_made(spans):
    trace = tracing.begin({"traceparent": PARENT})
    Ledger(Metrics()).record(RequestRecord("r", "openai", Path.DIRECT, "forced-tool-choice", "gpt-x",
                                           served_model="gpt-x", usage={"strong": Usage(7, 3, 0, 0)},
                                           status=200, trace=trace))
    (span,) = spans()
    assert span.attributes["gen_ai.operation.name"] == "chat"
    assert (span.attributes["gen_ai.usage.input_tokens"], span.attributes["gen_ai.usage.output_tokens"]) == (7, 3)


def test_content_is_captured_only_when_asked_and_redacted(spans):
    exporter = InMemorySpanExporter()
    tracing.configure(TracingConfig(enabled=True, capture_content=True), [DRAFT_KEY], exporter=exporter)

    async def go():
        trace = tracing.begin({})
        tracing.decided(Decision(Route.SKIPPED, "r", {}))
        p = tracing.TracedProvider(FakeProvider(lambda b: answer(f"here: {DRAFT_KEY}", "m", Usage())), "draft", "m")
        await p.complete(f'{{"messages": [{{"role": "user", "content": "my key is {DRAFT_KEY} sk-ant-abcdefghijkl"}}]}}'
                         .encode(), {}, 5)
        Ledger(Metrics()).record(RequestRecord("r", "anthropic", Path.SKIPPED, "r", "c", status=200, trace=trace))
    asyncio.run(go())
    tracing.flush()
    call = next(s for s in exporter.get_finished_spans() if s.name == "chat m")
    assert "my key is [redacted] [redacted]" in call.attributes["gen_ai.input.messages"]
    assert call.attributes["gen_ai.output.messages"] == "here: [redacted]"


def test_off_nothing_is_traced_and_no_provider_is_wrapped():
    tracing.shutdown()
    assert tracing.begin({"traceparent": PARENT}) is None
    rt = app.runtime_from(config.load(), None)
    assert not any(isinstance(p, tracing.TracedProvider) for p in rt.providers.values())
    cfg = config.load()
    on = dataclasses.replace(cfg, tracing=TracingConfig(enabled=True))
    assert all(isinstance(p, tracing.TracedProvider) for p in app.runtime_from(on, None).providers.values())


@pytest.mark.parametrize("key, value, error", [
    ("protocol", "thrift", "tracing.protocol"), ("sample_ratio", 1.5, "tracing.sample_ratio"),
    ("endpoint", "collector:4317", "tracing.endpoint"), ("colour", "red", "tracing.colour")])
def test_the_config_section_is_checked(key, value, error):
    with pytest.raises(config.ConfigError, match=error.replace(".", r"\.")):
        config.parse({"tracing": {key: value}})


def test_the_config_section_loads():
    cfg = config.parse({"tracing": {"enabled": True, "endpoint": "http://collector:4318", "protocol": "http/protobuf",
                                    "sample_ratio": 0.25, "resource_attributes": {"deployment.environment": "prod"}}})
    assert cfg.tracing == TracingConfig(True, "http://collector:4318", "http/protobuf", 0.25,
                                        {"deployment.environment": "prod"})
    assert config.load().tracing == TracingConfig()


def test_envoys_span_on_the_grpc_stream_parents_the_request_over_the_clients_header():
    envoy = "00-4bf92f3577b34da6a3ce929d0e0e4736-b7ad6b7169203331-01"
    headers = {"traceparent": PARENT}
    tracing.envoy_parent(headers, (("x-request-id", "r"), ("traceparent", envoy), ("tracestate", "e=1")))
    assert headers == {"traceparent": envoy, "tracestate": "e=1"}
    headers = {"traceparent": PARENT}
    tracing.envoy_parent(headers, (("user-agent", "grpc-c++"),))  # Envoy not tracing: the client's stays
    assert headers == {"traceparent": PARENT}


class _Collector:
    """An OTLP/HTTP receiver on loopback (the standard library's server): each export request, decoded."""

    def __init__(self):
        import http.server
        import threading

        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        got = self.requests = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["content-length"]))
                got.append((self.path, ExportTraceServiceRequest.FromString(body)))
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def spans(self):
        return [(path, rs.resource, span) for path, req in self.requests for rs in req.resource_spans
                for ss in rs.scope_spans for span in ss.spans]


def test_otlp_http_export_with_the_configs_resource_attributes_and_sampling():
    collector = _Collector()
    try:
        tracing.configure(TracingConfig(enabled=True, endpoint=collector.url, protocol="http/protobuf", sample_ratio=0.0,
                                        resource_attributes={"deployment.environment": "test"}))
        for headers in ({}, {"traceparent": PARENT}):  # ratio 0: only the client's sampled trace is kept
            trace = tracing.begin(headers)
            Ledger(Metrics()).record(RequestRecord("r", "openai", Path.DIRECT, "rule", "gpt-x", status=200,
                                                   trace=trace))
        tracing.flush()
    finally:
        tracing.shutdown()
        collector.server.shutdown()
    (path, resource, span), = collector.spans()
    assert path == "/v1/traces" and span.name == "cascade direct" and span.trace_id.hex() == TRACE_ID
    res = {a.key: a.value.string_value for a in resource.attributes}
    assert res["service.name"] == "cascade-extproc" and res["deployment.environment"] == "test"


def test_otel_sdk_disabled_keeps_tracing_off(monkeypatch):
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    tracing.configure(TracingConfig(enabled=True))
    assert not tracing.enabled()
