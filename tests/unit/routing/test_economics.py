"""What a skip and a cascade are expected to save, from the cache model, on hand-computed cases
(USD per million tokens: Opus $5 in, $25 out, $6.25 5-minute write, $10 1-hour write, $0.50
read; deepseek-chat $0.27 miss, $1.10 out, $0.07 hit)."""
import pytest

from cascade_extproc.config import Economics
from cascade_extproc.metering.cache import CacheRules, Conversation, Mode, Side
from cascade_extproc.metering.prices import Price
from cascade_extproc.routing.economics import cascade_saving, prompt_now, rewrite_risk, skip_saving

OPUS = Price(input=5, output=25, cache_write=6.25, cache_read=0.5, cache_write_1h=10)
DEEPSEEK = Price(input=0.27, output=1.10, cache_write=0.27, cache_read=0.07)
STRONG = Side("claude-opus-4-6", OPUS, CacheRules(Mode.EXPLICIT, 300))
DRAFT = Side("deepseek-chat", DEEPSEEK, CacheRules(Mode.AUTOMATIC, 3600))
ECO = Economics(expected_output_tokens=600, accept_rate=0.7, verdict_tokens=10, instruction_tokens=150)


def warm(context=100_000, held=99_000, now=0.0, strong_ttl=300.0, pace=None):
    """A conversation both providers saw at `now` with `held` tokens, when it was `held` tokens big."""
    conv = Conversation()
    conv.strong.saw(now, "claude-opus-4-6", held, strong_ttl, context=held)
    conv.draft.saw(now, "deepseek-chat", held, 3600, context=held)
    conv.pace_s = pace
    return conv


def test_cascade_cannot_save_with_a_long_cached_context_and_a_short_answer():
    # 100k context, 99k cached at the draft: it reads 99k (6,930) + misses 1k (270) + writes 600
    # (660) = 7,860; the verify adds (600 + 150) fresh input at $5 = 3,750; it saves
    # 0.7·(600 − 10)·25 = 10,325 of output: 10,325 − 11,610 < 0
    saving = cascade_saving(warm(), STRONG, DRAFT, 10, 100_000, 300.0, ECO)
    assert saving == pytest.approx((10_325 - 7_860 - 3_750) * 1e-6)
    assert saving < 0


def test_cascade_saves_with_a_short_context_and_not_with_a_cold_draft():
    # 10k context, 9k cached at the draft: 9,000·0.07 + 1,000·0.27 + 660 = 1,560
    assert cascade_saving(warm(10_000, 9_000), STRONG, DRAFT, 10, 10_000, 300.0, ECO) == pytest.approx(
        (10_325 - 1_560 - 3_750) * 1e-6)
    # The conversation's first draft call pays every token as a miss: 10,000·0.27 + 660 = 3,360
    assert cascade_saving(Conversation(), STRONG, DRAFT, 10, 10_000, 300.0, ECO) == pytest.approx(
        (10_325 - 3_360 - 3_750) * 1e-6)


def test_cascade_saving_grows_with_the_expected_answer():
    long_answer = Economics(expected_output_tokens=4000, accept_rate=0.7, verdict_tokens=10, instruction_tokens=150)
    assert cascade_saving(warm(), STRONG, DRAFT, 10, 100_000, 300.0, long_answer) > 0


def test_skip_saves_the_strong_read_and_answer_not_the_writes():
    # 100k now, 99k held by both: the strong model would read 100k (50,000) and answer 600
    # (15,000); the draft reads 99k (6,930), misses 1k (270), answers 600 (660).
    saving = skip_saving(warm(), STRONG, DRAFT, 10, 100_000, 300.0, ECO)
    assert saving == pytest.approx((50_000 + 15_000 - 7_860) * 1e-6)
    # A cold draft pays the whole prompt as misses: 27,000 + 660.
    cold_draft = warm()
    cold_draft.draft.seen_at = None
    assert skip_saving(cold_draft, STRONG, DRAFT, 10, 100_000, 300.0, ECO) == pytest.approx(
        (50_000 + 15_000 - 27_660) * 1e-6)
    # Without a cache breakpoint Anthropic caches nothing: the next call reads it all as input.
    assert skip_saving(warm(), STRONG, DRAFT, 10, 100_000, None, ECO) == pytest.approx(
        (500_000 + 15_000 - 7_860) * 1e-6)


