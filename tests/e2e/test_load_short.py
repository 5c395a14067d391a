"""The load test's short CI variant (the long one: `make soak`, results in docs/reliability.md)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from load import run_load  # noqa: E402

from stack import Stack  # noqa: E402


def test_short_load_with_faults_loses_nothing(tmp_path):
    s = Stack(tmp_path, extra_config={"log_level": "warning"})
    try:
        r = run_load(s, n=400, concurrency=16, fault_rate=0.03, seed=7)
    finally:
        s.close()
    assert r.lost == 0
    assert r.ok + r.errors == 400
    assert r.foreign_errors == 0  # every error the clients saw was a strong provider's own
    assert r.errors <= r.strong_faults
    assert r.draft_faults > 0  # faults did happen, and were absorbed
    assert set(r.paths) <= {"skipped", "accepted", "enhanced", "direct", "fallback"}
    assert r.rss_end_kb <= 1.5 * r.rss_warm_kb  # a leak check, not a timing
