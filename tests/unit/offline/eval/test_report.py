"""The report from rows: the figures per arm, the paired comparison, latency per path, the SVG."""
from __future__ import annotations

import math
import xml.etree.ElementTree as ET

from cascade_extproc.offline.eval import report
from cascade_extproc.offline.eval.runner import Row


def _row(task, arm, passed, cost, paths, kind="math", latencies=None, steps=None):
    return Row("paper20", task, kind, arm, passed, "" if passed else "wrong", cost, "ledger",
               sum(latencies or [1.0]), steps or len(paths), paths, latencies or [1.0] * len(paths))


ROWS = [
    _row("t1", "baseline", True, 0.010, ["strong"]), _row("t1", "cascade", True, 0.002, ["skipped"]),
    _row("t2", "baseline", True, 0.010, ["strong"]), _row("t2", "cascade", False, 0.012, ["enhanced"]),
    _row("t3", "baseline", False, 0.020, ["strong"], kind="code"),
    _row("t3", "cascade", True, 0.015, ["accepted", "skipped"], kind="code", latencies=[2.0, 0.5]),
]


def test_summary_per_arm():
    s = report.summarize(ROWS)
    base, casc = s["baseline"], s["cascade"]
    assert (base.tasks, base.passed, casc.passed) == (3, 2, 2)
    assert math.isclose(base.cost_usd, 0.040) and math.isclose(casc.cost_per_task, 0.029 / 3)
    assert math.isclose(casc.cost_per_passed, 0.029 / 2)
    assert casc.calls == 4 and math.isclose(casc.draft_use_rate, 3 / 4)  # skipped ×2, accepted
    assert casc.paths == {"skipped": 2, "enhanced": 1, "accepted": 1}
    assert casc.latency["accepted"] == {"count": 1, "p50": 2.0, "p95": 2.0}
    assert casc.by_kind == {"math": [1, 2], "code": [1, 1]}
    assert base.draft_use_rate == 0


def test_an_unknown_cost_is_not_summed_as_zero():
    rows = ROWS + [_row("t4", "cascade", True, None, ["direct"]), _row("t4", "baseline", True, 0.01, ["strong"])]
    s = report.summarize(rows)["cascade"]
    assert s.cost_usd is None and s.cost_per_task is None


def test_paired_comparison_against_the_baseline():
    p = report.comparisons(ROWS, "baseline")["cascade"]
    assert (p.both, p.baseline_only, p.candidate_only, p.neither) == (1, 1, 1, 0)
    assert p.p_value == 1.0


def test_markdown_has_every_section_and_the_figures():
    md = report.markdown(ROWS, "baseline", {"suite": "paper20", "api": "anthropic"})
    for heading in ("## Arms", "## Paired with `baseline`", "## By kind", "## Latency per path", "## Tasks",
                    "## Why tasks failed"):
        assert heading in md
    assert "| baseline | 3 | 2 | 67% | $0.0400 |" in md
    assert "| cascade | 1 | 1 | 1 | 0 | +0 pts |" in md
    assert "| t3 | code | fail, $0.0200, 1 call, strong | pass, $0.0150, 2 calls, accepted skipped |" in md


def test_svg_is_well_formed_with_a_point_per_arm():
    rows = ROWS + [_row("t1", "all-skip", False, 0.001, ["skipped"]), _row("t2", "all-skip", False, 0.001, ["skipped"]),
                   _row("t3", "all-skip", True, 0.001, ["skipped"], kind="code")]
    root = ET.fromstring(report.svg_plot(rows))
    circles = {c.get("data-arm"): c for c in root.iter("{http://www.w3.org/2000/svg}circle")}
    assert set(circles) == {"baseline", "cascade", "all-skip"}
    assert float(circles["all-skip"].get("data-pass-rate")) == round(1 / 3, 4)
    # cheaper is further left, better is higher
    cx = {a: float(c.get("cx")) for a, c in circles.items()}
    cy = {a: float(c.get("cy")) for a, c in circles.items()}
    assert cx["all-skip"] < cx["cascade"] < cx["baseline"]
    assert cy["all-skip"] > cy["baseline"]


def test_json_summary():
    out = report.as_json(ROWS, "baseline", {"suite": "paper20"})
    assert set(out) == {"meta", "arms", "paired"}
    assert out["arms"]["cascade"]["passed"] == 2 and out["paired"]["cascade"]["n"] == 3
