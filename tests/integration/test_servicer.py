"""The ext_proc server over real gRPC (no Envoy): what it tells Envoy for each path."""
import asyncio
import json
from pathlib import Path

import grpc
import pytest
import yaml

from cascade_extproc import config
from cascade_extproc._proto import external_processor_pb2 as ep
from cascade_extproc._proto import external_processor_pb2_grpc as ep_grpc
from cascade_extproc.app import App
from cascade_extproc.sim import SimProvider
from envoy_messages import request_msg

CLIENT_KEY = "client-key-abc"
DRAFT_KEY = "draft-key-xyz"


def model_call(path, body, **extra):
    hdrs = {"content-type": "application/json", "x-api-key": CLIENT_KEY, "authorization": f"Bearer {CLIENT_KEY}"}
    return request_msg(path, body, **{**hdrs, **extra})


async def exchange(app, *messages):
    """Send each message; collect every response, including extra ones such as timer extensions."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as ch:
        call = ep_grpc.ExternalProcessorStub(ch).Process()
        out = []
        for m in messages:
            await call.write(m)
            while True:
                resp = await call.read()
                out.append(resp)
                if resp.WhichOneof("response") is not None:
                    break
        await call.done_writing()
        return out


# The rules these tests route by unless they give their own (tests/path_rules.yaml says why).
PATH_RULES = yaml.safe_load((Path(__file__).parents[1] / "path_rules.yaml").read_text())["router"]["rules"]


def run(tmp_path, overrides, scenario, with_key=True):
    """Start sims + App on free ports, run `scenario(app, sims)`, tear down."""
    async def main():
        sims = {api: SimProvider(api) for api in ("anthropic", "openai")}
        for s in sims.values():
            await s.start()
        key = tmp_path / "key"
        key.write_text(DRAFT_KEY if with_key else "")
        data = {"listen": {"grpc": "127.0.0.1:0", "admin": "127.0.0.1:0", "relay": "127.0.0.1:0"},
                "providers": {api: {"strong": {"base_url": s.url},
                                    "draft": {"base_url": s.url, "model": f"sim-draft-{api}",  # priced
                                              "api_key_file": str(key), "api_key_env": ""}}
                              for api, s in sims.items()},
                "router": {"rules": PATH_RULES}}  # a route chosen by the request's shape
        data = config._merge(data, overrides)
        path = tmp_path / "c.yaml"
        path.write_text(yaml.safe_dump(data))
        app = App(config.load(path))
        await app.start()
        try:
            return await scenario(app, sims)
        finally:
            await app.stop(0)
            for s in sims.values():
                await s.stop()
    return asyncio.run(main())


def path_of(resp):
    return resp.dynamic_metadata.fields["cascade"].struct_value.fields["path"].string_value


def metadata(resp, namespace="cascade"):
    return {k: v.string_value for k, v in resp.dynamic_metadata.fields[namespace].struct_value.fields.items()}


def test_skipped_goes_to_the_relay_with_a_ticket_and_never_the_key(tmp_path):
    """Envoy applies no header edits to a body it got without headers: the server names the relay
    route and a ticket in metadata (the route, envoy_config._relay_route, does the rest), and
    sends an empty body: the relay holds the request. Nothing secret is in the reply: anything
    that can reach this server (a bare gRPC client) gets no key back."""
    async def scenario(app, sims):
        out = await exchange(app, model_call("/v1/messages?beta=true",
                                             {"model": "claude-sonnet-5", "max_tokens": 10,
                                              "messages": [{"role": "user", "content": "hi"}]}))
        for _ in range(100):  # the server sees the stream end a moment later
            if not len(app.relay):
                break
            await asyncio.sleep(0.01)
        return out, len(app.relay)
    (body,), waiting = run(tmp_path, {}, scenario)
    common = body.request_body.response
    assert common.clear_route_cache and common.HasField("header_mutation")  # Envoy clears only then
    assert not common.header_mutation.set_headers and not common.header_mutation.remove_headers
    assert common.body_mutation.body == b""
    md = metadata(body)
    assert md["path"] == "skipped" and md["route"] == "relay" and len(md["ticket"]) >= 24
    assert set(md) == {"path", "route", "ticket"} and set(body.dynamic_metadata.fields) == {"cascade"}
    wire = body.SerializeToString()
    assert DRAFT_KEY.encode() not in wire and CLIENT_KEY.encode() not in wire
    # The stream ended here without the relay taking the ticket (the client went away before Envoy
    # routed it): the ticket is dropped, the request recorded as such.
    assert waiting == 0


def test_openai_stream_flags_the_usage_it_asks_for(tmp_path):
    async def scenario(app, sims):
        return await exchange(app, model_call(
            "/openai/v1/chat/completions", {"model": "gpt-6.2-sol", "stream": True,
                                            "messages": [{"role": "user", "content": "hi"}]},
            **{"openai-organization": "org-client", "openai-project": "proj-client"}))
    (body,) = run(tmp_path, {}, scenario)
    assert metadata(body)["route"] == "relay" and metadata(body)["usage_injected"] == "1"
    wire = body.SerializeToString()
    assert DRAFT_KEY.encode() not in wire and b"org-client" not in wire


def test_no_client_credentials_goes_direct(tmp_path):
    """Nothing is served at the sidecar's expense: the strong provider answers (its own 401)."""
    async def scenario(app, sims):
        return await exchange(app, request_msg("/v1/messages", {"model": "claude-sonnet-5", "max_tokens": 10,
                                                                "messages": [{"role": "user", "content": "hi"}]},
                                               **{"content-type": "application/json"}))
    (body,) = run(tmp_path, {}, scenario)
    assert path_of(body) == "direct" and not body.request_body.response.HasField("body_mutation")


