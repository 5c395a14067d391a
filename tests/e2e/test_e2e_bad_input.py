"""Bad input through a real Envoy: each gets a pass-through (the provider's own answer) or a
clear error in the client API's own error format; never a crash, a hang or a lost request."""
import gzip
import json
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
