"""The ext_proc server over real gRPC (no Envoy): what it tells Envoy for each path."""
import asyncio
import json

import grpc
import pytest
import yaml

from cascade_extproc import config
from cascade_extproc._proto import core_pb2, external_processor_pb2 as ep
from cascade_extproc._proto import external_processor_pb2_grpc as ep_grpc
from cascade_extproc._proto import processing_mode_pb2
from cascade_extproc.app import App
from cascade_extproc.sim import SimProvider

CLIENT_KEY = "client-key-abc"
DRAFT_KEY = "draft-key-xyz"


def headers_msg(path, method="POST", end_of_stream=False, **extra):
    hdrs = {":method": method, ":path": path, "content-type": "application/json",
            "x-api-key": CLIENT_KEY, "authorization": f"Bearer {CLIENT_KEY}", **extra}
    return ep.ProcessingRequest(request_headers=ep.HttpHeaders(
        headers=core_pb2.HeaderMap(headers=[core_pb2.HeaderValue(key=k, raw_value=v.encode())
                                            for k, v in hdrs.items()]),
        end_of_stream=end_of_stream))


def body_msg(body):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return ep.ProcessingRequest(request_body=ep.HttpBody(body=raw, end_of_stream=True))


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


def run(tmp_path, overrides, scenario, with_key=True):
    """Start sims + App on free ports, run `scenario(app, sims)`, tear down."""
    async def main():
        sims = {api: SimProvider(api) for api in ("anthropic", "openai")}
        for s in sims.values():
            await s.start()
        key = tmp_path / "key"
        key.write_text(DRAFT_KEY if with_key else "")
        data = {"listen": {"grpc": "127.0.0.1:0", "admin": "127.0.0.1:0"},
                "providers": {api: {"strong": {"base_url": s.url},
                                    "draft": {"base_url": s.url, "model": f"draft-{api}",
                                              "api_key_file": str(key), "api_key_env": ""}}
                              for api, s in sims.items()}}
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


def set_headers(common):
    return {h.header.key: h.header.raw_value.decode() for h in common.header_mutation.set_headers}


def path_of(resp):
    return resp.dynamic_metadata.fields["cascade"].struct_value.fields["path"].string_value


def test_skipped_rewrites_model_route_path_and_credentials(tmp_path):
    async def scenario(app, sims):
        return await exchange(app, headers_msg("/v1/messages?beta=true"),
                              body_msg({"model": "claude-sonnet-5", "max_tokens": 10,
                                        "messages": [{"role": "user", "content": "hi"}]}))

    # A draft base URL with a path prefix, as DeepSeek's Anthropic endpoint has.
    overrides = {"providers": {"anthropic": {"draft": {"base_url": "http://127.0.0.1:9/anthropic"}}}}
    head, body = run(tmp_path, overrides, scenario)
    assert head.WhichOneof("response") == "request_headers"
    common = body.request_body.response
    assert common.clear_route_cache
    hs = set_headers(common)
    assert hs["x-cascade-route"] == "draft-anthropic"
    assert hs[":path"] == "/anthropic/v1/messages?beta=true"
    assert hs["x-api-key"] == DRAFT_KEY
    assert "authorization" in common.header_mutation.remove_headers
    new_body = common.body_mutation.body
    assert json.loads(new_body)["model"] == "draft-anthropic"
    assert hs["content-length"] == str(len(new_body))
    assert CLIENT_KEY not in str(hs) and path_of(body) == "skipped"


def test_openai_skipped_uses_bearer_draft_key(tmp_path):
    async def scenario(app, sims):
        return await exchange(app, headers_msg("/openai/v1/chat/completions", **{
                                  "openai-organization": "org-client", "openai-project": "proj-client"}),
                              body_msg({"model": "gpt-5", "messages": [{"role": "user", "content": "hi"}]}))
    _, body = run(tmp_path, {}, scenario)
    hs = set_headers(body.request_body.response)
    assert hs["authorization"] == f"Bearer {DRAFT_KEY}" and hs[":path"] == "/v1/chat/completions"
    removed = body.request_body.response.header_mutation.remove_headers
    assert {"x-api-key", "openai-organization", "openai-project"} <= set(removed)


def test_non_model_calls_skip_the_body(tmp_path):
    async def scenario(app, sims):
        a = await exchange(app, headers_msg("/v1/messages/count_tokens"))
        b = await exchange(app, headers_msg("/v1/models", method="GET", end_of_stream=True))
        return a + b
    count, models = run(tmp_path, {}, scenario)
    assert count.mode_override.request_body_mode == processing_mode_pb2.ProcessingMode.NONE
    assert path_of(count) == "direct" and path_of(models) == "direct"
    assert not models.HasField("mode_override")  # no body is coming anyway


@pytest.mark.parametrize("raw", [b"{not json", b"[]", b'{"model": "x"}', "\u2603".encode("utf-16")])
def test_unparseable_bodies_pass_through(tmp_path, raw):
    async def scenario(app, sims):
        return await exchange(app, headers_msg("/v1/messages"), body_msg(raw))
    _, body = run(tmp_path, {}, scenario)
    assert body.WhichOneof("response") == "request_body"
    assert not body.request_body.response.HasField("body_mutation") and path_of(body) == "direct"


def test_missing_draft_key_falls_back(tmp_path):
    async def scenario(app, sims):
        return await exchange(app, headers_msg("/v1/messages"),
                              body_msg({"model": "claude-sonnet-5", "max_tokens": 10,
                                        "messages": [{"role": "user", "content": "hi"}]}))
    _, body = run(tmp_path, {}, scenario, with_key=False)
    assert path_of(body) == "fallback" and not body.request_body.response.HasField("body_mutation")


def test_cascade_answers_with_an_immediate_response(tmp_path):
    text = "Explain in depth how to migrate a monolith to services, with a plan and risks. " * 3

    async def scenario(app, sims):
        out = await exchange(app, headers_msg("/v1/messages"),
                             body_msg({"model": "claude-sonnet-5", "max_tokens": 200, "stream": True,
                                       "messages": [{"role": "user", "content": text}]}))
        return out, [r.json["model"] for r in sims["anthropic"].received]
    (_, extend, body), models = run(tmp_path, {}, scenario)
    # Envoy's short message timeout is extended for exactly the cascade's own limits.
    assert extend.override_message_timeout.seconds == 60 + 120 + 5
    imm = body.immediate_response
    assert imm.status.code == 200
    hs = {h.header.key: h.header.raw_value.decode() for h in imm.headers.set_headers}
    assert hs["content-type"].startswith("text/event-stream") and hs["x-cascade-path"] == "accepted"
    assert imm.body.startswith(b"event: message_start")
    assert models == ["draft-anthropic", "claude-sonnet-5"]  # draft first, then the verifier
