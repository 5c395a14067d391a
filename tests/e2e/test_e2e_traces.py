"""Traces through the whole stack into a real OTLP receiver: Arize Phoenix (`phoenix serve`, a trace
store with a query API, from its own venv: Makefile), started on free ports with a working
directory of its own. A mixed workload through a real Envoy, driven by the official SDKs, each
request in a client trace of its own (a `traceparent` header); then each trace is read back from
Phoenix's REST API: client span → the request's span → its provider calls' spans, with their
attributes, and neither the client's key nor the draft key anywhere in them."""
from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import anthropic
import openai
import pytest

from stack import CLIENT_KEY, DRAFT_KEY, DRAFT_MODELS, Stack, free_port

# Phoenix takes a while to start on a busy machine (its database, its migrations).
pytestmark = pytest.mark.timeout(360)
ROOT = Path(__file__).resolve().parents[2]
PROJECT = "cascade-e2e"
COMPLEX = ("Compare optimistic and pessimistic locking for our inventory service and recommend one, "
           "with the failure modes of each under contention.")


def phoenix_binary() -> str:
    path = os.environ.get("PHOENIX_BIN") or str(ROOT / ".venv" / "phoenix" / "bin" / "phoenix")
    if not os.access(path, os.X_OK):
        path = shutil.which("phoenix") or ""
    if not path:
        if os.environ.get("CI") == "true":
            pytest.fail("Phoenix is not installed, and CI must run the trace tests (make .venv/.installed)")
        pytest.skip("Phoenix is not installed (make .venv/.installed puts it in .venv/phoenix)")
    return path


class Phoenix:
    """`phoenix serve` on free loopback ports: OTLP over gRPC and HTTP in, REST out."""

    def __init__(self, workdir: Path):
        self.port, self.grpc_port = free_port(), free_port()
        self.log = workdir / "phoenix.log"
        env = {**os.environ, "PHOENIX_WORKING_DIR": str(workdir), "PHOENIX_HOST": "127.0.0.1",
               "PHOENIX_PORT": str(self.port), "PHOENIX_GRPC_PORT": str(self.grpc_port),
               "PHOENIX_TELEMETRY_ENABLED": "false"}
        self.proc = subprocess.Popen([phoenix_binary(), "serve"], stdout=self.log.open("wb"),
                                     stderr=subprocess.STDOUT, env=env, cwd=workdir, start_new_session=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                self.get("/healthz")
                return
            except OSError:
                time.sleep(0.25)
        self.stop()
        raise RuntimeError("phoenix did not start:\n" + self.log.read_text()[-3000:])

    def get(self, path: str):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as r:
            body = r.read()
        return json.loads(body) if body[:1] in (b"{", b"[") else body

    def spans(self, project: str = PROJECT) -> list[dict]:
        out, cursor = [], ""
        while True:
            try:
                page = self.get(f"/v1/projects/{project}/spans?limit=1000" + (f"&cursor={cursor}" if cursor else ""))
            except urllib.error.HTTPError as exc:
                if exc.code == 404:  # no span has arrived yet: the project does not exist
                    return []
                raise
            out += page["data"]
            cursor = page.get("next_cursor") or ""
            if not cursor:
                return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture(scope="module")
def phoenix(tmp_path_factory):
    p = Phoenix(tmp_path_factory.mktemp("phoenix"))
    yield p
    p.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, phoenix):
    saved = os.environ.get("OTEL_BSP_SCHEDULE_DELAY")
    os.environ["OTEL_BSP_SCHEDULE_DELAY"] = "100"  # export within 0.1 s, not 5 s (the standard variable)
    try:
        s = Stack(tmp_path_factory.mktemp("traces"), extra_config={"tracing": {
            "enabled": True, "endpoint": f"http://127.0.0.1:{phoenix.grpc_port}", "protocol": "grpc",
            "resource_attributes": {"openinference.project.name": PROJECT, "deployment.environment": "e2e"}}})
    finally:
        if saved is None:
            os.environ.pop("OTEL_BSP_SCHEDULE_DELAY", None)
        else:
            os.environ["OTEL_BSP_SCHEDULE_DELAY"] = saved
    yield s
    s.close()


