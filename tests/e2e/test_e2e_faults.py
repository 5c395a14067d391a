"""The fault matrix, end to end through a real Envoy and the official SDKs: every fault the
simulated providers inject, at every stage, for both client APIs, JSON and SSE, with the exact
outcome the client gets. docs/reliability.md has the same table, row by row.

A cell's outcome is one of the classes below; each checks everything the client saw: the HTTP
status, `x-cascade-path`, the answer (whose model, complete or not), and for an error the SDK's
exact exception class, its status and that the body is in the API's own error shape. Which
providers were called, and how, is checked too, so a cell cannot pass by taking another path.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import anthropic
import httpx2
import openai
import pytest

from stack import CLIENT_KEY, DRAFT_MODELS, key_of, stack_fixture

APIS = ("anthropic", "openai")
MODES = ("json", "sse")
FAULTS = ("timeout", 500, 429, "malformed", "truncate", "reset", "stall")
STAGES = ("cascade draft", "cascade verify", "skipped draft", "direct strong")
LIMIT_S = 1  # cascade.draft_timeout_s and verify_timeout_s
LATE_S = 1.5  # the "timeout" fault: the first token (JSON: the answer) this late, past LIMIT_S
STRONG = {"anthropic": "claude-sonnet-5", "openai": "gpt-6.2-sol"}  # priced: unpriced models go direct
CHEAP = {"anthropic": "claude-haiku-4-5", "openai": "gpt-5.4-mini"}  # the router sends these direct
COMPLEX = ("Review this retry policy for a payment API and explain what could double-charge a "
           "customer, and how idempotency keys prevent it.")  # cascade
SIMPLE = "hi"  # skipped
MALFORMED = b'{"id": "x", "content": ['  # what the sim's "malformed" fault sends


stack = stack_fixture("faults", extra_config={"cascade": {"draft_timeout_s": LIMIT_S, "verify_timeout_s": LIMIT_S}})


@pytest.fixture(autouse=True)
def _reset(stack):
    yield
    stack.quick()
    stack.clear()


# ---- what the client saw ---------------------------------------------------------------------

@dataclass
class Got:
    status: int | None = None  # None: no response at all
    path: str | None = None  # x-cascade-path
    text: str = ""  # the answer's text as the client assembled it
    complete: bool = False  # a parsed JSON answer, or a stream that reached its end
    events: int = 0  # SSE: events (anthropic) or chunks (openai) the SDK yielded
    exc: BaseException | None = None
    error_json: object = None  # an HTTP error's body, as sent


def ask(stack, api: str, mode: str, text: str, model: str, timeout_s: float = 8) -> Got:
    got = Got()
    kw = dict(model=model, messages=[{"role": "user", "content": text}], stream=mode == "sse")
    try:
        if api == "anthropic":
            client = anthropic.Anthropic(base_url=stack.anthropic_url, api_key=CLIENT_KEY, max_retries=0,
                                         timeout=timeout_s)
            raw = client.messages.with_raw_response.create(max_tokens=100, **kw)
        else:
            client = openai.OpenAI(base_url=stack.openai_url, api_key=CLIENT_KEY, max_retries=0, timeout=timeout_s)
            raw = client.chat.completions.with_raw_response.create(**kw)
        got.status, got.path = raw.status_code, raw.headers.get("x-cascade-path")
        if mode == "json":
            answer = raw.parse()
            got.text = answer.content[0].text if api == "anthropic" else answer.choices[0].message.content
            got.complete = True
        else:
            for ev in raw.parse():
                got.events += 1
                if api == "anthropic":
                    if ev.type == "content_block_delta" and ev.delta.type == "text_delta":
                        got.text += ev.delta.text
                    got.complete = ev.type == "message_stop"
                else:
                    for choice in ev.choices:
                        got.text += choice.delta.content or ""
                        got.complete = got.complete or choice.finish_reason is not None
    except (anthropic.APIStatusError, openai.APIStatusError) as exc:
        got.exc, got.status = exc, exc.response.status_code
        got.path = exc.response.headers.get("x-cascade-path")
        if exc.response.status_code >= 400:
            got.error_json = exc.response.json()
    except Exception as exc:  # recorded, then checked against the cell's exact class
        got.exc = exc
    return got


# ---- the outcomes ----------------------------------------------------------------------------

def _error_shape(api: str, body: object) -> None:
    """The API's own error shape, so the SDK raises its proper error class."""
    if api == "anthropic":
        assert isinstance(body, dict) and body["type"] == "error", body
        assert isinstance(body["error"]["type"], str) and isinstance(body["error"]["message"], str), body
    else:
        assert isinstance(body, dict) and isinstance(body["error"]["message"], str), body
        assert isinstance(body["error"]["type"], str), body


