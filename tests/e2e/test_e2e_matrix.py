"""Every path × both client APIs × stream or not × text or tool use, through a real Envoy:
the official SDKs must parse every answer, whoever produced it."""
import json
import urllib.request

import anthropic
import openai
import pytest

from stack import CLIENT_KEY

LONG = ("Plan the rollout of a schema migration across three services with a backfill, dual "
        "writes, a verification phase and a rollback plan for each step, in detail.")
TEXTS = {"skipped": "hi", "accepted": LONG, "enhanced": LONG + " sim:reject", "fallback": LONG,
         "direct": LONG}
A_TOOL = {"name": "run_tests", "description": "Run the test suite.",
          "input_schema": {"type": "object", "properties": {"target": {"type": "string"}}, "required": ["target"]}}
O_TOOL = {"type": "function", "function": {"name": "run_tests", "description": "Run the test suite.",
                                           "parameters": A_TOOL["input_schema"]}}
CASES = [(api, path, stream, tool) for api in ("anthropic", "openai")
         for path in ("skipped", "accepted", "enhanced", "fallback", "direct")
         for stream in (False, True) for tool in (False, True)]


def _setup(stack, api, path, tool):
    text = TEXTS[path] + (" sim:tool=run_tests" if tool else "")
    if path == "fallback":
        stack.sims[f"draft_{api}"].fail_next(500)
    model = {"anthropic": "claude-haiku-4-5", "openai": "gpt-5-mini"}[api] if path == "direct" else \
        {"anthropic": "claude-sonnet-5", "openai": "gpt-6.2-sol"}[api]
    return text, model


@pytest.mark.parametrize("api, path, stream, tool", CASES,
                         ids=[f"{a}-{p}-{'stream' if s else 'json'}-{'tool' if t else 'text'}" for a, p, s, t in CASES])
def test_sdk_parses_every_answer(stack, api, path, stream, tool):
    text, model = _setup(stack, api, path, tool)
    if api == "anthropic":
        client = anthropic.Anthropic(base_url=stack.anthropic_url, api_key=CLIENT_KEY, max_retries=0)
        kw = dict(model=model, max_tokens=400, messages=[{"role": "user", "content": text}],
                  **({"tools": [A_TOOL]} if tool else {}))
        if stream:
            with client.messages.stream(**kw) as s:
                got_path = s.response.headers["x-cascade-path"]
                msg = s.get_final_message()
        else:
            raw = client.messages.with_raw_response.create(**kw)
            got_path, msg = raw.headers["x-cascade-path"], raw.parse()
        assert got_path == path
        assert msg.usage.output_tokens > 0
        if tool:
            assert msg.stop_reason == "tool_use"
            (use,) = [b for b in msg.content if b.type == "tool_use"]
            assert use.name == "run_tests" and use.input == {"target": "sim"} and use.id
        else:
            assert msg.stop_reason == "end_turn" and msg.content[-1].text.startswith("Simulated reply")
        return
    client = openai.OpenAI(base_url=stack.openai_url, api_key=CLIENT_KEY, max_retries=0)
    kw = dict(model=model, messages=[{"role": "user", "content": text}], **({"tools": [O_TOOL]} if tool else {}))
    if stream:
        raw = client.chat.completions.with_raw_response.create(
            stream=True, stream_options={"include_usage": True}, **kw)
        got_path = raw.headers["x-cascade-path"]
        chunks = list(raw.parse())
        content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
        args = "".join(tc.function.arguments or "" for tc in calls)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        usage = chunks[-1].usage
        names = [tc.function.name for tc in calls if tc.function.name]
    else:
        raw = client.chat.completions.with_raw_response.create(**kw)
        got_path, c = raw.headers["x-cascade-path"], raw.parse()
        content = c.choices[0].message.content or ""
        calls = c.choices[0].message.tool_calls or []
        args = "".join(tc.function.arguments for tc in calls)
        finish, usage, names = [c.choices[0].finish_reason], c.usage, [tc.function.name for tc in calls]
    assert got_path == path
    assert usage.completion_tokens > 0
    if tool:
        assert finish == ["tool_calls"] and names == ["run_tests"] and json.loads(args) == {"target": "sim"}
    else:
        assert finish == ["stop"] and content.startswith("Simulated reply")


def test_verify_request_is_the_clients_bytes_plus_one_turn(stack):
    """Byte for byte, as the strong provider received it through Envoy: the prompt cache holds."""
    raw = (b'{ "model" : "claude-sonnet-5",\n  "system": [{"type": "text", "text": "Be careful.\\u00e9",'
           b' "cache_control": {"type": "ephemeral"}}],\n  "messages": [ {"role": "user", "content": '
           b'[{"type": "text", "text": "' + LONG.encode() + b'", "cache_control": {"type": "ephemeral"}}]} ],'
           b'\n  "max_tokens": 300, "metadata": {"user_id": "u1"} }')
    req = urllib.request.Request(stack.anthropic_url + "/v1/messages", data=raw, method="POST", headers={
        "content-type": "application/json", "x-api-key": CLIENT_KEY, "anthropic-version": "2023-06-01"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.headers["x-cascade-path"] == "accepted"
    (verify,) = stack.sims["strong_anthropic"].received
    close = raw.index(b"} ],") + 2  # the closing bracket of messages
    assert verify.body[:close] == raw[:close]
    assert verify.body.endswith(raw[close:])
    inserted = verify.body[close:len(verify.body) - len(raw) + close]
    assert inserted.startswith(b',{"role":"user","content":[{"type":"text","text":"[cascade-verify nonce=')
