"""The dashboard's charts' data: a point a minute for the last hour, cost, baseline and paths."""
from cascade_extproc.metering.ledger import Ledger, RequestRecord
from cascade_extproc.metering.metrics import Metrics
from cascade_extproc.types import Path

T0 = 1_764_340_020.0  # a minute's start


def rec(at, path, cost=None, baseline=None):
    return RequestRecord("r", "anthropic", path, "rule", "m", cost_usd=cost, baseline_usd=baseline, at=at)


def test_points_per_minute_with_the_quiet_minutes_as_zeros():
    ledger = Ledger(Metrics())
    ledger.record(rec(T0 + 1, Path.SKIPPED, 0.001, 0.01))
    ledger.record(rec(T0 + 59, Path.DIRECT, 0.02, 0.02))
    ledger.record(rec(T0 + 180, Path.ACCEPTED, 0.003, 0.005))
    ledger.record(rec(T0 + 181, Path.FALLBACK))  # unpriced: counted in the mix, not in the costs
    s = ledger.series(now=T0 + 200)
    assert s["bucket_s"] == 60 and [p["t"] for p in s["points"]] == [T0, T0 + 60, T0 + 120, T0 + 180]
    first, quiet, _, last = s["points"]
    assert (first["cost_usd"], first["baseline_usd"]) == (0.021, 0.03)
    assert first["by_path"]["skipped"] == 1 and first["by_path"]["direct"] == 1
    assert quiet == {"t": T0 + 60, "cost_usd": 0.0, "baseline_usd": 0.0, "by_path": {p: 0 for p in Path}}
    assert last["by_path"]["accepted"] == 1 and last["by_path"]["fallback"] == 1 and last["cost_usd"] == 0.003
    # Up to now, even when nothing happened since.
    assert s == ledger.series(now=T0 + 239) and len(ledger.series(now=T0 + 300)["points"]) == 6
    assert ledger.dashboard()["series"]["bucket_s"] == 60


def test_only_the_last_hour_is_kept():
    ledger = Ledger(Metrics())
    for minute in range(90):
        ledger.record(rec(T0 + 60 * minute, Path.SKIPPED, 0.001, 0.002))
    s = ledger.series(now=T0 + 60 * 89)
    assert len(s["points"]) == 60 and s["points"][0]["t"] == T0 + 60 * 30
    assert len(ledger._series) == 60
    assert Ledger(Metrics()).series() == {"bucket_s": 60, "points": []}
