"""Claude-Code-shaped traffic on every path, and a conversation that alternates between the
draft and the strong provider. The fake providers validate like the real ones: thinking
signatures must be their own, tool_use/tool_result must pair up, a final assistant tool_use turn
needs its thinking block. Any history the sidecar fails to keep valid gets a 400 here."""
import anthropic
import pytest

from claude_code import as_history, request
from stack import CLIENT_KEY, DRAFT_KEY, key_of

COMPLEX = ("Refactor the payment module so retries are idempotent. Explain the trade-offs between "
           "idempotency keys and exactly-once queues, then propose the smallest safe change.")


@pytest.fixture
def client(stack):
    return anthropic.Anthropic(base_url=stack.anthropic_url, api_key=CLIENT_KEY, max_retries=0)


def create(client, **kw):
    raw = client.messages.with_raw_response.create(**kw)
    return raw.headers["x-cascade-path"], raw.parse()


@pytest.mark.parametrize("text, expected", [
    ("hi", "skipped"), (COMPLEX, "accepted"), (COMPLEX + " sim:reject", "enhanced")])
def test_every_path_json_and_stream(stack, client, text, expected):
    path, msg = create(client, **request([{"role": "user", "content": text}]))
    # The draft is asked without thinking, and its reasoning is never shown (a signature only the
    # draft could check would break the next turn at the strong provider): only the strong
    # model's own answer starts with thinking.
    first = "thinking" if expected == "enhanced" else "text"
    assert path == expected and msg.content[0].type == first and msg.content[-1].type == "text"
    with client.messages.stream(**request([{"role": "user", "content": text}])) as s:
        assert s.response.headers["x-cascade-path"] == expected
        final = s.get_final_message()
    assert final.content[-1].text == msg.content[-1].text
    # What the providers got kept Claude Code's shape and headers (the draft: its own key).
    for name, r in [(n, r) for n in ("draft_anthropic", "strong_anthropic") for r in stack.sims[n].received]:
        assert r.path == "/v1/messages" and r.json["system"][0]["cache_control"] == {"type": "ephemeral"}
        assert len(r.json["tools"]) == 22 and r.json["metadata"]["user_id"].startswith("user_")
        assert key_of(r.headers) == (DRAFT_KEY if name.startswith("draft") else CLIENT_KEY)
        assert r.headers["anthropic-version"] == "2023-06-01"
        if name.startswith("draft"):
            assert r.json["thinking"] == {"type": "disabled"}


def test_direct_and_fallback_paths(stack, client):
    path, _ = create(client, **request([{"role": "user", "content": COMPLEX}],
                                       thinking=False, tool_choice={"type": "tool", "name": "Read"}))
    assert path == "direct"
    stack.sims["draft_anthropic"].fail_next(503)
    path, msg = create(client, **request([{"role": "user", "content": COMPLEX}]))
    assert path == "fallback" and msg.content[-1].text.startswith("Simulated reply from claude-sonnet-5")


def test_alternating_conversation_stays_valid_for_both_providers(stack, client):
    history: list[dict] = []
    paths = []

    def turn(content, *, expect, **kw):
        history.append({"role": "user", "content": content})
        path, msg = create(client, **request(history, **kw))
        paths.append(path)
        assert path == expect, (path, expect)
        history.append(as_history(msg))
        return msg

    # 1. draft answers, asked without thinking, and showing none
    first = turn("hi", expect="skipped")
    assert [b.type for b in first.content] == ["text"]
    # 2. the strong model verifies and answers itself, thinking first
    second = turn(COMPLEX + " sim:reject", expect="enhanced")
    assert second.content[0].type == "thinking"
    # 3. back to the draft, which calls a tool: the strong model's thinking must not reach it
    third = turn("sim:tool=Read", expect="skipped")
    tool = third.content[-1]
    assert tool.type == "tool_use" and tool.name == "Read"
    # 4. the tool result is big: too big to skip, and (the cost model says) a cascade cannot
    #    save on it, so it goes direct: the strong model gets a tool loop whose last assistant
    #    turn is the draft's tool call, without the thinking the API wants before it: thinking is
    #    off for this one request
    big = "line of file content\n" * 2000
    fourth = turn([{"type": "tool_result", "tool_use_id": tool.id, "content": big}], expect="direct")
    assert fourth.content[-1].type == "text"
    assert stack.sims["strong_anthropic"].received[-1].json["thinking"] == {"type": "disabled"}
    # 5. and the draft once more, with every kind of turn in the history
    turn("thanks", expect="skipped")
    # 6. the strong model calls a tool, thinking first...
    sixth = turn(COMPLEX + " sim:reject sim:tool=Grep", expect="enhanced")
    assert sixth.content[0].type == "thinking" and sixth.content[-1].type == "tool_use"
    # 7. ...and its small result goes to the draft, which cannot check the strong thinking
    turn([{"type": "tool_result", "tool_use_id": sixth.content[-1].id, "content": "3 matches"}],
         expect="skipped")
    assert paths == ["skipped", "enhanced", "skipped", "direct", "skipped", "enhanced", "skipped"]
    # Every request above was accepted by providers that refuse foreign signatures and broken
    # tool loops; the strong provider never saw a draft signature, nor the draft a strong one.
    for name, other in (("strong_anthropic", "draft-anthropic"), ("draft_anthropic", "strong-anthropic")):
        for r in stack.sims[name].received:
            assert f"sim-sig-{other}-" not in r.body.decode()
