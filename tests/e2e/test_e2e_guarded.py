"""The guarded skip end to end: a real Envoy, `cascade-extproc serve`, the simulated providers,
and the official SDKs (anthropic, openai), JSON and SSE. A rule routes every call `guarded`; the
draft (told by a `sim:tool=NAME` directive which tool to call, its arguments from the tool's
schema) answers, and the server judges what that answer does before the client sees a byte:
- a safe answer (a read, a harmless command) is served as it is: 200, `x-cascade-path: skipped`,
  `x-cascade-guard: served`, the draft's tool call; the strong provider is not called;
- a risky one (a file edit, a destructive command) is verified by the strong model: 200,
  `accepted` (the draft's call served) or `enhanced` (the strong model's own answer),
  `x-cascade-guard: verify:<reason>`; the strong provider got the verify turn, with the client's key;
- the draft fails (HTTP 500): 200 from the strong model, `x-cascade-path: fallback`, fallback
  reason `draft-failed`, `x-cascade-guard` absent (the strong provider's answer, not ours).
Each is metered: cascade_guarded_requests_total{path, action, escalation}."""
from __future__ import annotations

import json

import anthropic
import openai
import pytest

from stack import CLIENT_KEY, DRAFT_KEY, DRAFT_MODELS, key_of, stack_fixture

STRONG = {"anthropic": "claude-sonnet-5", "openai": "gpt-6.2-sol"}
APIS, MODES = ("anthropic", "openai"), ("json", "sse")

stack = stack_fixture("guarded", extra_config={"router": {"rules": [{"name": "guard-all", "route": "guarded"}]}})


def tool(name: str, prop: str, value: str) -> dict:
    """A tool whose one argument the simulated model fills with `value` (the enum's first)."""
    return {"name": name, "description": f"{name} tool",
            "input_schema": {"type": "object", "properties": {prop: {"type": "string", "enum": [value]}},
                             "required": [prop]}}


# case → (tool offered, the call the draft makes, the path, the guard header, the metric's action, escalation)
CASES = {
    "read": (tool("Read", "file_path", "/repo/README.md"), "skipped", "served", "read_only", "none"),
    "safe-shell": (tool("Bash", "command", "ls -la src"), "skipped", "served", "shell", "none"),
    "edit": (tool("Edit", "file_path", "/repo/app.py"), "accepted", "verify:file_edit", "file_edit", "file_edit"),
    "destructive-shell": (tool("Bash", "command", "git push --force origin main"), "accepted",
                          "verify:destructive_shell", "shell", "destructive_shell"),
}


def openai_tool(t: dict) -> dict:
    return {"type": "function", "function": {"name": t["name"], "description": t["description"],
                                             "parameters": t["input_schema"]}}


def ask(stack, api: str, mode: str, text: str, tools: list[dict], max_tokens: int = 200):
    """(status, headers, the answer's text, its tool calls [(name, input)]) as the SDK assembled them."""
    stream = mode == "sse"
    calls, text_out = [], ""
    if api == "anthropic":
        client = anthropic.Anthropic(base_url=stack.anthropic_url, api_key=CLIENT_KEY, max_retries=0, timeout=20)
        raw = client.messages.with_raw_response.create(
            model=STRONG[api], max_tokens=max_tokens, stream=stream, tools=tools,
            messages=[{"role": "user", "content": text}])
        if stream:
            parts: dict[int, list] = {}
            for ev in raw.parse():
                if ev.type == "content_block_start" and ev.content_block.type == "tool_use":
                    parts[ev.index] = [ev.content_block.name, ""]
                elif ev.type == "content_block_delta" and ev.delta.type == "input_json_delta":
                    parts[ev.index][1] += ev.delta.partial_json
                elif ev.type == "content_block_delta" and ev.delta.type == "text_delta":
                    text_out += ev.delta.text
            calls = [(n, json.loads(a or "{}")) for n, a in parts.values()]
        else:
            msg = raw.parse()
            calls = [(b.name, b.input) for b in msg.content if b.type == "tool_use"]
            text_out = "".join(b.text for b in msg.content if b.type == "text")
    else:
        client = openai.OpenAI(base_url=stack.openai_url, api_key=CLIENT_KEY, max_retries=0, timeout=20)
        raw = client.chat.completions.with_raw_response.create(
            model=STRONG[api], stream=stream, tools=[openai_tool(t) for t in tools],
            messages=[{"role": "user", "content": text}])
        if stream:
            parts = {}
            for chunk in raw.parse():
                for choice in chunk.choices:
                    text_out += choice.delta.content or ""
                    for tc in choice.delta.tool_calls or []:
                        p = parts.setdefault(tc.index, ["", ""])
                        p[0] += (tc.function.name or "") if tc.function else ""
                        p[1] += (tc.function.arguments or "") if tc.function else ""
            calls = [(n, json.loads(a or "{}")) for n, a in parts.values()]
        else:
            msg = raw.parse().choices[0].message
            calls = [(c.function.name, json.loads(c.function.arguments)) for c in msg.tool_calls or []]
            text_out = msg.content or ""
    return raw.status_code, raw.headers, text_out, calls


