"""What each kind of call costs in ext_proc messages (each a round trip Envoy waits for), through
a real Envoy: the request's headers come with its body (no headers message), and calls that are
not model calls never reach the server."""
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
KINDS = ("request_headers", "request_body", "response_headers", "response_body")


def messages(stack):
    return {k: stack.metric_total("cascade_extproc_messages_total", kind=k) for k in KINDS}


def delta(stack, before):
    after = messages(stack)
    return {k: after[k] - before[k] for k in KINDS if after[k] != before[k]}


def ask(stack, text, model):
    client = anthropic.Anthropic(base_url=stack.anthropic_url, api_key=CLIENT_KEY, max_retries=0)
    raw = client.messages.with_raw_response.create(
        model=model, max_tokens=100, messages=[{"role": "user", "content": text}])
    return raw.headers.get("x-cascade-path")


@pytest.mark.parametrize("text, model, path, expected", [
    # The body only: the server ends the stream; Envoy meters the answer and its access log
    # brings the usage back (extproc/access_log.py), streamed or not (below).
    ("hello", "claude-haiku-4-5", "direct", {"request_body": 1}),
    # The body, then the relay's answer's headers: the relay meters it, not a message per chunk.
    ("hi there", "claude-sonnet-5", "skipped", {"request_body": 1, "response_headers": 1}),
    # The server answers the body itself: nothing comes back through Envoy's filter.
    (COMPLEX, "claude-sonnet-5", "accepted", {"request_body": 1}),
])
def test_messages_per_call(stack, text, model, path, expected):
    before = messages(stack)
    assert ask(stack, text, model) == path
    assert delta(stack, before) == expected


def test_non_model_calls_never_reach_the_server(stack):
    before, n = messages(stack), stack.requests_total()
    for req in (urllib.request.Request(stack.anthropic_url + "/v1/models", headers={"x-api-key": CLIENT_KEY}),
                urllib.request.Request(stack.anthropic_url + "/v1/messages/count_tokens", method="POST",
                                       data=json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode(),
                                       headers={"x-api-key": CLIENT_KEY, "content-type": "application/json"})):
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.headers["x-cascade-path"] == "direct"
    assert delta(stack, before) == {} and stack.requests_total() == n


def test_the_draft_gets_its_own_base_path_and_nothing_of_the_clients(tmp_path):
    """The relay calls the draft at its own base URL, with the sidecar's key and an allow-list
    of headers: the client's query (?beta=true) and headers (anthropic-beta) are the strong
    API's, not the draft's."""
    s = Stack(tmp_path, draft_base_path="/anthropic")
    try:
        client = anthropic.Anthropic(base_url=s.anthropic_url, api_key=CLIENT_KEY, max_retries=0)
        raw = client.messages.with_raw_response.create(
            model="claude-sonnet-5", max_tokens=50, messages=[{"role": "user", "content": "hi there"}],
            extra_query={"beta": "true"}, extra_headers={"anthropic-beta": "b1", "cookie": "session=1"})
        assert raw.headers["x-cascade-path"] == "skipped"
        (got,) = s.sims["draft_anthropic"].received
        assert (got.path, got.query) == ("/anthropic/v1/messages", "")
        assert key_of(got.headers) == DRAFT_KEY and "authorization" not in got.headers
        assert got.headers["anthropic-version"]  # the client's API version: the request is in that shape
        assert "anthropic-beta" not in got.headers and "cookie" not in got.headers
        assert int(got.headers["content-length"]) == len(got.body)
    finally:
        s.close()


def wait_for(cond, timeout_s=10.0):
    """The access log arrives in batches (every ACCESS_LOG_FLUSH): the records follow the answers."""
    deadline = time.monotonic() + timeout_s
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.05)
    return cond()


def test_direct_answers_are_metered(stack):
    """JSON or SSE; an error counts its status and no tokens; one message per call."""
    client = anthropic.Anthropic(base_url=stack.anthropic_url, api_key=CLIENT_KEY, max_retries=0)
    kw = dict(model="claude-haiku-4-5", max_tokens=100, messages=[{"role": "user", "content": "hello"}])
    n = stack.requests_total(path="direct")
    out = stack.metric_total("cascade_tokens_total", provider="strong", kind="output")
    with client.messages.stream(**kw) as s:
        streamed = s.get_final_message()
    made = client.messages.create(**kw)
    stack.sims["strong_anthropic"].fail_next(529)
    with pytest.raises(anthropic.APIStatusError):
        client.messages.create(**kw)
    assert wait_for(lambda: stack.requests_total(path="direct") == n + 3)
    assert wait_for(lambda: '"status": 529' in stack.server_log.read_text())
    grew = stack.metric_total("cascade_tokens_total", provider="strong", kind="output") - out
    assert grew == streamed.usage.output_tokens + made.usage.output_tokens
    assert '"status": 529' in stack.server_log.read_text()  # the error is recorded too