@dataclass(frozen=True)
class Answered:
    """200 and the whole answer, from the model the client asked for (the strong provider)."""
    path: str

    def check(self, api, mode, got: Got, model: str) -> None:
        assert got.exc is None, repr(got.exc)
        assert (got.status, got.path, got.complete) == (200, self.path, True)
        assert got.text.startswith(f"Simulated reply from {model}: "), got.text


@dataclass(frozen=True)
class HttpError:
    """No answer: an HTTP error, raised by the SDK as exactly `exc[api]`, its body in the API's
    own error shape."""
    path: str
    status: int
    exc: dict[str, type]

    def check(self, api, mode, got: Got, model: str) -> None:
        assert type(got.exc) is self.exc[api], repr(got.exc)
        assert (got.status, got.path, got.exc.status_code) == (self.status, self.path, self.status)
        _error_shape(api, got.error_json)


@dataclass(frozen=True)
class ErrorEvent:
    """200, the start of the draft's answer, then an error event in the client's format (never a
    quiet end, never a cut connection): the anthropic SDK raises APIStatusError (the stream's 200
    as its status), the openai SDK APIError, each with the error in its API's shape."""
    path: str
    message: str  # what the event says happened

    def check(self, api, mode, got: Got, model: str) -> None:
        assert (got.status, got.path, got.complete) == (200, self.path, False)
        assert got.text.startswith(f"Simulated reply from {DRAFT_MODELS[api]}: "), got.text
        if api == "anthropic":
            assert type(got.exc) is anthropic.APIStatusError, repr(got.exc)
            assert got.exc.status_code == 200
            assert got.exc.body == {"type": "error", "error": {"type": "api_error", "message": self.message}}
        else:
            assert type(got.exc) is openai.APIError, repr(got.exc)
            assert got.exc.body == {"message": self.message, "type": "server_error", "param": None, "code": None}


@dataclass(frozen=True)
class Cut:
    """200, the start of the answer, then the connection ends without the stream's end: the SDK
    raises exactly `exc[api]` (not ours to do better: see the table's note)."""
    path: str
    exc: dict[str, type]

    def check(self, api, mode, got: Got, model: str) -> None:
        assert (got.status, got.path, got.complete) == (200, self.path, False)
        assert got.text.startswith(f"Simulated reply from {model}: "), got.text
        assert type(got.exc) is self.exc[api], repr(got.exc)


@dataclass(frozen=True)
class CutJson:
    """A JSON answer cut after its headers: the SDK raises exactly `exc[api]` (a connection
    error, which it retries) and returns nothing; or, when the cut beat the headers to Envoy's
    downstream side, Envoy's 502 in the API's shape (`or_502[api]`)."""
    exc: dict[str, type]
    or_502: dict[str, type]

    def check(self, api, mode, got: Got, model: str) -> None:
        assert got.complete is False and not got.text
        assert type(got.exc) in (self.exc[api], self.or_502[api]), repr(got.exc)


