"""The cache model, on hand-computed cases: what each provider holds, what a request costs now,
and the baseline (the strong model had every turn gone to it) of a finished request."""
import json

import pytest

from cascade_extproc import config
from cascade_extproc.config import ConfigError
from cascade_extproc.metering import cache
from cascade_extproc.metering.cache import (FIVE_MINUTES, ONE_HOUR, CacheRules, CacheTable, Conversation, Finished, Mode,
                                            ProviderCache, Side, expect, requested_ttl, settle)
from cascade_extproc.metering.prices import Price
from cascade_extproc.types import Path, Usage

OPUS = Price(input=5, output=25, cache_write=6.25, cache_read=0.5, cache_write_1h=10)
DEEPSEEK = Price(input=0.27, output=1.10, cache_write=0.27, cache_read=0.07)
GPT56 = Price(input=4, output=20, cache_write=5, cache_read=0.4)
ANTHROPIC = CacheRules(Mode.EXPLICIT, 300)
AUTO = CacheRules(Mode.AUTOMATIC, 3600)
STRONG = Side("claude-opus-4-6", OPUS, ANTHROPIC)
DRAFT = Side("deepseek-chat", DEEPSEEK, AUTO)


def usd(price, u):
    return round(price.cost(u) * 1e6, 6)  # micro-dollars: the hand computations below


def strong_call(conv, now, read, write, out=100, ask=300.0, w1h=0):
    u = Usage(input_tokens=0, output_tokens=out, cache_read_tokens=read, cache_write_tokens=write,
              cache_write_1h_tokens=w1h)
    return settle(conv, Finished(Path.DIRECT, u, None, ask), now, STRONG, DRAFT), u


def skipped_call(conv, now, read, miss, out=100, ask=300.0):
    u = Usage(input_tokens=miss, output_tokens=out, cache_read_tokens=read)
    return settle(conv, Finished(Path.SKIPPED, None, u, ask), now, STRONG, DRAFT), u


def test_a_run_of_skips_then_a_strong_call():
    conv = Conversation()
    # t=0: the strong model writes the 20,000-token prompt (5-minute TTL); the baseline is the call.
    base, real = strong_call(conv, 0, read=0, write=20_000)
    assert base == real
    # t=30: skipped. The draft never saw the conversation: 21,000 misses at $0.27, 100 out at $1.10.
    base, real = skipped_call(conv, 30, read=0, miss=21_000)
    assert usd(DEEPSEEK, real) == 21_000 * 0.27 + 100 * 1.10 == 5_780
    # Had the strong model answered: its 20,000 read, the new 1,000 written, the answer.
    assert (base.cache_read_tokens, base.cache_write_tokens, base.output_tokens) == (20_000, 1_000, 100)
    assert usd(OPUS, base) == 20_000 * 0.5 + 1_000 * 6.25 + 100 * 25 == 18_750
    # t=60: skipped again; the draft now reads its own 21,000 and misses 1,000.
    assert expect(conv.draft, AUTO, DEEPSEEK, 60, "deepseek-chat", 22_000, output=100) == Usage(
        input_tokens=1_000, output_tokens=100, cache_read_tokens=21_000)
    base, _ = skipped_call(conv, 60, read=21_000, miss=1_000)
    assert (base.cache_read_tokens, base.cache_write_tokens) == (21_000, 1_000)
    # t=90: the next strong call. The real cache holds what t=0 wrote: the skipped turns' new
    # content is written now, 3,000 tokens. The model says so before the call:
    predicted = expect(conv.strong, ANTHROPIC, OPUS, 90, "claude-opus-4-6", 23_000, output=100)
    assert (predicted.cache_read_tokens, predicted.cache_write_tokens) == (20_000, 3_000)
    base, real = strong_call(conv, 90, read=20_000, write=3_000)
    assert usd(OPUS, real) == 20_000 * 0.5 + 3_000 * 6.25 + 100 * 25 == 31_250
    # ... while the baseline's cache had every turn: 22,000 read, 1,000 written.
    assert (base.cache_read_tokens, base.cache_write_tokens) == (22_000, 1_000)
    assert usd(OPUS, base) == 22_000 * 0.5 + 1_000 * 6.25 + 100 * 25 == 19_750
    # Over the four turns the skips saved their reads and output, not their writes:
    assert conv.strong.tokens == conv.baseline.tokens == 23_000


