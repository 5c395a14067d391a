"""Paired statistics of pass/fail outcomes, and latency percentiles (pure).

Two arms ran the same tasks: each task gives a pair (baseline passed, candidate passed). Only the
discordant pairs tell the arms apart: b = baseline only, c = candidate only.
- McNemar's exact test: under "no difference" each discordant pair is a fair coin, so the
  two-sided p-value is P(Binomial(b + c, 1/2) as far from the middle as observed).
- A paired bootstrap interval for the difference in pass rates (candidate − baseline): tasks are
  resampled with replacement, pairs kept together; a seeded generator, so a report is reproducible.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Paired:
    n: int
    both: int
    baseline_only: int  # b
    candidate_only: int  # c
    neither: int
    p_value: float  # McNemar exact, two-sided
    diff: float  # candidate pass rate − baseline pass rate
    ci_low: float  # 95% paired bootstrap interval of diff
    ci_high: float


def mcnemar_exact(b: int, c: int) -> float:
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def bootstrap_diff(pairs: list[tuple[bool, bool]], rounds: int = 2000, seed: int = 0,
                   level: float = 0.95) -> tuple[float, float]:
    if not pairs:
        return 0.0, 0.0
    rng = random.Random(seed)
    n = len(pairs)
    diffs = sorted(sum(int(c) - int(b) for b, c in (pairs[rng.randrange(n)] for _ in range(n))) / n
                   for _ in range(rounds))
    lo = diffs[int((1 - level) / 2 * rounds)]
    hi = diffs[min(rounds - 1, int((1 + level) / 2 * rounds))]
    return lo, hi


def paired(pairs: list[tuple[bool, bool]], seed: int = 0) -> Paired:
    """`pairs`: (baseline passed, candidate passed) per task."""
    both = sum(1 for b, c in pairs if b and c)
    b_only = sum(1 for b, c in pairs if b and not c)
    c_only = sum(1 for b, c in pairs if c and not b)
    n = len(pairs)
    lo, hi = bootstrap_diff(pairs, seed=seed)
    return Paired(n, both, b_only, c_only, n - both - b_only - c_only, mcnemar_exact(b_only, c_only),
                  (c_only - b_only) / n if n else 0.0, lo, hi)


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100): a value that was observed; None for no values."""
    if not values:
        return None
    s = sorted(values)
    return s[max(0, math.ceil(q / 100 * len(s)) - 1)]
