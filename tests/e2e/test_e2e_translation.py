"""Draft providers in the other API than the client's: Claude Code with an OpenAI-format draft,
an OpenAI client with an Anthropic-format draft. Skipped (translated by Envoy + the server on the
response path, SSE included) and cascade paths, through a real Envoy, with the official SDKs."""
import json

import anthropic
import openai
import pytest

from stack import CLIENT_KEY, DRAFT_KEY, DRAFT_MODELS, key_of, stack_fixture

COMPLEX = ("Design a migration plan from a monolith to services for an order system; cover data "
           "ownership, the strangler pattern, and how to roll back each step safely.")
A_TOOL = {"name": "read_file", "description": "Read a file.",
          "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}
O_TOOL = {"type": "function", "function": {"name": "read_file", "description": "Read a file.",
                                           "parameters": A_TOOL["input_schema"]}}


stack = stack_fixture("crossed", draft_formats={"anthropic": "openai", "openai": "anthropic"})


@pytest.fixture
def aclient(stack):
    return anthropic.Anthropic(base_url=stack.anthropic_url, api_key=CLIENT_KEY, max_retries=0)


@pytest.fixture
def oclient(stack):
    return openai.OpenAI(base_url=stack.openai_url, api_key=CLIENT_KEY, max_retries=0)


def only_draft(stack, api):
    (got,) = stack.sims[f"draft_{api}"].received
    assert CLIENT_KEY not in str(got.headers) and key_of(got.headers) == DRAFT_KEY
    assert got.json["model"] == DRAFT_MODELS[api]
    assert stack.sims[f"strong_{api}"].received == []
    return got


def test_anthropic_client_skipped_to_openai_draft(stack, aclient):
    raw = aclient.messages.with_raw_response.create(
        model="claude-sonnet-5", max_tokens=200, messages=[{"role": "user", "content": "hi"}])
    assert raw.headers["x-cascade-path"] == "skipped"
    msg = raw.parse()
    assert msg.type == "message" and msg.content[0].text.startswith("Simulated reply from sim-draft-claude")
    assert msg.usage.output_tokens > 0
    got = only_draft(stack, "anthropic")
    assert got.path == "/v1/chat/completions" and got.headers["authorization"] == f"Bearer {DRAFT_KEY}"
    assert got.json["messages"] == [{"role": "user", "content": "hi"}]


def test_anthropic_client_skipped_stream_with_tool_to_openai_draft(stack, aclient):
    with aclient.messages.stream(model="claude-sonnet-5", max_tokens=200, tools=[A_TOOL],
                                 messages=[{"role": "user", "content": "sim:tool=read_file"}]) as s:
        assert s.response.headers["x-cascade-path"] == "skipped"
        final = s.get_final_message()
    tool = final.content[-1]
    assert final.stop_reason == "tool_use" and tool.type == "tool_use"
    assert tool.name == "read_file" and tool.input == {"path": "sim"}
    assert final.usage.output_tokens > 0
    got = only_draft(stack, "anthropic")
    assert got.json["stream"] is True and got.json["stream_options"] == {"include_usage": True}
    assert got.json["tools"][0]["function"]["name"] == "read_file"


def test_anthropic_tool_loop_round_trip_through_openai_draft(stack, aclient):
    first = aclient.messages.create(model="claude-sonnet-5", max_tokens=200, tools=[A_TOOL],
                                    messages=[{"role": "user", "content": "sim:tool=read_file"}])
    tool = first.content[-1]
    stack.clear()
    second = aclient.messages.with_raw_response.create(
        model="claude-sonnet-5", max_tokens=200, tools=[A_TOOL],
        messages=[{"role": "user", "content": "sim:tool=read_file"},
                  {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
                  {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool.id, "content": "42"}]}])
    assert second.headers["x-cascade-path"] == "skipped"
    assert second.parse().content[0].type == "text"
    got = only_draft(stack, "anthropic")
    tool_msgs = [m for m in got.json["messages"] if m["role"] == "tool"]
    assert tool_msgs == [{"role": "tool", "tool_call_id": tool.id, "content": "42"}]


def test_anthropic_client_cascade_with_openai_draft(stack, aclient):
    raw = aclient.messages.with_raw_response.create(
        model="claude-sonnet-5", max_tokens=300, messages=[{"role": "user", "content": COMPLEX}])
    assert raw.headers["x-cascade-path"] == "accepted"
    assert raw.parse().content[0].text.startswith("Simulated reply from sim-draft-claude")
    (draft,) = stack.sims["draft_anthropic"].received
    assert draft.path == "/v1/chat/completions" and key_of(draft.headers) == DRAFT_KEY
    (verify,) = stack.sims["strong_anthropic"].received
    assert key_of(verify.headers) == CLIENT_KEY


