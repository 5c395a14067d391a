"""The cost model against hand-computed cases, cache reads and writes included."""
import pytest

from cascade_extproc import app, config
from cascade_extproc.config import ConfigError, Economics
from cascade_extproc.metering.prices import Price, PriceTable
from cascade_extproc.types import Usage

OPUS = Price(input=5, output=25, cache_write=6.25, cache_read=0.5, cache_write_1h=10)
DEEPSEEK = Price(input=0.27, output=1.10, cache_write=0.27, cache_read=0.07)


def test_plain_input_and_output():
    # 1,000 in at $5/M + 500 out at $25/M = 0.005 + 0.0125
    assert OPUS.cost(Usage(input_tokens=1000, output_tokens=500)) == pytest.approx(0.0175)


def test_cache_reads_and_writes_are_priced_apart():
    # The first line of the sample transcript: 3 input, 13 output, 13,835 written for 1 h,
    # 11,515 read: 3·5 + 13·25 + 13,835·10 + 11,515·0.5 = 15 + 325 + 138,350 + 5,757.5 per M
    u = Usage(input_tokens=3, output_tokens=13, cache_write_tokens=13835,
              cache_write_1h_tokens=13835, cache_read_tokens=11515)
    assert OPUS.cost(u) == pytest.approx(144447.5e-6)


def test_five_minute_and_one_hour_writes():
    # 4,000 written: 1,000 of them for 1 h → 3,000·6.25 + 1,000·10 = 28,750 per M
    u = Usage(cache_write_tokens=4000, cache_write_1h_tokens=1000)
    assert OPUS.cost(u) == pytest.approx(0.02875)
    # No 1-hour price: 1-hour writes cost what 5-minute ones do.
    assert DEEPSEEK.cost(u) == pytest.approx(4000 * 0.27e-6)


def test_deepseek_cache_hit_and_miss():
    # 10,000 hits at $0.07 + 2,000 misses at $0.27 + 300 out at $1.10
    u = Usage(input_tokens=2000, cache_read_tokens=10000, output_tokens=300)
    assert DEEPSEEK.cost(u) == pytest.approx((10000 * 0.07 + 2000 * 0.27 + 300 * 1.10) * 1e-6)


def test_lookup_first_match_wins_and_unknown_is_none():
    table = PriceTable.from_config(config.load().pricing.models)
    assert table.lookup("claude-opus-4-6") == OPUS
    assert table.lookup("claude-opus-4-1").input == 15  # the older, dearer Opus
    assert table.lookup("claude-sonnet-4-5-20250929").output == 15
    assert table.lookup("deepseek-chat") == DEEPSEEK
    assert table.lookup("gpt-unknown") is None
    assert table.cost("gpt-unknown", Usage(input_tokens=1)) is None


def test_openai_models_are_priced_with_cached_input_and_their_cache_writes():
    table = PriceTable.from_config(config.load().pricing.models)
    # GPT-6.2 Sol (its model page): $2 in, $0.10 cached, $2.50 cache writes, $10 out.
    assert table.lookup("gpt-6.2-sol") == Price(input=2, output=10, cache_write=2.5, cache_read=0.1)
    # Before GPT-5.6 OpenAI charges nothing extra to write the cache: writes cost plain input.
    gpt55 = table.lookup("gpt-5.5")
    assert (gpt55.input, gpt55.cache_write, gpt55.cache_read, gpt55.output) == (5, 5, 0.5, 30)
    # 1,000 fresh, 3,000 cached, 1,500 written, 40 out on GPT-6.2 Sol.
    u = Usage(input_tokens=1000, cache_read_tokens=3000, cache_write_tokens=1500, output_tokens=40)
    assert table.cost("gpt-6.2-sol", u) == pytest.approx((1000 * 2 + 3000 * 0.1 + 1500 * 2.5 + 40 * 10) * 1e-6)
    for model in ("gpt-6-astra", "gpt-6.1-sol", "gpt-6.1-terra", "gpt-6-sol", "gpt-6-luna", "gpt-5.6",
                  "gpt-5.6-sol", "gpt-5.6-terra", "gpt-5.6-luna", "gpt-5.4", "gpt-5.4-mini", "gpt-5.4-nano"):
        price = table.lookup(model)
        assert price is not None and price.cache_read < price.input <= price.cache_write, model
    # Variants with other prices, or none found, stay unpriced rather than borrow a sibling's.
    for model in ("gpt-5.5-pro", "gpt-5.4-pro", "gpt-6.2-astra", "gpt-6-astra-pro", "gpt-5.4-2026-03-05"):
        assert table.lookup(model) is None, model


@pytest.mark.parametrize("entry, key", [
    ({"input": 1, "output": 1, "cache_write": 1, "cache_read": 1}, "pricing.models[0].match"),
    ({"match": "m", "output": 1, "cache_write": 1, "cache_read": 1}, "pricing.models[0].input"),
    ({"match": "m", "input": -1, "output": 1, "cache_write": 1, "cache_read": 1}, "pricing.models[0].input"),
    ({"match": "m", "input": 1, "output": "1", "cache_write": 1, "cache_read": 1}, "pricing.models[0].output"),
    ({"match": "m", "input": 1, "output": 1, "cache_write": 1, "cache_read": 1, "typo": 1}, "pricing.models[0].typo"),
])
def test_bad_price_entries_name_the_key(entry, key):
    with pytest.raises(ConfigError) as err:
        app.parse_config({"pricing": {"models": [entry]}})
    assert err.value.key == key


def test_request_costs_per_path():
    """What each path cost and what the strong model alone would have (docs/metrics.md), with the
    path as the enum it travels as."""
    from cascade_extproc.metering.prices import request_costs
    from cascade_extproc.types import Path, Usage

    table = PriceTable([("strong", Price(10, 100, 10, 1)), ("draft", Price(1, 10, 1, 0.1))])
    strong, draft = Usage(input_tokens=1000, output_tokens=50), Usage(input_tokens=800, output_tokens=100)

    def costs(path):
        return request_costs(path, table, "strong", "draft", strong, draft, instruction_tokens=100)

    assert costs(Path.DIRECT) == pytest.approx((0.015, 0.015))
    # a fallback after a draft that was paid for (it looped, or ran out of its budget): that too
    assert costs(Path.FALLBACK) == pytest.approx((0.015 + 0.0018, 0.015))
    assert request_costs(Path.FALLBACK, table, "strong", "draft", strong, None, 100) == pytest.approx((0.015, 0.015))
    assert costs(Path.SKIPPED) == pytest.approx((0.0018, 0.018))  # the draft's tokens, at both prices
    # the draft and the verify call; the baseline: the verify's input less the draft's answer and
    # the instruction (1000 - 200 tokens), and the answer served (the draft's, or the verify's own)
    assert costs(Path.ACCEPTED) == pytest.approx((0.0018 + 0.015, 800 * 10e-6 + 100 * 100e-6))
    assert costs(Path.ENHANCED) == pytest.approx((0.0018 + 0.015, 800 * 10e-6 + 50 * 100e-6))
    assert request_costs(Path.DIRECT, table, "unknown", "draft", strong, None, 100) == (None, None)
