"""The cost model (pure): a price table per model, and the cost of a request from its usage.

Prompt caching dominates agentic cost, so cache reads and writes are priced apart from plain
input; Anthropic's 1-hour cache writes (what Claude Code uses) cost more than 5-minute ones.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any, Iterator

from cascade_extproc.config import ConfigError
from cascade_extproc.types import Path, Usage

PER_TOKEN = 1e-6  # prices are quoted in USD per million tokens
_FIELDS = ("input", "output", "cache_write", "cache_read", "cache_write_1h")


@dataclass(frozen=True)
class Price:
    """USD per million tokens."""

    input: float
    output: float
    cache_write: float  # 5-minute cache writes (Anthropic); providers without a premium: = input
    cache_read: float
    cache_write_1h: float | None = None  # defaults to cache_write

    def cost(self, u: Usage) -> float:
        w1h = min(u.cache_write_1h_tokens, u.cache_write_tokens)
        per_1h = self.cache_write if self.cache_write_1h is None else self.cache_write_1h
        return PER_TOKEN * (u.input_tokens * self.input + u.output_tokens * self.output
                            + (u.cache_write_tokens - w1h) * self.cache_write + w1h * per_1h
                            + u.cache_read_tokens * self.cache_read)


def pattern_items(data: Any, key: str, fields: tuple[str, ...], shape: str,
                  example: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(key, item) of each entry of a model-pattern table (`pricing.models`, `pricing.caches`): a
    list of mappings, each with a `match` pattern and only the given fields, checked here."""
    if not isinstance(data, list):
        raise ConfigError(key, f"expected a list of {shape}")
    for i, item in enumerate(data):
        k = f"{key}[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(k, "expected a mapping")
        for name in item:
            if name not in ("match", *fields):
                raise ConfigError(f"{k}.{name}", "unknown key")
        if not isinstance(item.get("match"), str) or not item["match"]:
            raise ConfigError(f"{k}.match", f"required: a model name or pattern such as {example}")
        yield k, item


class PriceTable:
    """Ordered (pattern, price) pairs; the first fnmatch-style pattern matching a model wins."""

    def __init__(self, entries: list[tuple[str, Price]]):
        self.entries = entries

    @classmethod
    def from_config(cls, data: Any, key: str = "pricing.models") -> "PriceTable":
        entries = []
        for k, item in pattern_items(data, key, _FIELDS, "{match, input, output, cache_write, cache_read}",
                                     "claude-opus-4-*"):
            values = {}
            for name in _FIELDS:
                v = item.get(name)
                if v is None and name == "cache_write_1h":
                    continue
                if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                    raise ConfigError(f"{k}.{name}", "required: a price >= 0 in USD per million tokens")
                values[name] = float(v)
            entries.append((item["match"], Price(**values)))
        return cls(entries)

    def lookup(self, model: str) -> Price | None:
        for pattern, price in self.entries:
            if fnmatch.fnmatchcase(model, pattern):
                return price
        return None

    def cost(self, model: str, usage: Usage) -> float | None:
        price = self.lookup(model)
        return None if price is None else price.cost(usage)


def request_costs(path: Path, prices: PriceTable, strong_model: str, draft_model: str,
                  strong_usage: Usage | None, draft_usage: Usage | None,
                  instruction_tokens: int) -> tuple[float | None, float | None]:
    """(actual, baseline) USD for one request; baseline is what the strong model alone would
    have cost (docs/metrics.md defines it per path). None where a usage or a price is missing."""
    strong, draft = prices.lookup(strong_model), prices.lookup(draft_model)
    if path in (Path.DIRECT, Path.FALLBACK):
        if strong is None or strong_usage is None:
            return None, None
        cost = strong.cost(strong_usage)
        # A draft may have been paid for first, and not served: a fallback's (it looped, ran out of
        # its budget) or a guarded skip's sent on to the strong model (direct).
        spent = draft.cost(draft_usage) if draft and draft_usage else 0.0
        return cost + spent, cost
    if path is Path.SKIPPED:
        if draft_usage is None:
            return None, None
        actual = draft.cost(draft_usage) if draft else None
        # The same answer from the strong model: the same tokens at its prices.
        return actual, strong.cost(draft_usage) if strong else None
    # accepted / enhanced: the draft call plus the verify call.
    if strong is None or draft is None or strong_usage is None or draft_usage is None:
        return None, None
    actual = draft.cost(draft_usage) + strong.cost(strong_usage)
    # A direct call would have read the same context, without the appended draft + instruction,
    # and written the answer: the draft's when accepted, the strong model's own when enhanced.
    appended = draft_usage.output_tokens + instruction_tokens
    answer = draft_usage.output_tokens if path is Path.ACCEPTED else strong_usage.output_tokens
    direct = Usage(input_tokens=max(strong_usage.input_tokens - appended, 0), output_tokens=answer,
                   cache_read_tokens=strong_usage.cache_read_tokens,
                   cache_write_tokens=strong_usage.cache_write_tokens,
                   cache_write_1h_tokens=strong_usage.cache_write_1h_tokens)
    return actual, strong.cost(direct)