@pytest.mark.parametrize("model, path", [("gpt-5.4-mini", "direct"), ("gpt-6.2-sol", "skipped")])
def test_an_openai_stream_asked_for_usage_on_the_clients_behalf_is_flagged(tmp_path, model, path):
    """The server asks the provider for the usage chunk to meter it; `usage_injected` tells
    Envoy's usage filter to hide that chunk from the client (lua/usage_chunk.lua). A client that
    asked for it itself gets it: no flag."""
    async def scenario(app, sims):
        out = []
        for opts in ({}, {"stream_options": {"include_usage": True}}):
            out += await exchange(app, model_call("/openai/v1/chat/completions", {
                "model": model, "stream": True, "messages": [{"role": "user", "content": "thanks"}], **opts}))
        return out
    injected, asked = run(tmp_path, {}, scenario)
    assert metadata(injected)["path"] == path and metadata(injected)["usage_injected"] == "1"
    if path == "direct":  # (a skipped body goes to the relay, which holds the draft's request)
        assert json.loads(injected.request_body.response.body_mutation.body)["stream_options"] == {"include_usage": True}
    assert metadata(asked)["path"] == path and "usage_injected" not in metadata(asked)


def test_what_is_not_a_json_model_call_passes_unread(tmp_path):
    """Envoy sends only model-call routes' bodies; what still is not ours passes as it is."""
    body = {"model": "claude-sonnet-5", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}

    async def scenario(app, sims):
        out = []
        for msg in (model_call("/v1/messages", body, method="PUT"),
                    model_call("/v1/messages", body, **{"content-encoding": "gzip"}),
                    model_call("/v1/messages", body, **{"content-type": "text/plain"})):
            out += await exchange(app, msg)
        return out, len(sims["anthropic"].received)
    replies, calls = run(tmp_path, {}, scenario)
    for r in replies:
        assert path_of(r) == "direct" and not r.request_body.response.HasField("body_mutation")
        assert not r.request_body.response.header_mutation.set_headers
    assert calls == 0


@pytest.mark.parametrize("raw", [b"{not json", b"[]", b'{"model": "x"}', "\u2603".encode("utf-16")])
def test_unparseable_bodies_pass_through(tmp_path, raw):
    async def scenario(app, sims):
        return await exchange(app, model_call("/v1/messages", raw))
    (body,) = run(tmp_path, {}, scenario)
    assert body.WhichOneof("response") == "request_body"
    assert not body.request_body.response.HasField("body_mutation") and path_of(body) == "direct"


def test_missing_draft_key_falls_back(tmp_path):
    async def scenario(app, sims):
        return await exchange(app, model_call("/v1/messages", {"model": "claude-sonnet-5", "max_tokens": 10,
                                                               "messages": [{"role": "user", "content": "hi"}]}))
    (body,) = run(tmp_path, {}, scenario, with_key=False)
    assert path_of(body) == "fallback" and not body.request_body.response.HasField("body_mutation")