def model_calls(sim) -> list:
    return [r for r in sim.received if r.path.endswith(("/v1/messages", "/chat/completions"))]


def guarded_count(stack, **labels) -> float:
    return stack.metric_total("cascade_guarded_requests_total", **labels)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("api", APIS)
def test_the_drafts_answer_is_served_when_safe_and_verified_when_risky(stack, api, mode, case):
    offered, path, guard_header, action, escalation = CASES[case]
    name, (prop,) = offered["name"], offered["input_schema"]["properties"]
    value = offered["input_schema"]["properties"][prop]["enum"][0]
    before = guarded_count(stack, path=path, action=action, escalation=escalation)
    status, headers, _, calls = ask(stack, api, mode, f"Go on. sim:tool={name}", [offered])
    assert (status, headers.get("x-cascade-path"), headers.get("x-cascade-guard")) == (200, path, guard_header)
    assert calls == [(name, {prop: value})]  # the draft's call, whole, in the client's API and format
    draft, strong = model_calls(stack.sims[f"draft_{api}"]), model_calls(stack.sims[f"strong_{api}"])
    assert len(draft) == 1 and key_of(draft[0].headers) == DRAFT_KEY
    assert json.loads(draft[0].body)["model"] == DRAFT_MODELS[api]
    if path == "skipped":
        assert strong == []  # served unchecked: the strong model never saw the turn
    else:
        assert len(strong) == 1 and key_of(strong[0].headers) == CLIENT_KEY
        assert b"[cascade-verify nonce=" in strong[0].body
    assert guarded_count(stack, path=path, action=action, escalation=escalation) == before + 1


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("api", APIS)
def test_a_risky_draft_the_verifier_rejects_is_answered_by_the_strong_model(stack, api, mode):
    offered = CASES["edit"][0]
    status, headers, text, calls = ask(stack, api, mode, "Edit it. sim:tool=Edit sim:reject", [offered])
    assert (status, headers.get("x-cascade-path"), headers.get("x-cascade-guard")) == (200, "enhanced",
                                                                                       "verify:file_edit")
    # the strong model's own answer to the conversation (the simulated one calls the tool too)
    assert calls == [("Edit", {"file_path": "/repo/app.py"})]
    assert len(model_calls(stack.sims[f"strong_{api}"])) == 1


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("api", APIS)
def test_a_draft_failure_on_the_guarded_path_falls_back_to_the_strong_model(stack, api, mode):
    before = stack.metric_total("cascade_fallbacks_total", reason="draft-failed")
    guarded_before = guarded_count(stack, path="fallback", action="none", escalation="draft-failed")
    stack.sims[f"draft_{api}"].fail_next(500)
    status, headers, text, calls = ask(stack, api, mode, "Say something.", [CASES["read"][0]])
    assert (status, headers.get("x-cascade-path"), headers.get("x-cascade-guard")) == (200, "fallback", None)
    assert text.startswith(f"Simulated reply from {STRONG[api]}: ") and calls == []
    strong = model_calls(stack.sims[f"strong_{api}"])
    assert len(strong) == 1 and key_of(strong[0].headers) == CLIENT_KEY
    assert b"[cascade-verify" not in strong[0].body  # the client's own request, not a verification
    assert stack.metric_total("cascade_fallbacks_total", reason="draft-failed") == before + 1
    assert guarded_count(stack, path="fallback", action="none", escalation="draft-failed") == guarded_before + 1