def client_trace() -> tuple[str, str, dict[str, str]]:
    """A client's own trace: its trace id, its span id, and the traceparent header naming them."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id, {"traceparent": f"00-{trace_id}-{span_id}-01"}


def workload(stack) -> dict[str, tuple[str, str]]:
    """One request of each kind, each in a client trace: name → (trace id, client span id)."""
    a = anthropic.Anthropic(base_url=stack.anthropic_url, api_key=CLIENT_KEY, max_retries=0)
    o = openai.OpenAI(base_url=stack.openai_url, api_key=CLIENT_KEY, max_retries=0)
    msg = lambda text: [{"role": "user", "content": text}]  # noqa: E731
    traces = {}

    def traced(name):
        trace_id, span_id, header = client_trace()
        traces[name] = (trace_id, span_id)
        return header

    def path(raw) -> str:
        return raw.headers["x-cascade-path"]

    assert path(a.messages.with_raw_response.create(model="claude-sonnet-5", max_tokens=200, messages=msg(COMPLEX),
                                                    extra_headers=traced("cascade-anthropic"))) == "accepted"
    assert path(o.chat.completions.with_raw_response.create(model="gpt-6.2-sol", messages=msg(COMPLEX + " sim:reject"),
                                                            extra_headers=traced("cascade-openai"))) == "enhanced"
    assert path(a.messages.with_raw_response.create(model="claude-sonnet-5", max_tokens=200, messages=msg("hi"),
                                                    extra_headers=traced("skipped-anthropic"))) == "skipped"
    with o.chat.completions.with_streaming_response.create(model="gpt-6.2-sol", stream=True, messages=msg("ok"),
                                                           extra_headers=traced("skipped-openai-stream")) as r:
        assert path(r) == "skipped"
        assert list(r.iter_lines())
    assert path(a.messages.with_raw_response.create(model="claude-haiku-4-5", max_tokens=200, messages=msg(COMPLEX),
                                                    extra_headers=traced("direct-anthropic"))) == "direct"
    stack.sims["draft_anthropic"].fail_next(500)
    assert path(a.messages.with_raw_response.create(model="claude-sonnet-5", max_tokens=200, messages=msg(COMPLEX),
                                                    extra_headers=traced("fallback-cascade"))) == "fallback"
    stack.sims["draft_openai"].fail_next(503)
    assert path(o.chat.completions.with_raw_response.create(model="gpt-6.2-sol", messages=msg("ok"),
                                                            extra_headers=traced("fallback-skipped"))) == "fallback"
    # No traceparent: the request starts a trace of its own.
    a.messages.create(model="claude-sonnet-5", max_tokens=200, messages=msg("thanks"))
    return traces


def by_trace(spans: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for s in spans:
        out.setdefault(s["context"]["trace_id"], []).append(s)
    return out


def wait_for(phoenix, traces, timeout_s=30) -> list[dict]:
    deadline = time.monotonic() + timeout_s
    want = {trace_id for trace_id, _ in traces.values()}
    while True:
        spans = phoenix.spans()
        got = by_trace(spans)
        if want <= set(got) and len(got) > len(want) or time.monotonic() > deadline:
            time.sleep(0.5)  # the children of the last trace, if they came in another batch
            return phoenix.spans()
        time.sleep(0.2)


def attrs(span: dict) -> dict:
    """Phoenix's attributes, flattened to the dotted names they were sent with."""
    out = {}

    def walk(prefix, value):
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        else:
            out[prefix] = value
    a = span.get("attributes") or {}
    if isinstance(a, list):  # [{key, value}]
        a = {i["key"]: i["value"] for i in a}
    walk("", a)
    return out