def test_a_gap_past_the_ttl_rewrites_the_whole_prefix():
    conv = Conversation()
    strong_call(conv, 0, read=0, write=20_000)
    for t, tokens in ((100, 21_000), (200, 22_000), (300, 23_000)):
        skipped_call(conv, t, read=tokens - 1_000 if t > 100 else 0, miss=1_000 if t > 100 else tokens)
    # t=400: the strong cache was last used at 0, 400 s > 5 minutes ago: cold. Every token is written.
    assert not conv.strong.warm(400)
    predicted = expect(conv.strong, ANTHROPIC, OPUS, 400, "claude-opus-4-6", 24_000, output=100)
    assert (predicted.cache_read_tokens, predicted.cache_write_tokens) == (0, 24_000)
    assert usd(OPUS, predicted) == 24_000 * 6.25 + 100 * 25 == 152_500
    base, real = strong_call(conv, 400, read=0, write=24_000)
    # Had every turn gone to the strong model, its cache would be 100 s old: 23,000 read.
    assert (base.cache_read_tokens, base.cache_write_tokens) == (23_000, 1_000)
    assert usd(OPUS, base) == 23_000 * 0.5 + 1_000 * 6.25 + 100 * 25 == 20_250
    # A cold cache read nothing, so nothing says the prompt changed: both caches hold it all.
    assert conv.strong.tokens == conv.baseline.tokens == 24_000


def test_a_one_hour_ttl_keeps_it_warm_and_writes_at_the_1h_price():
    conv = Conversation()
    strong_call(conv, 0, read=0, write=20_000, ask=ONE_HOUR, w1h=20_000)
    for t in (100, 200, 300):
        skipped_call(conv, t, read=0, miss=21_000, ask=ONE_HOUR)
    predicted = expect(conv.strong, ANTHROPIC, OPUS, 400, "claude-opus-4-6", 24_000, ask=ONE_HOUR, output=100)
    assert (predicted.cache_read_tokens, predicted.cache_write_tokens, predicted.cache_write_1h_tokens) == (
        20_000, 4_000, 4_000)
    assert usd(OPUS, predicted) == 20_000 * 0.5 + 4_000 * 10 + 100 * 25 == 52_500
    # Past the hour it is cold too.
    assert expect(conv.strong, ANTHROPIC, OPUS, 3_601, "claude-opus-4-6", 24_000,
                  ask=ONE_HOUR).cache_read_tokens == 0


def test_a_conversations_first_draft_call_misses_everything():
    draft = ProviderCache()
    first = expect(draft, AUTO, DEEPSEEK, 0, "deepseek-chat", 30_000, output=200)
    assert first == Usage(input_tokens=30_000, output_tokens=200)
    assert usd(DEEPSEEK, first) == 8_320  # 30,000·0.27 + 200·1.10
    draft.saw(0, "deepseek-chat", 30_000, AUTO.ttl_s)
    second = expect(draft, AUTO, DEEPSEEK, 10, "deepseek-chat", 31_000, output=200)
    assert usd(DEEPSEEK, second) == 2_590  # 30,000·0.07 + 1,000·0.27 + 200·1.10
    # No write premium at DeepSeek: a miss is plain input, never a cache write.
    assert second.cache_write_tokens == 0


def test_automatic_caching_with_a_write_premium_bills_misses_as_writes():
    gpt = ProviderCache()
    gpt.saw(0, "gpt-5.6", 8_000, 1800)
    u = expect(gpt, CacheRules(Mode.AUTOMATIC, 1800), GPT56, 60, "gpt-5.6", 10_000, output=50)
    assert u == Usage(output_tokens=50, cache_read_tokens=8_000, cache_write_tokens=2_000)
    assert usd(GPT56, u) == 8_000 * 0.4 + 2_000 * 5 + 50 * 20 == 14_200


def test_no_breakpoint_no_cache_and_another_model_finds_nothing():
    held = ProviderCache()
    held.saw(0, "claude-opus-4-6", 20_000, 300)
    assert expect(held, ANTHROPIC, OPUS, 10, "claude-opus-4-6", 21_000, ask=None) == Usage(input_tokens=21_000)
    assert expect(held, ANTHROPIC, OPUS, 10, "claude-sonnet-4-5", 21_000).cache_read_tokens == 0
    # The part after the last breakpoint is plain input.
    assert expect(held, ANTHROPIC, OPUS, 10, "claude-opus-4-6", 21_000, tail=10) == Usage(
        input_tokens=10, cache_read_tokens=20_000, cache_write_tokens=990)


def test_a_changed_prompt_caps_both_caches_where_the_real_read_stopped():
    conv = Conversation()
    strong_call(conv, 0, read=0, write=50_000)
    skipped_call(conv, 10, read=0, miss=51_000)
    # The client rewrote its history after the first 20,000 tokens: a warm cache read only those.
    base, real = strong_call(conv, 20, read=20_000, write=32_000)
    # The baseline's cache could not have read past the change either: the same call.
    assert base == real


def test_a_conversation_seen_first_when_skipped_claims_no_saving_on_its_history():
    conv = Conversation()
    u = Usage(input_tokens=30_000, output_tokens=100)
    base = settle(conv, Finished(Path.SKIPPED, None, u, 300.0, last_turn=500), 0, STRONG, DRAFT)
    # Unseen: the strong model is assumed to have held all but the last turn.
    assert (base.cache_read_tokens, base.cache_write_tokens) == (29_500, 500)


