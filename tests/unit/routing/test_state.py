"""Conversation state: the fingerprint (stable across turns, distinct across conversations), the
bounded LRU, its memory, and the cache features the router reads from it."""
import json
import tracemalloc

import pytest

from cascade_extproc import codecs, config
from cascade_extproc.metering.cache import Conversation
from cascade_extproc.routing.router import Router
from cascade_extproc.routing.state import Conversations, fingerprint
from cascade_extproc.types import Api

SYSTEM = [{"type": "text", "text": "You are Claude Code. " * 400, "cache_control": {"type": "ephemeral"}}]
TOOLS = [{"name": n, "description": "d", "input_schema": {"type": "object"}} for n in ("Read", "Bash", "Edit")]


def req(messages, system=SYSTEM, tools=TOOLS, api=Api.ANTHROPIC, model="claude-opus-4-6"):
    body = {"model": model, "max_tokens": 1000, "messages": messages}
    if api is Api.ANTHROPIC:
        body.update(system=system, tools=tools)
    else:
        body["messages"] = [{"role": "system", "content": system[0]["text"]}, *messages]
        body["tools"] = [{"type": "function", "function": {"name": t["name"], "parameters": {}}} for t in tools]
    return codecs.parse_request(api, json.dumps(body).encode(), {})


def turns(task, n):
    msgs = [{"role": "user", "content": task}]
    for i in range(n):
        msgs.append({"role": "assistant", "content": [{"type": "tool_use", "id": f"t{i}", "name": "Read", "input": {}}]})
        msgs.append({"role": "user", "content": [{"type": "tool_result", "tool_use_id": f"t{i}", "content": "x" * 900}]})
    return msgs


def test_the_fingerprint_is_stable_across_turns():
    first = fingerprint(req(turns("Fix the flaky payment test.", 0)))
    assert all(fingerprint(req(turns("Fix the flaky payment test.", n))) == first for n in (1, 5, 40))
    # The model is not part of it (each provider's cache records its own model), nor are settings.
    assert fingerprint(req(turns("Fix the flaky payment test.", 3), model="claude-sonnet-4-5")) == first


def test_the_fingerprint_tells_conversations_apart():
    base = fingerprint(req(turns("Fix the flaky payment test.", 2)))
    others = [
        fingerprint(req(turns("Fix the flaky checkout test.", 2))),  # another task
        fingerprint(req(turns("Fix the flaky payment test.", 2), system=[{"type": "text", "text": "A subagent."}])),
        fingerprint(req(turns("Fix the flaky payment test.", 2), tools=TOOLS[:2])),
        fingerprint(req(turns("Summary of the conversation so far: ...", 2))),  # after a compaction
        fingerprint(req(turns("Fix the flaky payment test.", 2), api=Api.OPENAI)),
    ]
    assert base not in others and len(set(others)) == len(others)
    # A long first message differs in its middle only: still told apart by its length or edges,
    # or (same length, same edges) taken for the same conversation, which then shares a prefix.
    long = "a" * 10_000
    assert fingerprint(req(turns(long + "b", 1))) != fingerprint(req(turns(long, 1)))


def test_openai_fingerprint_is_stable_too():
    a = fingerprint(req(turns("Plan the migration.", 0), api=Api.OPENAI))
    b = fingerprint(req([{"role": "user", "content": "Plan the migration."},
                         {"role": "assistant", "content": "ok"}, {"role": "user", "content": "go on"}], api=Api.OPENAI))
    assert a == b


def test_the_store_is_bounded_and_least_recently_used_goes_first():
    store = Conversations(max_entries=3)
    a, b, c = store.get(b"a"), store.get(b"b"), store.get(b"c")
    assert store.get(b"a") is a  # a is used again: b is now the oldest
    store.get(b"d")
    assert len(store) == 3 and store.peek(b"b") is None and store.peek(b"a") is a and store.evicted == 1
    for i in range(1000):
        store.get(b"%d" % i)
    assert len(store) == 3 and store.evicted == 1001
    store.resize(1)
    assert len(store) == 1 and store.peek(b"999") is not None
    assert c is not None and b is not None


def test_memory_per_conversation_is_small():
    """Measured: every cache of every entry filled (the figure docs/routing.md quotes)."""
    n = 2000
    store = Conversations(max_entries=n)
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for i in range(n):
        conv = store.get(i.to_bytes(16, "big"))
        for k, cache in enumerate((conv.strong, conv.draft, conv.baseline)):
            cache.saw(1000.0 + i, "claude-opus-4-6", 100_000 + i + k, 300.0 + k, 90_000 + i)
        conv.turn_ended(1000.0 + i)
        conv.turn_ended(1010.5 + i)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    per_entry = sum(s.size_diff for s in after.compare_to(before, "filename")) / n
    assert per_entry < 1200, per_entry  # bytes; 10,000 conversations stay under 12 MB


