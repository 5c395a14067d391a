"""McNemar's exact test, the paired bootstrap, percentiles."""
from __future__ import annotations

import math

import pytest

from cascade_extproc.offline.eval import stats


@pytest.mark.parametrize("b, c, p", [
    (0, 0, 1.0), (0, 5, 0.0625), (5, 0, 0.0625), (1, 9, 2 * 11 / 1024), (3, 3, 1.0),
    (0, 20, 2 / 2 ** 20),
])
def test_mcnemar_exact(b, c, p):
    assert math.isclose(stats.mcnemar_exact(b, c), p)


def test_paired_counts_and_difference():
    pairs = [(True, True)] * 5 + [(True, False)] + [(False, True)] * 3 + [(False, False)]
    p = stats.paired(pairs)
    assert (p.n, p.both, p.baseline_only, p.candidate_only, p.neither) == (10, 5, 1, 3, 1)
    assert math.isclose(p.diff, 0.2)
    assert p.ci_low <= p.diff <= p.ci_high
    assert math.isclose(p.p_value, stats.mcnemar_exact(1, 3))


def test_bootstrap_is_reproducible_and_degenerate_when_arms_agree():
    pairs = [(True, False), (False, True), (True, True), (False, False)] * 5
    assert stats.bootstrap_diff(pairs, seed=3) == stats.bootstrap_diff(pairs, seed=3)
    assert stats.bootstrap_diff([(True, True), (False, False)] * 4) == (0.0, 0.0)
    assert stats.paired([]).n == 0


def test_percentile_nearest_rank():
    values = list(range(1, 101))
    assert stats.percentile(values, 50) == 50
    assert stats.percentile(values, 95) == 95
    assert stats.percentile([3.0], 95) == 3.0
    assert stats.percentile([], 50) is None