def test_a_cascade_baseline_leaves_out_the_verify_appendix_and_keeps_the_accepted_answer():
    conv = Conversation()
    strong_call(conv, 0, read=0, write=20_000)
    verify = Usage(input_tokens=450, output_tokens=10, cache_read_tokens=20_000, cache_write_tokens=1_000)
    draft = Usage(input_tokens=21_000, output_tokens=300)
    done = Finished(Path.ACCEPTED, verify, draft, 300.0, appended=300 + 150)
    base = settle(conv, done, 30, STRONG, DRAFT)
    # The direct call: the same context (20,000 read, 1,000 written), the draft's 300-token answer.
    assert base == Usage(input_tokens=0, output_tokens=300, cache_read_tokens=20_000, cache_write_tokens=1_000)
    assert conv.strong.tokens == conv.baseline.tokens == 21_000 and conv.draft.tokens == 21_000


def test_pace_is_a_moving_average_of_the_gaps_between_turns():
    conv = Conversation()
    for t in (0, 10, 20, 60):
        strong_call(conv, t, read=0, write=100)
    assert conv.pace_s == pytest.approx(0.7 * 10 + 0.3 * 40)


def test_requested_ttl_reads_the_body_bytes():
    assert requested_ttl(b'{"messages":[]}') is None
    assert requested_ttl(b'{"system":[{"type":"text","text":"s","cache_control":{"type":"ephemeral"}}]}') == 300
    assert requested_ttl(b'{"x":[{"cache_control": {"type": "ephemeral", "ttl": "1h"}}]}') == ONE_HOUR
    assert requested_ttl(b'{"cache_control":{"type":"ephemeral"},"text":"1h"}') == 300  # "1h" as text


def test_the_default_table():
    table = CacheTable.from_config(config.load().pricing.caches)
    assert table.lookup("claude-opus-4-6") == CacheRules(Mode.EXPLICIT, 300)
    assert table.lookup("deepseek-chat") == CacheRules(Mode.AUTOMATIC, 3600)
    assert table.lookup("gpt-5.6-sol").ttl_s == 1800 and table.lookup("gpt-5.4").ttl_s == 300
    assert table.lookup("mystery") == CacheRules(Mode.AUTOMATIC, 300)


@pytest.mark.parametrize("entry,key", [
    ({"mode": "explicit", "ttl_s": 1}, "pricing.caches[0].match"),
    ({"match": "m", "mode": "sometimes", "ttl_s": 1}, "pricing.caches[0].mode"),
    ({"match": "m", "mode": "explicit", "ttl_s": 0}, "pricing.caches[0].ttl_s"),
    ({"match": "m", "mode": "explicit", "ttl_s": 1, "typo": 1}, "pricing.caches[0].typo"),
])
def test_bad_cache_entries_name_the_key(entry, key):
    with pytest.raises(ConfigError) as err:
        CacheTable.from_config([entry])
    assert err.value.key == key


def test_module_is_pure():
    assert not any(name in cache.__dict__ for name in ("asyncio", "aiohttp", "grpc", "time"))


def test_asked_ttl_reads_the_breakpoints_where_clients_put_them():
    from cascade_extproc.metering.cache import asked_ttl
    cc, cc1h = {"type": "ephemeral"}, {"type": "ephemeral", "ttl": "1h"}
    last = {"role": "user", "content": [{"type": "text", "text": "go", "cache_control": cc}]}
    old = {"role": "user", "content": [{"type": "text", "text": "old", "cache_control": cc1h}]}
    assert asked_ttl({"messages": [last]}, b"") == FIVE_MINUTES
    assert asked_ttl({"system": [{"type": "text", "text": "s", "cache_control": cc1h}], "messages": [last]}, b"") == ONE_HOUR
    assert asked_ttl({"tools": [{"name": "t", "cache_control": cc1h}], "messages": []}, b"") == ONE_HOUR
    assert asked_ttl({"messages": [{"role": "user", "content": "hi"}]}, b'{"messages":[]}') is None
    # A breakpoint on an older message only: found by the byte search, its TTL taken as 5 minutes.
    body = {"messages": [old, {"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}]}
    assert asked_ttl(body, json.dumps(body).encode()) == FIVE_MINUTES


def test_a_verify_call_reading_past_the_clients_part_leaves_a_sane_baseline():
    """The same request cascaded twice at an automatic-caching strong provider: the second verify
    call reads its whole prompt, the appendix too. A direct call reads at most its own prompt."""
    gpt = Side("gpt-5.4", Price(input=2.5, output=15, cache_write=2.5, cache_read=0.25), CacheRules(Mode.AUTOMATIC, 300))
    conv = Conversation()
    draft = Usage(input_tokens=1_000, output_tokens=50)
    verify = Usage(input_tokens=0, output_tokens=5, cache_read_tokens=1_200)  # 1,000 + 200 appended
    base = settle(conv, Finished(Path.ACCEPTED, verify, draft, None, appended=200), 10, gpt, DRAFT)
    assert base == Usage(input_tokens=0, output_tokens=50, cache_read_tokens=1_000)