def route(router, msgs, conv, now):
    r = req(msgs)
    return router.decide(r, len(r.raw), now=now, conversation=conv)


def test_the_router_reads_the_conversations_caches():
    router = Router.from_config(config.load())
    conv = Conversation()
    d = route(router, turns("Fix the flaky payment test.", 3), conv, now=100.0)
    f = d.all_features
    assert d.conversation is conv
    assert f["strong_cache_warm"] is False and f["strong_cache_age_s"] is None and f["draft_cache_warm"] is False
    assert f["tokens_since_strong"] == f["context_tokens"]
    assert f["skip_saving"] > 0 and isinstance(f["cascade_saving"], float)
    conv.strong.saw(100.0, "claude-opus-4-6", 5_000, 300.0, context=f["context_tokens"])
    conv.draft.saw(100.0, "sim-draft-claude", 5_000, 3600.0, context=f["context_tokens"])
    f2 = route(router, turns("Fix the flaky payment test.", 4), conv, now=160.0).all_features
    assert f2["strong_cache_warm"] is True and f2["strong_cache_age_s"] == pytest.approx(60.0)
    assert f2["tokens_since_strong"] == f2["context_tokens"] - f["context_tokens"] > 0
    assert f2["draft_cache_warm"] is False  # the draft model is deepseek-chat: another model's cache
    assert route(router, turns("Fix the flaky payment test.", 4), conv, now=401.0).all_features[
        "strong_cache_warm"] is False


def test_a_router_with_a_store_finds_the_conversation_by_its_fingerprint():
    store = Conversations(max_entries=10)
    router = Router.from_config(config.load(), store)
    one = req(turns("Fix the flaky payment test.", 1))
    two = req(turns("Fix the flaky payment test.", 2))
    other = req(turns("Write the release notes.", 1))
    c1, c2 = router.decide(one, len(one.raw)).conversation, router.decide(two, len(two.raw)).conversation
    assert c1 is c2 and router.decide(other, len(other.raw)).conversation is not c1 and len(store) == 2


def test_settle_prices_the_live_baseline_from_the_counterfactual_strong_cache():
    """A direct turn, two skipped turns, a direct turn (5-minute cache, breakpoint at the end):
    the baseline reads what the strong model would hold had it answered every turn; the real
    strong call writes the skipped turns' content. Opus: write $6.25, read $0.50, out $25/MTok."""
    from cascade_extproc.types import Path, Usage
    store = Conversations(max_entries=10)
    router = Router.from_config(config.load(), store)
    calls = [req(turns("Fix the flaky payment test.", n)) for n in range(4)]
    d = [router.decide(r, len(r.raw), now=10.0 * i) for i, r in enumerate(calls)]
    assert len({id(x.conversation) for x in d}) == 1
    # Turn 0, direct: 10,000 written. Its baseline is itself.
    b0 = router.settle(d[0], calls[0], Path.DIRECT, Usage(output_tokens=100, cache_write_tokens=10_000), None, now=0.0)
    assert b0 == pytest.approx((10_000 * 6.25 + 100 * 25) * 1e-6)
    # Turns 1 and 2, skipped: the draft read 10,500 then 11,000 tokens; the strong model would
    # have read what it held and written 500 each time.
    b1 = router.settle(d[1], calls[1], Path.SKIPPED, None, Usage(input_tokens=10_500, output_tokens=100), now=10.0)
    assert b1 == pytest.approx((10_000 * 0.5 + 500 * 6.25 + 100 * 25) * 1e-6)
    b2 = router.settle(d[2], calls[2], Path.SKIPPED, None, Usage(input_tokens=11_000, output_tokens=100), now=20.0)
    assert b2 == pytest.approx((10_500 * 0.5 + 500 * 6.25 + 100 * 25) * 1e-6)
    # Turn 3, direct, a 12,000-token prompt: the real strong cache still held turn 0's 10,000
    # (read) and wrote the skipped turns' 1,000 with this turn's 1,000; the baseline reads
    # 11,000 and writes only this turn's 1,000.
    real = Usage(output_tokens=100, cache_read_tokens=10_000, cache_write_tokens=2_000)
    b3 = router.settle(d[3], calls[3], Path.DIRECT, real, None, now=30.0)
    assert b3 == pytest.approx((11_000 * 0.5 + 1_000 * 6.25 + 100 * 25) * 1e-6)
    conv = d[0].conversation
    assert conv.strong.tokens == conv.baseline.tokens == 12_000 and conv.draft.tokens == 11_000
    # Without a conversation (a router with no store, replay's own), nothing to settle.
    bare = Router.from_config(config.load())
    assert bare.settle(bare.decide(calls[0], len(calls[0].raw)), calls[0], Path.DIRECT, real, None) is None