def test_a_mixed_workload_arrives_in_phoenix_with_its_parentage_and_attributes(stack, phoenix):
    traces = workload(stack)
    spans = wait_for(phoenix, traces)
    groups = by_trace(spans)
    seen = {}
    for name, (trace_id, client_span) in traces.items():
        group = groups.get(trace_id)
        assert group, f"{name}: no span arrived in trace {trace_id}"
        roots = [s for s in group if s["parent_id"] == client_span]
        assert len(roots) == 1, (name, group)
        root = roots[0]
        children = sorted((s for s in group if s is not root), key=lambda s: s["start_time"])
        # every other span of the trace is a call the sidecar made for this request, under its span
        assert all(c["parent_id"] == root["context"]["span_id"] for c in children), (name, group)
        seen[name] = (attrs(root), [attrs(c) | {"_name": c["name"]} for c in children], root, children)

    root, calls, *_ = seen["cascade-anthropic"]
    assert root["cascade.path"] == "accepted" and root["cascade.verdict"] == "accept"
    assert root["cascade.api"] == "anthropic" and root["cascade.rule"] and root["cascade.route"] == "cascade"
    assert root["cascade.served_model"] == DRAFT_MODELS["anthropic"] and root["cascade.model"] == "claude-sonnet-5"
    assert root["cascade.cost_usd"] > 0 and root["cascade.baseline_usd"] > 0
    assert root["cascade.tokens.draft.output"] > 0 and root["cascade.tokens.strong.input"] > 0
    assert any(k.startswith("cascade.feature.") for k in root)  # what the deciding rule read
    assert sorted(c["cascade.call"] for c in calls) == ["draft", "verify"]
    draft = next(c for c in calls if c["cascade.call"] == "draft")
    verify = next(c for c in calls if c["cascade.call"] == "verify")
    assert draft["_name"] == f"chat {DRAFT_MODELS['anthropic']}"
    assert draft["gen_ai.operation.name"] == "chat" and draft["gen_ai.provider.name"] == "anthropic"
    assert draft["gen_ai.request.model"] == DRAFT_MODELS["anthropic"]
    assert draft["gen_ai.usage.output_tokens"] == root["cascade.tokens.draft.output"]
    assert verify["gen_ai.request.model"] == "claude-sonnet-5" and verify["gen_ai.usage.input_tokens"] > 0
    assert verify["gen_ai.response.model"]

    root, calls, *_ = seen["cascade-openai"]
    assert root["cascade.path"] == "enhanced" and root["cascade.verdict"] == "answer"
    assert sorted(c["cascade.call"] for c in calls) == ["draft", "verify"]
    assert {c["gen_ai.provider.name"] for c in calls} == {"openai"}

    for name, api in (("skipped-anthropic", "anthropic"), ("skipped-openai-stream", "openai")):
        root, calls, *_ = seen[name]
        assert root["cascade.path"] == "skipped" and root["cascade.route"] == "skipped", name
        assert root["cascade.feature.last_turn"] == "user_text" and root["cascade.feature.has_code"] is False
        assert [c["cascade.call"] for c in calls] == ["draft"], name  # the relay's draft call
        (draft,) = calls
        assert draft["gen_ai.request.model"] == DRAFT_MODELS[api]
        assert draft["gen_ai.usage.output_tokens"] == root["cascade.tokens.draft.output"] > 0, name
        assert draft["gen_ai.response.model"] == root["cascade.served_model"]

    root, calls, *_ = seen["direct-anthropic"]
    assert root["cascade.path"] == "direct" and root["cascade.rule"] == "cheap-model-requested"
    assert calls == []  # Envoy made the call: the request span is the model call
    assert root["gen_ai.operation.name"] == "chat" and root["gen_ai.usage.output_tokens"] > 0
    assert root["gen_ai.request.model"] == "claude-haiku-4-5"

    root, calls, *_ = seen["fallback-cascade"]
    assert root["cascade.path"] == "fallback" and root["cascade.fallback_reason"] == "draft-failed"
    (draft,) = calls
    assert draft["cascade.call"] == "draft" and draft["error.type"] == "http-500"
    (draft_span,) = seen["fallback-cascade"][3]
    assert draft_span["status_code"] == "ERROR"

    root, calls, *_ = seen["fallback-skipped"]
    assert root["cascade.path"] == "fallback" and root["cascade.fallback_reason"] == "draft-http-503"
    assert [c["cascade.call"] for c in calls] == ["draft", "escalation"]
    assert calls[0]["error.type"] == "http-503"
    assert calls[1]["gen_ai.request.model"] == "gpt-6.2-sol" and calls[1]["gen_ai.usage.output_tokens"] > 0

    # The request without a traceparent started its own trace: a root span.
    assert any(s["parent_id"] is None and s["context"]["trace_id"] not in {t for t, _ in traces.values()}
               and attrs(s)["cascade.path"] == "skipped" for s in spans)
    # (The spans are in project PROJECT: the config's resource attribute openinference.project.name.)
    # No secret anywhere in what the receiver stored, and no text of the conversation.
    text = json.dumps(spans)
    assert CLIENT_KEY not in text and DRAFT_KEY not in text
    assert "optimistic and pessimistic" not in text and "gen_ai.input.messages" not in text