def test_openai_client_skipped_to_anthropic_draft(stack, oclient):
    raw = oclient.chat.completions.with_raw_response.create(
        model="gpt-6.2-sol", messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}])
    assert raw.headers["x-cascade-path"] == "skipped"
    c = raw.parse()
    assert c.object == "chat.completion" and c.choices[0].message.content.startswith("Simulated reply")
    got = only_draft(stack, "openai")
    assert got.path == "/v1/messages" and got.headers["x-api-key"] == DRAFT_KEY
    assert got.json["system"] == "Be brief." and got.json["max_tokens"] > 0


def test_openai_client_skipped_stream_to_anthropic_draft(stack, oclient):
    chunks = list(oclient.chat.completions.create(
        model="gpt-6.2-sol", stream=True, stream_options={"include_usage": True}, tools=[O_TOOL],
        messages=[{"role": "user", "content": "sim:tool=read_file"}]))
    calls = [tc for ch in chunks for c in ch.choices for tc in (c.delta.tool_calls or [])]
    assert calls[0].function.name == "read_file"
    assert json.loads("".join(tc.function.arguments or "" for tc in calls)) == {"path": "sim"}
    assert chunks[-1].usage and chunks[-1].usage.completion_tokens > 0
    only_draft(stack, "openai")


def test_openai_client_cascade_with_anthropic_draft_enhanced(stack, oclient):
    raw = oclient.chat.completions.with_raw_response.create(
        model="gpt-6.2-sol", messages=[{"role": "user", "content": COMPLEX + " sim:reject"}])
    assert raw.headers["x-cascade-path"] == "enhanced"
    assert raw.parse().choices[0].message.content.startswith("Simulated reply from gpt-6.2-sol")


def test_draft_rate_limit_is_answered_by_the_strong_model(stack, aclient):
    stack.sims["draft_anthropic"].fail_next(429)
    raw = aclient.messages.with_raw_response.create(
        model="claude-sonnet-5", max_tokens=50, messages=[{"role": "user", "content": "hi"}])
    assert raw.headers["x-cascade-path"] == "fallback"
    assert raw.parse().content[0].text.startswith("Simulated reply from claude-sonnet-5")


@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_a_draft_client_error_is_answered_by_the_strong_model(stack, aclient, status):
    """The draft refusing a request (its key revoked, its context window smaller) is not the
    client's error: the strong model, whose credentials the client sent, answers."""
    stack.sims["draft_anthropic"].fail_next(status)
    raw = aclient.messages.with_raw_response.create(
        model="claude-sonnet-5", max_tokens=50, messages=[{"role": "user", "content": "hi"}])
    assert raw.headers["x-cascade-path"] == "fallback"
    assert raw.parse().content[0].text.startswith("Simulated reply from claude-sonnet-5")


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_a_reasoning_openai_draft_never_shows_its_reasoning_to_an_anthropic_client(stack, aclient, stream):
    # A reasoning model as the draft (DeepSeek's reasoner answers with reasoning_content, asked or
    # not). Its reasoning was translated into a thinking block with an empty signature: shown to
    # the client (provenance says never), and refused by the strong provider when the client sent
    # its history back. Now dropped on the way; the conversation goes on at the strong model.
    kw = dict(model="claude-sonnet-5", max_tokens=200, messages=[{"role": "user", "content": "sim:think hi"}])
    if stream:
        with aclient.messages.stream(**kw) as s:
            assert s.response.headers["x-cascade-path"] == "skipped"
            assert "thinking" not in [e.type for e in s if e.type == "content_block_start" and
                                      e.content_block.type == "thinking"]
            msg = s.get_final_message()
    else:
        raw = aclient.messages.with_raw_response.create(**kw)
        assert raw.headers["x-cascade-path"] == "skipped"
        msg = raw.parse()
    assert [b.type for b in msg.content] == ["text"]
    assert msg.content[0].text.startswith("Simulated reply from sim-draft-claude")
    (draft,) = stack.sims["draft_anthropic"].received
    assert draft.path == "/v1/chat/completions"  # it did reason: the sim was told to
    stack.clear()
    history = [*kw["messages"], {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in msg.content]},
               {"role": "user", "content": COMPLEX + " sim:reject"}]
    raw = aclient.messages.with_raw_response.create(model="claude-sonnet-5", max_tokens=300, messages=history)
    assert raw.headers["x-cascade-path"] == "enhanced"  # the strong provider took the history
    assert raw.parse().content[0].text.startswith("Simulated reply from claude-sonnet-5")
