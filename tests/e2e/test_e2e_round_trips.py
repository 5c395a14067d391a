"""What each kind of call costs in ext_proc messages, through a real Envoy: the request's headers
come with its body (no headers message), a direct answer is read on the side without Envoy
waiting for it, only an answer the server may change is held, and calls that are not model
calls never reach the server."""
import json
import time
import urllib.request

import anthropic
import pytest

from stack import CLIENT_KEY, DRAFT_KEY, Stack, key_of

COMPLEX = ("Refactor the retry loop below so that it backs off exponentially, explain the "
           "trade-offs of jitter, and keep the public interface unchanged.\n```python\n"
           "def fetch(url):\n    for _ in range(3):\n        try:\n            return get(url)\n"
           "        except IOError:\n            pass\n```")
KINDS = [(kind, mode) for kind in ("request_headers", "request_body", "response_headers", "response_body")
         for mode in ("blocking", "observing")]


def messages(stack):
    return {k: stack.metric_total("cascade_extproc_messages_total", kind=k[0], mode=k[1]) for k in KINDS}


def delta(stack, before, requests, timeout_s=5.0):
    """Messages since `before`, once `requests` requests are recorded (a meter stream may still be
    finishing when the client has its answer)."""
    deadline = time.monotonic() + timeout_s
    while stack.requests_total() < requests and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.1)  # let any stray message be counted too
    after = messages(stack)
    return {k: after[k] - before[k] for k in KINDS if after[k] != before[k]}


def ask(stack, text, model):
    client = anthropic.Anthropic(base_url=stack.anthropic_url, api_key=CLIENT_KEY, max_retries=0)
    raw = client.messages.with_raw_response.create(
        model=model, max_tokens=100, messages=[{"role": "user", "content": text}])
    return raw.headers.get("x-cascade-path")


@pytest.mark.parametrize("text, model, path, expected", [
    # One message Envoy waits for (the body); the answer is metered from a copy of its body.
    ("hello", "claude-haiku-4-5", "direct", {("request_body", "blocking"): 1}),
    # The draft's answer may be rewritten or replaced: Envoy waits for the server on it.
    ("hi there", "claude-sonnet-5", "skipped", {("request_body", "blocking"): 1, ("response_headers", "blocking"): 1,
                                               ("response_body", "blocking"): 1}),
    # The server answers the body itself: nothing comes back through Envoy's filters.
    (COMPLEX, "claude-sonnet-5", "accepted", {("request_body", "blocking"): 1}),
])
def test_messages_per_call(stack, text, model, path, expected):
    before, n = messages(stack), stack.requests_total()
    assert ask(stack, text, model) == path
    got = delta(stack, before, n + 1)
    bodies = got.pop(("response_body", "observing"), 0)
    assert got == expected
    assert bodies >= (1 if path == "direct" else 0)  # the answer's body, in however many chunks it came


def test_non_model_calls_never_reach_the_server(stack):
    before, n = messages(stack), stack.requests_total()
    for req in (urllib.request.Request(stack.anthropic_url + "/v1/models", headers={"x-api-key": CLIENT_KEY}),
                urllib.request.Request(stack.anthropic_url + "/v1/messages/count_tokens", method="POST",
                                       data=json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode(),
                                       headers={"x-api-key": CLIENT_KEY, "content-type": "application/json"})):
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.headers["x-cascade-path"] == "direct"
    assert delta(stack, before, n, timeout_s=0) == {} and stack.requests_total() == n


def test_skipped_keeps_the_query_and_the_draft_base_path(tmp_path):
    """The draft route, not the server, rewrites the path and swaps the credentials."""
    s = Stack(tmp_path, draft_base_path="/anthropic")
    try:
        client = anthropic.Anthropic(base_url=s.anthropic_url, api_key=CLIENT_KEY, max_retries=0)
        raw = client.messages.with_raw_response.create(
            model="claude-sonnet-5", max_tokens=50, messages=[{"role": "user", "content": "hi there"}],
            extra_query={"beta": "true"}, extra_headers={"anthropic-beta": "b1"})
        assert raw.headers["x-cascade-path"] == "skipped"
        (got,) = s.sims["draft_anthropic"].received
        assert (got.path, got.query) == ("/anthropic/v1/messages", "beta=true")
        assert key_of(got.headers) == DRAFT_KEY and "authorization" not in got.headers
        assert got.headers["anthropic-version"] and got.headers["anthropic-beta"] == "b1"  # the client's
        assert int(got.headers["content-length"]) == len(got.body)
    finally:
        s.close()


def test_direct_answers_are_metered_from_the_copy(stack):
    """JSON or SSE, told apart by the body itself (the meter filter gets no headers); an error
    counts its status and no tokens."""
    client = anthropic.Anthropic(base_url=stack.anthropic_url, api_key=CLIENT_KEY, max_retries=0)
    kw = dict(model="claude-haiku-4-5", max_tokens=100, messages=[{"role": "user", "content": "hello"}])
    n = stack.requests_total()
    out = stack.metric_total("cascade_tokens_total", provider="strong", kind="output")
    with client.messages.stream(**kw) as s:
        streamed = s.get_final_message()
    made = client.messages.create(**kw)
    stack.sims["strong_anthropic"].fail_next(529)
    with pytest.raises(anthropic.APIStatusError):
        client.messages.create(**kw)
    delta(stack, messages(stack), n + 3)
    assert stack.requests_total(path="direct") >= 3
    grew = stack.metric_total("cascade_tokens_total", provider="strong", kind="output") - out
    assert grew == streamed.usage.output_tokens + made.usage.output_tokens
    assert '"status": 529' in stack.server_log.read_text()  # the error is recorded too