def test_cascade_answers_with_an_immediate_response(tmp_path):
    text = "Explain in depth how to migrate a monolith to services, with a plan and risks. " * 3

    async def scenario(app, sims):
        out = await exchange(app, model_call("/v1/messages", {"model": "claude-sonnet-5", "max_tokens": 200, "stream": True,
                                                              "messages": [{"role": "user", "content": text}]}))
        return out, [r.json["model"] for r in sims["anthropic"].received]
    (extend, body), models = run(tmp_path, {}, scenario)
    # Envoy's short message timeout is extended for exactly the cascade's own limits.
    assert extend.override_message_timeout.seconds == 60 + 120 + 5
    imm = body.immediate_response
    assert imm.status.code == 200
    hs = {h.header.key: h.header.raw_value.decode() for h in imm.headers.set_headers}
    assert hs["content-type"].startswith("text/event-stream") and hs["x-cascade-path"] == "accepted"
    assert imm.body.startswith(b"event: message_start")
    assert models == ["sim-draft-anthropic", "claude-sonnet-5"]  # draft first, then the verifier


def test_relay_unreachable_the_strong_model_answers_from_the_server(tmp_path):
    """Envoy could not reach the relay (its own 503 for the skipped route): the server answers the
    client's request from the strong model itself, with the client's credentials, and records a
    fallback (extproc/paths/skip.py RelayWatch, the shell's answer side)."""
    async def scenario(app, sims):
        body = model_call("/v1/messages", {"model": "claude-sonnet-5", "max_tokens": 10,
                                           "messages": [{"role": "user", "content": "hi"}]})
        headers = ep.ProcessingRequest(response_headers=ep.HttpHeaders(
            headers={"headers": [{"key": ":status", "raw_value": b"503"}]}))
        out = await exchange(app, body, headers)
        return out, [(r.json["model"], r.headers.get("x-api-key")) for r in sims["anthropic"].received], \
            list(app.ledger._recent)
    (to_relay, extend, answer), calls, records = run(tmp_path, {}, scenario)
    assert metadata(to_relay)["route"] == "relay"
    assert extend.override_message_timeout.seconds == 120 + 5
    assert answer.immediate_response.status.code == 200
    assert {h.header.key: h.header.raw_value.decode() for h in answer.immediate_response.headers.set_headers}[
        "x-cascade-path"] == "fallback"
    assert calls == [("claude-sonnet-5", CLIENT_KEY)]  # the strong model alone, the client's key
    (rec,) = records
    assert (rec.path, rec.fallback_reason, rec.status, rec.served_model) == ("fallback", "relay-http-503", 200,
                                                                             "claude-sonnet-5")
    assert rec.usage["strong"].output_tokens > 0


GUARD_ALL = {"router": {"rules": [{"name": "guard-all", "route": "guarded"}]}}
EDIT_TOOL = {"name": "Edit", "description": "edit a file",
             "input_schema": {"type": "object", "properties": {"file_path": {"type": "string", "enum": ["/r/a.py"]}},
                              "required": ["file_path"]}}


def test_a_risky_guarded_draft_under_on_risky_direct_goes_on_to_the_strong_provider(tmp_path):
    """guard.on_risky: direct: the draft answered with a file edit, so the client's own request
    continues to the strong provider (path direct, untouched body), recorded as guarded with the
    draft's action, why it escalated, and the draft's usage (paid for, not served)."""
    async def scenario(app, sims):
        out = await exchange(app, model_call("/v1/messages", {
            "model": "claude-sonnet-5", "max_tokens": 100, "tools": [EDIT_TOOL],
            "messages": [{"role": "user", "content": "Fix it. sim:tool=Edit"}]}))
        return out, [r.json["model"] for r in sims["anthropic"].received], app.ledger
    (extend, body), models, ledger = run(tmp_path, {**GUARD_ALL, "guard": {"on_risky": "direct"}}, scenario)
    assert extend.override_message_timeout.seconds == 60 + 5  # the draft's limit alone: nothing to verify
    assert path_of(body) == "direct" and not body.request_body.response.HasField("body_mutation")
    assert models == ["sim-draft-anthropic"]  # the strong provider is Envoy's to call, with the client's request
    (rec,) = ledger._recent  # finished when the stream ended (no answer came back here)
    assert (rec.path, rec.rule, rec.guarded, rec.escalation) == ("direct", "guard-all", True, "file_edit")
    assert (rec.guard_action.kind, rec.guard_action.tool, rec.guard_action.target) == ("file_edit", "Edit", "/r/a.py")
    assert rec.usage["draft"].output_tokens > 0
    assert ledger.metrics.registry.get_sample_value("cascade_guarded_requests_total", {
        "path": "direct", "action": "file_edit", "escalation": "file_edit"}) == 1
