"""The fault matrix, end to end through a real Envoy: each provider fault at each stage, and the
client outcome we promise. docs/reliability.md has the same table."""
import anthropic
import pytest

from stack import CLIENT_KEY, Stack

COMPLEX = ("Review this retry policy for a payment API and explain what could double-charge a "
           "customer, and how idempotency keys prevent it.")
FAULTS = ["timeout", 500, 429, "malformed", "truncate", "reset"]
OK = "answered"  # the client gets a model answer, 200


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = Stack(tmp_path_factory.mktemp("faults"),
              extra_config={"cascade": {"draft_timeout_s": 1, "verify_timeout_s": 1}})
    yield s
    s.close()


@pytest.fixture(autouse=True)
def _reset(stack):
    yield
    for sim in stack.sims.values():
        sim.latency.ttft_s = 0
        sim.clear()


def inject(stack, sim, fault):
    if fault == "timeout":
        stack.sims[sim].latency.ttft_s = 2.5  # past the 1 s limits
    else:
        stack.sims[sim].fail_next(fault)


def ask(stack, text, model="claude-sonnet-5", stream=False):
    client = anthropic.Anthropic(base_url=stack.anthropic_url, api_key=CLIENT_KEY, max_retries=0)
    kw = dict(model=model, max_tokens=100, messages=[{"role": "user", "content": text}])
    try:
        if stream:
            with client.messages.stream(**kw) as s:
                path = s.response.headers.get("x-cascade-path")
                msg = s.get_final_message()
        else:
            raw = client.messages.with_raw_response.create(**kw)
            path, msg = raw.headers.get("x-cascade-path"), raw.parse()
    except anthropic.APIStatusError as exc:
        # Whoever produced the error, it is in the API's own error shape.
        assert isinstance(exc.body, dict) and exc.body.get("type") == "error", exc.body
        return exc.response.headers.get("x-cascade-path"), f"error {exc.status_code}"
    except (anthropic.APIError, ValueError) as exc:  # not an HTTP error: a broken stream or body
        return None, f"broken: {type(exc).__name__}"
    assert msg.content and msg.content[-1].text.startswith("Simulated reply")
    return path, OK


# (stage, fault) → (x-cascade-path, client outcome)
MATRIX = {
    **{("cascade draft", f): ("fallback", OK) for f in FAULTS},
    **{("cascade verify", f): ("fallback", OK) for f in FAULTS},
    # The relay sends the client nothing before the draft's first words: every fault before that
    # is answered by the strong model.
    **{("skipped draft", f): ("fallback", OK) for f in FAULTS},
    # The direct path is the client's request to the strong provider: its faults are its own.
    ("direct strong", "timeout"): ("direct", OK),  # the route allows 600 s: the answer comes late
    ("direct strong", 500): ("direct", "error 500"),
    ("direct strong", 429): ("direct", "error 429"),
    ("direct strong", "malformed"): (None, "broken: JSONDecodeError"),  # its body, unchanged
    ("direct strong", "truncate"): ("direct", "error 502"),
    ("direct strong", "reset"): ("direct", "error 503"),
}


@pytest.mark.parametrize("stage, fault", sorted(MATRIX, key=str), ids=lambda v: str(v).replace(" ", "-"))
def test_fault_matrix(stack, stage, fault):
    expected = MATRIX[(stage, fault)]
    if stage == "cascade draft":
        inject(stack, "draft_anthropic", fault)
        got = ask(stack, COMPLEX)
    elif stage == "cascade verify":
        inject(stack, "strong_anthropic", fault)
        if fault == "timeout":  # the fallback call is slow too, but within its 600 s route limit
            pass
        got = ask(stack, COMPLEX)
    elif stage == "skipped draft":
        inject(stack, "draft_anthropic", fault)
        got = ask(stack, "hi")
    else:
        inject(stack, "strong_anthropic", fault)
        got = ask(stack, COMPLEX, model="claude-haiku-4-5")
    assert got == expected


def test_skipped_stream_cut_short_is_never_taken_for_a_whole_answer(stack):
    # Once a stream has started there is no way back to another model: the client must be told.
    stack.sims["draft_anthropic"].fail_next("truncate")
    client = anthropic.Anthropic(base_url=stack.anthropic_url, api_key=CLIENT_KEY, max_retries=0)
    with pytest.raises(Exception) as err:
        with client.messages.stream(model="claude-sonnet-5", max_tokens=100,
                                    messages=[{"role": "user", "content": "hi"}]) as s:
            s.get_final_message()
    # Depending on when the cut reaches Envoy: a 5xx in the API's shape, or a broken stream.
    assert isinstance(err.value, anthropic.APIError) or type(err.value).__name__ == "RemoteProtocolError"


def test_skipped_stream_draft_failing_before_it_starts_is_answered_by_strong(stack):
    stack.sims["draft_anthropic"].fail_next(503)
    path, outcome = ask(stack, "hi", stream=True)
    assert (path, outcome) == ("fallback", OK)