@dataclass(frozen=True)
class ClientTimeout:
    """Nothing more comes and the client's own timeout ends it: exactly `exc[api]`. JSON: not
    even the headers (the answer is buffered to be metered); SSE: 200 and the start of the
    answer first."""
    path: str
    exc: dict[str, type]

    def check(self, api, mode, got: Got, model: str) -> None:
        assert type(got.exc) is self.exc[api], repr(got.exc)
        if mode == "json":
            assert (got.status, got.path, got.text) == (None, None, "")
        else:
            assert (got.status, got.path, got.complete) == (200, self.path, False)
            assert got.text.startswith(f"Simulated reply from {model}: "), got.text


@dataclass(frozen=True)
class Unchanged:
    """The provider's malformed 200 passed through as it is: the JSON body fails to parse in the
    SDK (json.JSONDecodeError); as a stream it holds no event, so the SDK yields nothing."""
    path: str

    def check(self, api, mode, got: Got, model: str) -> None:
        assert (got.status, got.path, got.text, got.complete) == (200, self.path, "", False)
        if mode == "json":
            assert type(got.exc) is json.JSONDecodeError, repr(got.exc)
            assert got.exc.doc == MALFORMED.decode()  # byte for byte what the provider sent
        else:
            assert (got.exc, got.events) == (None, 0)


FALLBACK = Answered("fallback")
BOTH_500 = {"anthropic": anthropic.InternalServerError, "openai": openai.InternalServerError}

# (stage, fault) -> the outcome, or {mode: outcome} where JSON and SSE differ.
MATRIX: dict[tuple[str, object], object] = {
    # The server calls the draft itself, within draft_timeout_s; anything but a whole answer in
    # time (JSON or SSE: it reads the stream whole) sends the client's request to the strong model.
    **{("cascade draft", f): FALLBACK for f in FAULTS},
    # The same for the verify call (verify_timeout_s); the fallback is a new strong call, which the
    # fault no longer hits ("timeout": it is late too, and answers within Envoy's 600 s).
    **{("cascade verify", f): FALLBACK for f in FAULTS},
    # The relay sends the client nothing before the draft's first content: every fault before it
    # (a JSON answer is read whole first) is answered by the strong model.
    **{("skipped draft", f): FALLBACK for f in ("timeout", 500, 429, "malformed", "reset")},
    # After the first content the client has part of the draft's answer: there is no way back to
    # another model, so the stream ends with an error event in the client's own format.
    ("skipped draft", "truncate"): {"json": FALLBACK,
                                    "sse": ErrorEvent("skipped", "the draft provider's stream broke off")},
    ("skipped draft", "stall"): {"json": FALLBACK,
                                 "sse": ErrorEvent("skipped", "the draft provider's stream stalled")},
    # The direct path is the client's own request to the strong provider: its faults are its own.
    ("direct strong", "timeout"): Answered("direct"),  # the route allows 600 s: the answer comes late
    ("direct strong", 500): HttpError("direct", 500, BOTH_500),
    ("direct strong", 429): HttpError("direct", 429, {"anthropic": anthropic.RateLimitError,
                                                      "openai": openai.RateLimitError}),
    ("direct strong", "malformed"): Unchanged("direct"),
    # Envoy meters the answer as it passes (issue 19: nothing buffers it any more, JSON included),
    # so the headers are gone when the provider cuts the body: the connection is cut as the
    # provider cut it, as without the sidecar (both SDKs retry a connection error). (JSON was
    # once buffered to be metered by the server, and the cut became Envoy's 502.) The anthropic
    # SDK lets httpx's error through on a stream, the openai SDK wraps it.
    ("direct strong", "truncate"): {"json": CutJson({"anthropic": anthropic.APIConnectionError,
                                                     "openai": openai.APIConnectionError}, BOTH_500),
                                    "sse": Cut("direct", {"anthropic": httpx2.RemoteProtocolError,
                                                          "openai": openai.APIConnectionError})},
    ("direct strong", "reset"): HttpError("direct", 503, {"anthropic": anthropic.ServiceUnavailableError,
                                                          "openai": openai.InternalServerError}),
    # A provider that stalls on the direct path is waited for as long as the client waits.
    ("direct strong", "stall"): {"json": ClientTimeout("direct", {"anthropic": anthropic.APITimeoutError,
                                                                  "openai": openai.APITimeoutError}),
                                 "sse": ClientTimeout("direct", {"anthropic": httpx2.ReadTimeout,
                                                                 "openai": openai.APITimeoutError})},
}
assert set(MATRIX) == {(s, f) for s in STAGES for f in FAULTS}


