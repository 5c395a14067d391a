"""Bad input through a real Envoy: each gets a pass-through (the provider's own answer) or a
clear error in the client API's own error format; never a crash, a hang or a lost request."""
import gzip
import json
import socket
import urllib.error
import urllib.request

import pytest

from stack import CLIENT_KEY, Stack

GOOD = {"model": "claude-sonnet-5", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}


def send(url, body: bytes, method="POST", **headers):
    h = {"content-type": "application/json", "x-api-key": CLIENT_KEY, "anthropic-version": "2023-06-01", **headers}
    req = urllib.request.Request(url, data=body if method == "POST" else None, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


@pytest.mark.parametrize("name, body, headers, expected", [
    ("invalid JSON", b'{"model": "claude', {}, (400, "direct")),
    ("a JSON array", b"[1, 2]", {}, (400, "direct")),
    ("no messages", json.dumps({"model": "m", "max_tokens": 5}).encode(), {}, (400, "direct")),
    # No body, so no body message: nothing for the server to decide, the provider judges.
    ("empty body", b"", {}, (400, "direct")),
    ("wrong content-type", json.dumps(GOOD).encode(), {"content-type": "text/plain"}, (200, "direct")),
    # Compressed: not read by the sidecar; the provider decides (the simulated one inflates it).
    ("gzip body", gzip.compress(json.dumps(GOOD).encode()), {"content-encoding": "gzip"}, (200, "direct")),
    ("odd unicode", json.dumps({**GOOD, "messages": [{"role": "user", "content": "h\\u0000i \\u202e\\ud83d\\ude00"}]})
     .encode().replace(b"\\\\", b"\\"), {}, (200, "skipped")),
    ("lone surrogate", b'{"model": "claude-sonnet-5", "max_tokens": 50, "messages": '
                       b'[{"role": "user", "content": "hi \\ud800"}]}', {}, (400, "direct")),  # not valid JSON text: the provider's to judge
])
def test_bad_input(stack, name, body, headers, expected):
    status, hdrs, out = send(stack.anthropic_url + "/v1/messages", body, **headers)
    assert (status, hdrs.get("x-cascade-path")) == expected, (name, out[:200])
    if status >= 400:  # the provider's own error, in its own shape
        assert json.loads(out)["type"] == "error"


def test_twenty_megabyte_body_passes(stack):
    big = {**GOOD, "model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "x" * (20 << 20)}]}
    status, hdrs, out = send(stack.anthropic_url + "/v1/messages", json.dumps(big).encode())
    assert (status, hdrs.get("x-cascade-path")) == (200, "direct")


def test_body_over_the_limit_is_a_413_in_the_clients_format(tmp_path):
    s = Stack(tmp_path, extra_config={"limits": {"max_body_bytes": 1 << 20}})
    try:
        huge = {**GOOD, "messages": [{"role": "user", "content": "x" * (2 << 20)}]}
        status, hdrs, out = send(s.anthropic_url + "/v1/messages", json.dumps(huge).encode())
        assert (status, hdrs.get_all("x-cascade-path")) == (413, ["rejected"])  # Envoy's own refusal
        assert json.loads(out)["type"] == "error"
        status, hdrs, out = send(s.openai_url + "/chat/completions", json.dumps(huge).encode())
        assert (status, hdrs.get_all("x-cascade-path")) == (413, ["rejected"])
        assert "error" in json.loads(out)
        assert s.sims["strong_anthropic"].received == []
    finally:
        s.close()


@pytest.mark.parametrize("method, path", [("GET", "/v1/models"), ("POST", "/v1/messages/count_tokens"),
                                          ("GET", "/"), ("GET", "/some/other/thing"),
                                          ("GET", "/v1/messages")])  # not a model call: the provider's 405
def test_other_paths_pass_through(stack, method, path):
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
    status, hdrs, out = send(stack.anthropic_url + path, body, method=method)
    assert hdrs.get_all("x-cascade-path") == ["direct"]
    got = stack.sims["strong_anthropic"].received
    assert len(got) == 1 and got[0].path == path  # it reached the provider, as it was


def _raw_http(port: int, request: bytes) -> bytes:
    """Send raw bytes, read until the server closes (HTTP/1.0: the end of the body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(request)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_http_1_0_request_is_answered(stack):
    # Envoy's default answers HTTP/1.0 with nothing at all; old clients and probes still speak it.
    body = json.dumps({**GOOD, "model": "claude-haiku-4-5"}).encode()
    out = _raw_http(stack.port, b"POST /v1/messages HTTP/1.0\r\nHost: api.anthropic.com\r\n"
                    b"content-type: application/json\r\nanthropic-version: 2023-06-01\r\n"
                    + f"x-api-key: {CLIENT_KEY}\r\ncontent-length: {len(body)}\r\n\r\n".encode() + body)
    head, _, payload = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.") and b" 200 " in head.split(b"\r\n")[0], out[:300]
    assert b"x-cascade-path: direct" in head.lower()
    assert json.loads(payload)["type"] == "message"


SKIPPABLE = {"anthropic": {"model": "claude-sonnet-5", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]},
             "openai": {"model": "gpt-6.2-sol", "messages": [{"role": "user", "content": "hi"}]}}


def _invalid(api: str, change: dict) -> bytes:
    return json.dumps({**SKIPPABLE[api], **change}).encode()


INVALID = {  # (name, body): each a short "hi" the router would skip, if it were valid
    **{f"model {name}": lambda api, v=v: _invalid(api, {"model": v})
       for name, v in (("null", None), ("a number", 5), ("a list", ["claude-sonnet-5"]), ("empty", ""))},
    'stream "yes"': lambda api: _invalid(api, {"stream": "yes"}),
    # The provider may refuse it, or read the first value; orjson, the sidecar's parser, keeps the last.
    "model twice": lambda api: _invalid(api, {})[:-1] + b', "model": "strong-model-2"}',
    "messages an object": lambda api: _invalid(api, {"messages": {"role": "user", "content": "hi"}}),
    "max_tokens 0": lambda api: _invalid(api, {"max_tokens": 0}),
    "max_tokens a string": lambda api: _invalid(api, {"max_tokens": "50"}),
    "tools not a list": lambda api: _invalid(api, {"tools": {"name": "x"}}),
}


@pytest.mark.parametrize("name", list(INVALID))
@pytest.mark.parametrize("api", ["anthropic", "openai"])
def test_invalid_request_goes_to_the_strong_provider_unchanged(stack, api, name):
    """What the strong API refuses is not routed: the draft never answers it; the strong provider
    gets the client's bytes and the client its 400."""
    raw = INVALID[name](api)
    url = stack.anthropic_url + "/v1/messages" if api == "anthropic" else stack.openai_url + "/chat/completions"
    status, hdrs, out = send(url, raw, **({} if api == "anthropic" else {"authorization": f"Bearer {CLIENT_KEY}"}))
    assert (status, hdrs.get("x-cascade-path")) == (400, "direct"), (name, out[:300])
    err = json.loads(out)
    assert err["type"] == "error" if api == "anthropic" else err["error"]["type"] == "invalid_request_error"
    got = stack.sims[f"strong_{api}"].received
    assert [r.body for r in got] == [raw]  # byte for byte
    assert stack.sims[f"draft_{api}"].received == []


def test_invalid_request_from_the_sdks_gets_the_strong_providers_400(stack):
    import anthropic
    import openai

    a = anthropic.Anthropic(base_url=stack.anthropic_url, api_key=CLIENT_KEY, max_retries=0)
    with pytest.raises(anthropic.BadRequestError) as exc:
        a.messages.create(model="claude-sonnet-5", max_tokens=50, messages=[{"role": "user", "content": "hi"}],
                          extra_body={"stream": "yes"})
    assert exc.value.response.headers["x-cascade-path"] == "direct"
    o = openai.OpenAI(base_url=stack.openai_url, api_key=CLIENT_KEY, max_retries=0)
    with pytest.raises(openai.BadRequestError) as exc:
        o.chat.completions.create(model="gpt-6.2-sol", messages=[{"role": "user", "content": "hi"}],
                                  extra_body={"model": None})
    assert exc.value.response.headers["x-cascade-path"] == "direct"
    assert stack.sims["draft_anthropic"].received == stack.sims["draft_openai"].received == []