def envoy_tracing(phoenix):
    """Envoy's own tracing (docs/observability.md): the OpenTelemetry tracer on the model-call
    listener, exporting to the same receiver over OTLP/gRPC."""
    def hook(boot):
        res = boot["static_resources"]
        hcm = res["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        hcm["tracing"] = {"random_sampling": {"value": 100}, "provider": {
            "name": "envoy.tracers.opentelemetry",
            "typed_config": {"@type": "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig",
                             "grpc_service": {"envoy_grpc": {"cluster_name": "otel"}, "timeout": "2s"},
                             "service_name": "envoy"}}}
        res["clusters"].append({
            "name": "otel", "type": "STATIC", "connect_timeout": "1s",
            "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}}}},
            "load_assignment": {"cluster_name": "otel", "endpoints": [{"lb_endpoints": [{"endpoint": {
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": phoenix.grpc_port}}}}]}]}})
    return hook


def test_envoys_own_spans_join_the_trace(tmp_path, phoenix):
    """With Envoy tracing too, one trace: the client's span → Envoy's → Envoy's ext_proc call →
    the sidecar's request span → its draft and verify calls."""
    saved = os.environ.get("OTEL_BSP_SCHEDULE_DELAY")
    os.environ["OTEL_BSP_SCHEDULE_DELAY"] = "100"
    try:
        s = Stack(tmp_path, bootstrap_hook=envoy_tracing(phoenix), extra_config={"tracing": {
            "enabled": True, "endpoint": f"http://127.0.0.1:{phoenix.grpc_port}",
            "resource_attributes": {"openinference.project.name": PROJECT}}})
    finally:
        if saved is None:
            os.environ.pop("OTEL_BSP_SCHEDULE_DELAY", None)
        else:
            os.environ["OTEL_BSP_SCHEDULE_DELAY"] = saved
    try:
        trace_id, client_span, header = client_trace()
        a = anthropic.Anthropic(base_url=s.anthropic_url, api_key=CLIENT_KEY, max_retries=0)
        a.messages.create(model="claude-sonnet-5", max_tokens=200, messages=[{"role": "user", "content": COMPLEX}],
                          extra_headers=header)
        deadline = time.monotonic() + 60  # Envoy exports its spans every 5 s
        while True:
            ours = [sp for sp in phoenix.spans() if sp["context"]["trace_id"] == trace_id]
            # Envoy's spans carry no project attribute: Phoenix files them under "default".
            envoy = [sp for sp in phoenix.spans("default") if sp["context"]["trace_id"] == trace_id]
            if (len(ours) >= 3 and len(envoy) >= 2) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    finally:
        s.close()
    spans = {sp["context"]["span_id"]: sp for sp in ours + envoy}
    (root,) = [sp for sp in ours if sp["name"].startswith("cascade ")]
    chain, span = [], root
    while span is not None:  # up from our request span to the client's
        chain.append(span["name"])
        parent = span["parent_id"]
        span = spans.get(parent)
    assert parent == client_span, (chain, [sp["name"] for sp in envoy])
    assert len(chain) > 1, f"our span's parent is the client's, not Envoy's: {chain}"