def outcome(stage, fault, mode):
    cell = MATRIX[(stage, fault)]
    return cell[mode] if isinstance(cell, dict) else cell


def inject(sim, fault, mode) -> None:
    if fault == "timeout":
        sim.latency.ttft_s = LATE_S
        return
    sim.fail_next(fault)
    if fault == "truncate" and mode == "sse":
        sim.latency.tokens_per_s = 50  # a stream breaks mid-answer, not in the packet of its headers


def model_calls(sim) -> list:
    return [r for r in sim.received if r.path.endswith(("/messages", "/chat/completions"))]


def check_calls(stack, api, stage, fault, expected) -> None:
    """The calls each provider got, so the fault hit the stage it was meant for."""
    draft, strong = model_calls(stack.sims[f"draft_{api}"]), model_calls(stack.sims[f"strong_{api}"])
    verify = ["[cascade-verify nonce=" in r.body.decode() for r in strong]
    fell_back = isinstance(expected, Answered) and expected.path == "fallback"
    want = {"cascade draft": (1, [False]),
            "cascade verify": (1, [True, False]),
            "skipped draft": (1, [False] if fell_back else []),
            "direct strong": (0, [False])}[stage]
    assert (len(draft), verify) == want
    assert all(key_of(r.headers) == CLIENT_KEY for r in strong)
    if fault != "timeout":
        target = stack.sims[f"{'strong' if stage in ('cascade verify', 'direct strong') else 'draft'}_{api}"]
        assert target.faults_served == 1


@pytest.mark.parametrize("fault", FAULTS, ids=str)
@pytest.mark.parametrize("stage", STAGES, ids=lambda s: s.replace(" ", "-"))
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("api", APIS)
def test_fault_matrix(stack, api, mode, stage, fault):
    expected = outcome(stage, fault, mode)
    target = "strong" if stage in ("cascade verify", "direct strong") else "draft"
    for sim in stack.sims.values():
        sim.faults_served = 0
    inject(stack.sims[f"{target}_{api}"], fault, mode)
    text = SIMPLE if stage == "skipped draft" else COMPLEX
    model = CHEAP[api] if stage == "direct strong" else STRONG[api]
    # A direct stall waits for the client's own timeout: short here, to keep the matrix fast.
    got = ask(stack, api, mode, text, model, timeout_s=2 if (stage, fault) == ("direct strong", "stall") else 8)
    expected.check(api, mode, got, model)
    check_calls(stack, api, stage, fault, expected)


# ---- the defect: a draft that stalls on a streamed skipped request ---------------------------
# Before the relay the client got 200, part of the stream, then a cut connection, and the log
# line said 200. Now: a stall before the draft's first content is answered by the strong model;
# after it, the stream ends with an error event in the client's format, and the log line records
# an error (502 and the reason), not a success and not a fallback.

def request_lines(stack, since: int) -> list[dict]:
    text = stack.server_log.read_text()[since:]
    return [json.loads(line) for line in text.splitlines() if line.startswith('{"event": "request"')]


def wait_for_request_line(stack, since: int) -> dict:
    deadline = time.monotonic() + 5
    while not (lines := request_lines(stack, since)):
        assert time.monotonic() < deadline, "no request line logged"
        time.sleep(0.05)
    (line,) = lines
    return line


@dataclass
class StallCase:
    mode: str
    how: str  # "stall": the draft's answer starts, then nothing; "late": its first token past the limit
    outcome: object
    log: dict = field(default_factory=dict)