def test_the_log_line_says_the_request_was_guarded_and_why_it_escalated(stack):
    ask(stack, "anthropic", "json", "Edit it. sim:tool=Edit", [CASES["edit"][0]])
    lines = [json.loads(line) for line in stack.server_log.read_text().splitlines()
             if line.startswith("{") and '"event": "request"' in line]
    last = [rec for rec in lines if rec.get("guard")][-1]
    assert last["path"] == "accepted" and last["rule"] == "guard-all"
    assert last["guard"] == {"action": "file_edit", "tool": "Edit", "target": "/repo/app.py", "escalation": "file_edit"}
    assert last["tokens"]["draft"]["output"] > 0 and last["tokens"]["strong"]["output"] > 0


@pytest.mark.parametrize("api", APIS)
def test_the_drafts_reasoning_is_never_shown_and_thinking_stays_on_for_the_strong_model(stack, api):
    """The client asked for thinking (or reasoning); the draft is asked without it and, reasoning
    anyway (`sim:think`), has its reasoning stripped before its answer is judged and served."""
    offered = CASES["read"][0]
    if api == "anthropic":
        client = anthropic.Anthropic(base_url=stack.anthropic_url, api_key=CLIENT_KEY, max_retries=0, timeout=20)
        raw = client.messages.with_raw_response.create(
            model=STRONG[api], max_tokens=2000, thinking={"type": "enabled", "budget_tokens": 1024}, tools=[offered],
            messages=[{"role": "user", "content": "Look. sim:tool=Read sim:think"}])
        msg = raw.parse()
        assert [b.type for b in msg.content if b.type in ("thinking", "redacted_thinking")] == []
        assert [b.name for b in msg.content if b.type == "tool_use"] == ["Read"]
    else:
        client = openai.OpenAI(base_url=stack.openai_url, api_key=CLIENT_KEY, max_retries=0, timeout=20)
        raw = client.chat.completions.with_raw_response.create(
            model=STRONG[api], reasoning_effort="high", tools=[openai_tool(offered)],
            messages=[{"role": "user", "content": "Look. sim:tool=Read sim:think"}])
        body = json.loads(raw.text)
        assert "reasoning_content" not in body["choices"][0]["message"]
        assert [c["function"]["name"] for c in body["choices"][0]["message"]["tool_calls"]] == ["Read"]
    assert (raw.headers.get("x-cascade-path"), raw.headers.get("x-cascade-guard")) == ("skipped", "served")
    (draft,) = model_calls(stack.sims[f"draft_{api}"])
    if api == "anthropic":  # the draft is never asked to think (its thinking could not be shown)
        assert json.loads(draft.body)["thinking"] == {"type": "disabled"}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("api", APIS)
def test_a_looping_draft_on_the_guarded_path_is_a_failed_draft_for_the_strong_model(stack, api, mode):
    """`sim:loop=draft`: the draft repeats a phrase up to its budget (cascade.draft_max_tokens);
    the repetition check (cascade/draft_checks.py, on the cascade's own draft call) fails it: the
    strong model answers the client's request (fallback, draft-degenerate), nothing is verified."""
    before = stack.metric_total("cascade_fallbacks_total", reason="draft-degenerate")
    # (a client's own limit above the budget: under it, a length stop is the client's answer to have)
    status, headers, text, calls = ask(stack, api, mode, "Go on. sim:loop=draft", [CASES["read"][0]], max_tokens=20000)
    assert (status, headers.get("x-cascade-path"), headers.get("x-cascade-guard")) == (200, "fallback", None)
    assert text.startswith(f"Simulated reply from {STRONG[api]}: ")
    (draft,) = model_calls(stack.sims[f"draft_{api}"])
    body = json.loads(draft.body)
    assert body.get("max_tokens", body.get("max_completion_tokens")) == 8192  # the budget, asked for
    (strong,) = model_calls(stack.sims[f"strong_{api}"])
    assert b"[cascade-verify" not in strong.body
    assert stack.metric_total("cascade_fallbacks_total", reason="draft-degenerate") == before + 1
    assert guarded_count(stack, path="fallback", action="none", escalation="draft-degenerate") >= 1
