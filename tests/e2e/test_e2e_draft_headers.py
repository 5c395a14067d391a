"""Nothing of the client's reaches a draft provider: not its key, and not any other header it
sends, on the skipped path (the relay's draft call) or a cascade (the server's draft call), both
APIs, JSON and SSE. conftest.py checks every draft request of every test against the allow-list
(derived from extproc.credentials.draft_auth); here the client sends the headers most likely to
carry a secret, and a direct request shows they do leave the client and pass Envoy."""
import anthropic
import openai
import pytest

from leaks import check_draft_request
from stack import CLIENT_KEY, DRAFT_KEY, key_of

COMPLEX = ("Review this retry policy for a payment API and explain what could double-charge a "
           "customer, and how idempotency keys prevent it.")
STRONG = {"anthropic": "claude-sonnet-5", "openai": "gpt-6.2-sol"}  # priced: unpriced models go direct
CHEAP = {"anthropic": "claude-haiku-4-5", "openai": "gpt-5.4-mini"}
HOSTILE = {
    "cookie": f"session={CLIENT_KEY}",
    "proxy-authorization": f"Basic {CLIENT_KEY}",
    "api-key": f"{CLIENT_KEY}-azure",  # Azure OpenAI's key header
    "x-goog-api-key": f"{CLIENT_KEY}-gemini",
    "openai-organization": "org-client-secret-org",
    "anthropic-beta": "client-secret-beta-2099-01-01",
    "x-secret-thing": "client-secret-thing",
}
# The client's own strong-provider headers, which the server's verify call reuses (DESIGN:
# "Credentials"); the other hostile headers go nowhere but where the client's request goes.
CLIENTS_STRONG_HEADERS = {"anthropic": {"anthropic-beta"}, "openai": {"openai-organization"}}


def send(stack, api: str, text: str, model: str, stream: bool) -> str:
    """One request with the hostile headers; returns x-cascade-path, after reading the answer."""
    if api == "anthropic":
        client = anthropic.Anthropic(base_url=stack.anthropic_url, api_key=CLIENT_KEY, max_retries=0)
        raw = client.messages.with_raw_response.create(
            model=model, max_tokens=100, stream=stream, messages=[{"role": "user", "content": text}],
            extra_headers=HOSTILE)
    else:
        client = openai.OpenAI(base_url=stack.openai_url, api_key=CLIENT_KEY, max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model=model, stream=stream, messages=[{"role": "user", "content": text}], extra_headers=HOSTILE)
    answer = raw.parse()
    if stream:
        assert list(answer)
    return raw.headers["x-cascade-path"]


def assert_nothing_hostile(headers: dict, body: bytes, keep: set = frozenset()) -> None:
    for name, value in HOSTILE.items():
        if name in keep:
            assert headers[name] == value
            continue
        assert name not in headers, name
        assert value not in str(headers) and value.encode() not in body, name


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("text, path", [("hi", "skipped"), (COMPLEX, "accepted")], ids=["skipped", "cascade"])
@pytest.mark.parametrize("api", ["anthropic", "openai"])
def test_no_client_header_reaches_a_draft_provider(stack, api, text, path, stream):
    assert send(stack, api, text, STRONG[api], stream) == path
    draft = stack.sims[f"draft_{api}"]
    (got,) = draft.received
    check_draft_request(f"draft_{api}", draft, got)  # the allow-list, here explicitly
    assert key_of(got.headers) == DRAFT_KEY
    assert_nothing_hostile(got.headers, got.body)
    strong = stack.sims[f"strong_{api}"].received
    if path == "skipped":
        assert strong == []
    else:  # the verify call: the client's key and its own strong-provider headers, nothing else
        (verify,) = strong
        assert key_of(verify.headers) == CLIENT_KEY
        assert_nothing_hostile(verify.headers, verify.body, keep=CLIENTS_STRONG_HEADERS[api])


@pytest.mark.parametrize("api", ["anthropic", "openai"])
def test_the_hostile_headers_do_leave_the_client(stack, api):
    # So the test above is not vacuous: on the direct path (the client's own request, untouched)
    # the strong provider gets every one of them.
    assert send(stack, api, "hi", CHEAP[api], stream=False) == "direct"
    (got,) = stack.sims[f"strong_{api}"].received
    assert {k: got.headers.get(k) for k in HOSTILE} == HOSTILE
    assert stack.sims[f"draft_{api}"].received == []