STALL_CASES = [
    # JSON: the draft sent its headers, then nothing; the relay had sent nothing.
    StallCase("json", "stall", FALLBACK, {"path": "fallback", "status": 200, "fallback_reason": "draft-stalled"}),
    # SSE, stalled before its first content (headers and message_start came; no token in time).
    StallCase("sse", "late", FALLBACK, {"path": "fallback", "status": 200, "fallback_reason": "draft-stalled"}),
    # SSE, stalled after the client had part of the answer.
    StallCase("sse", "stall", ErrorEvent("skipped", "the draft provider's stream stalled"),
              {"path": "skipped", "status": 502, "error": "draft-stalled"}),
]


@pytest.mark.parametrize("case", STALL_CASES, ids=lambda c: f"{c.mode}-{c.how}")
@pytest.mark.parametrize("api", APIS)
def test_a_stalled_draft_on_a_skipped_request(stack, api, case):
    draft = stack.sims[f"draft_{api}"]
    if case.how == "late":
        draft.latency.ttft_s = 3 * LIMIT_S  # past draft_timeout_s: the relay's limit ends it
    else:
        draft.fail_next("stall")
    fallbacks = stack.metric_total("cascade_fallbacks_total", reason="draft-stalled")
    errors = stack.metric_total("cascade_request_errors_total", path="skipped", reason="draft-stalled")
    since = len(stack.server_log.read_text())
    t0 = time.monotonic()
    got = ask(stack, api, case.mode, SIMPLE, STRONG[api])
    assert time.monotonic() - t0 < LIMIT_S + 1  # the relay's limit ended it, not the client's
    case.outcome.check(api, case.mode, got, STRONG[api])
    line = wait_for_request_line(stack, since)
    assert {k: line.get(k) for k in case.log} == case.log, line
    assert ("error" if "fallback_reason" in case.log else "fallback_reason") not in line, line
    assert line["rule"] == "short-user-text" and line["api"] == api
    # The draft's connection is let go (the relay closed it), not held until the sim stops.
    deadline = time.monotonic() + 5
    while draft.held:
        assert time.monotonic() < deadline, "the relay still holds the stalled draft's connection"
        time.sleep(0.02)
    counted_as_error = case.outcome is not FALLBACK
    assert stack.metric_total("cascade_fallbacks_total", reason="draft-stalled") == fallbacks + (not counted_as_error)
    assert stack.metric_total("cascade_request_errors_total", path="skipped",
                              reason="draft-stalled") == errors + counted_as_error


def test_a_draft_stalling_in_reasoning_the_client_never_sees_is_answered_by_strong(stack):
    # Claude Code with thinking on, skipped: the draft is asked without thinking, and should it
    # reason anyway (sim:think: as reasoning models do) its reasoning is dropped on the way. A
    # draft that stalls while still reasoning has sent the client nothing it would see, so the
    # strong model answers. (The relay used to start the client's answer on the first reasoning
    # delta, then end it with an error event.)
    draft = stack.sims["draft_anthropic"]
    draft.latency.tokens_per_s = 1 / (2 * LIMIT_S)  # the first token at once, the next 2 s later
    client = anthropic.Anthropic(base_url=stack.anthropic_url, api_key=CLIENT_KEY, max_retries=0)
    with client.messages.stream(model=STRONG["anthropic"], max_tokens=2048,
                                thinking={"type": "enabled", "budget_tokens": 1024},
                                messages=[{"role": "user", "content": "sim:think hi"}]) as s:
        path = s.response.headers["x-cascade-path"]
        final = s.get_final_message()
    assert path == "fallback"
    assert [b.type for b in final.content] == ["thinking", "text"]
    assert final.content[1].text.startswith(f"Simulated reply from {STRONG['anthropic']}: ")
    (asked,) = model_calls(draft)
    assert asked.json["thinking"] == {"type": "disabled"}