def test_a_skip_that_lets_the_strong_cache_go_cold_pays_the_rewrite():
    # Strong cache seen at 0 with 99k (5 minutes); the conversation's turns come every 60 s.
    conv = warm(pace=60.0)
    assert rewrite_risk(conv, STRONG, 200) == 0  # 200 + 60 < 300: the next turn still finds it
    # At 250 s, 250 + 60 > 300: skipped now, the next strong call writes all 99k again:
    # 99,000·(6.25 − 0.5) = 569,250
    assert rewrite_risk(conv, STRONG, 250) == pytest.approx(569_250e-6)
    assert skip_saving(conv, STRONG, DRAFT, 250, 100_000, 300.0, ECO) < 0
    assert rewrite_risk(conv, STRONG, 301) == 0  # cold already: going strong now rewrites it too
    # With a 1-hour cache the same pace risks nothing; near the hour it risks the 1-hour price.
    hour = warm(pace=60.0, strong_ttl=3600.0)
    assert rewrite_risk(hour, STRONG, 250) == 0
    assert rewrite_risk(hour, STRONG, 3_560) == pytest.approx(99_000 * 9.5e-6)
    # A pace longer than the TTL: the next turn finds it cold whatever happens now.
    assert rewrite_risk(warm(pace=400.0), STRONG, 10) == 0


def test_prompt_now_grows_from_what_was_held():
    conv = warm(held=50_000)
    assert prompt_now(conv.strong, 53_000) == 53_000
    assert prompt_now(Conversation().strong, 53_000) == 53_000
    conv.strong.tokens = 48_000  # the provider counted fewer than our estimate then
    assert prompt_now(conv.strong, 53_000) == 51_000


def test_the_examples_in_docs_routing():
    """docs/routing.md, Features: a 62,400-token turn, the strong cache 40 s old (60,000), the
    draft's 10 s old (61,200), turns every 30 s; then the same turn at 290 s."""
    from cascade_extproc import config
    from cascade_extproc.metering.cache import CacheTable, Conversation, Side
    from cascade_extproc.metering.prices import PriceTable
    from cascade_extproc.routing.economics import cascade_saving, rewrite_risk, skip_saving
    cfg = config.load()
    prices, caches = PriceTable.from_config(cfg.pricing.models), CacheTable.from_config(cfg.pricing.caches)
    strong, draft = (Side(m, prices.lookup(m), caches.lookup(m)) for m in ("claude-opus-4-6", "deepseek-chat"))
    conv = Conversation(pace_s=30.0)
    conv.strong.saw(960.0, strong.model, 60_000, 300.0, context=60_000)
    conv.draft.saw(990.0, draft.model, 61_200, 3600.0, context=61_200)
    eco = cfg.router.economics
    assert skip_saving(conv, strong, draft, 1000.0, 62_400, 300.0, eco) == pytest.approx(
        (62_400 * 0.5 + 600 * 25 - (61_200 * 0.07 + 1_200 * 0.27 + 600 * 1.10)) * 1e-6)
    assert cascade_saving(conv, strong, draft, 1000.0, 62_400, 300.0, eco) == pytest.approx(
        (0.7 * 590 * 25 - 750 * 5 - (61_200 * 0.07 + 1_200 * 0.27 + 600 * 1.10)) * 1e-6)
    assert rewrite_risk(conv, strong, 1250.0) == pytest.approx(60_000 * (6.25 - 0.5) * 1e-6)
    assert skip_saving(conv, strong, draft, 1250.0, 62_400, 300.0, eco) == pytest.approx(-0.304068)
