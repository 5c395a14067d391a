"""The eval's report (pure): per-arm figures, the paired comparison with the baseline, latency
per path, the per-task table; as Markdown, as JSON, and a cost–quality plot as SVG."""
from __future__ import annotations

import html
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from typing import Any

from cascade_extproc.offline.eval import stats
from cascade_extproc.offline.eval.runner import DRAFT_PATHS, Row


@dataclass
class ArmSummary:
    arm: str
    tasks: int
    passed: int
    pass_rate: float
    cost_usd: float | None  # None: some task's cost is unknown (an unpriced model)
    cost_per_task: float | None
    cost_per_passed: float | None
    cost_source: str
    calls: int
    steps_per_task: float
    draft_use_rate: float  # calls answered by the draft (skipped, accepted) / calls
    paths: dict[str, int]
    latency: dict[str, dict[str, float | int | None]]  # path → count, p50, p95 (seconds, per call)
    task_latency_p50: float | None
    task_latency_p95: float | None
    failed_calls: int
    by_kind: dict[str, list[int]]  # kind → [passed, tasks]


def summarize(rows: list[Row]) -> dict[str, ArmSummary]:
    by_arm: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        by_arm[r.arm].append(r)
    return {arm: _summary(arm, rs) for arm, rs in by_arm.items()}


def _summary(arm: str, rows: list[Row]) -> ArmSummary:
    n = len(rows)
    passed = sum(r.passed for r in rows)
    costs = [r.cost_usd for r in rows]
    cost = None if any(c is None for c in costs) else sum(c for c in costs if c is not None)
    paths = Counter(p for r in rows for p in r.paths)
    calls = sum(paths.values())
    per_path: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        for p, s in zip(r.paths, r.call_latency_s):
            per_path[p].append(s)
    kinds: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for r in rows:
        kinds[r.kind][0] += int(r.passed)
        kinds[r.kind][1] += 1
    task_latency = [r.latency_s for r in rows]
    return ArmSummary(
        arm, n, passed, passed / n if n else 0.0, cost,
        cost / n if cost is not None and n else None,
        cost / passed if cost is not None and passed else None,
        ",".join(sorted({r.cost_source for r in rows})), calls,
        sum(r.steps for r in rows) / n if n else 0.0,
        sum(paths[p] for p in DRAFT_PATHS) / calls if calls else 0.0, dict(paths),
        {p: {"count": len(v), "p50": stats.percentile(v, 50), "p95": stats.percentile(v, 95)}
         for p, v in sorted(per_path.items())},
        stats.percentile(task_latency, 50), stats.percentile(task_latency, 95),
        sum(len(r.errors) for r in rows), dict(kinds))


def comparisons(rows: list[Row], baseline: str, seed: int = 0) -> dict[str, stats.Paired]:
    """Each other arm against the baseline, over the tasks both ran."""
    outcome: dict[str, dict[str, bool]] = defaultdict(dict)
    for r in rows:
        outcome[r.arm][r.task] = r.passed
    base = outcome.get(baseline, {})
    return {arm: stats.paired([(base[t], got[t]) for t in base if t in got], seed=seed)
            for arm, got in outcome.items() if arm != baseline}


def as_json(rows: list[Row], baseline: str, meta: dict[str, Any], seed: int = 0) -> dict[str, Any]:
    return {"meta": meta, "arms": {a: asdict(s) for a, s in summarize(rows).items()},
            "paired": {a: asdict(p) for a, p in comparisons(rows, baseline, seed).items()}}


def _usd(v: float | None) -> str:
    if v is None:
        return "n/a"
    return f"${v:.6f}" if v < 0.01 else f"${v:.4f}"


def _s(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f} s"


def _pct(v: float) -> str:
    return f"{100 * v:.0f}%"


def markdown(rows: list[Row], baseline: str, meta: dict[str, Any], seed: int = 0) -> str:
    sums = summarize(rows)
    out = [f"# Eval: {meta.get('suite', '')}", ""]
    out += [f"- {k}: {v}" for k, v in meta.items() if k != "suite"]
    out += ["", "## Arms", "",
            "| arm | tasks | passed | pass rate | cost | cost / task | cost / passed task | cost from | "
            "calls | steps / task | draft use | failed calls | task latency p50 / p95 |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in sums.values():
        out.append(f"| {s.arm} | {s.tasks} | {s.passed} | {_pct(s.pass_rate)} | {_usd(s.cost_usd)} | "
                   f"{_usd(s.cost_per_task)} | {_usd(s.cost_per_passed)} | {s.cost_source} | {s.calls} | "
                   f"{s.steps_per_task:.1f} | {_pct(s.draft_use_rate)} | {s.failed_calls} | "
                   f"{_s(s.task_latency_p50)} / {_s(s.task_latency_p95)} |")
    pairs = comparisons(rows, baseline, seed)
    if pairs:
        out += ["", f"## Paired with `{baseline}`", "",
                "Each task ran on both arms. b = tasks only the baseline passed, c = only this arm; "
                "McNemar's exact test on (b, c); the interval is a paired bootstrap (2000 resamples) of "
                "the difference in pass rate.", "",
                "| arm | both | baseline only (b) | this arm only (c) | neither | Δ pass rate | 95% interval | "
                "McNemar p |", "|---|---|---|---|---|---|---|---|"]
        for arm, p in pairs.items():
            out.append(f"| {arm} | {p.both} | {p.baseline_only} | {p.candidate_only} | {p.neither} | "
                       f"{100 * p.diff:+.0f} pts | [{100 * p.ci_low:+.0f}, {100 * p.ci_high:+.0f}] | "
                       f"{p.p_value:.3g} |")
    out += ["", "## By kind", "", "| arm | " + " | ".join(sorted({r.kind for r in rows})) + " |",
            "|---|" + "---|" * len({r.kind for r in rows})]
    kinds = sorted({r.kind for r in rows})
    for s in sums.values():
        out.append(f"| {s.arm} | " + " | ".join(
            f"{s.by_kind[k][0]}/{s.by_kind[k][1]}" if k in s.by_kind else "" for k in kinds) + " |")
    out += ["", "## Latency per path (per model call)", "", "| arm | path | calls | p50 | p95 |",
            "|---|---|---|---|---|"]
    for s in sums.values():
        for path, v in s.latency.items():
            out.append(f"| {s.arm} | {path} | {v['count']} | {_s(v['p50'])} | {_s(v['p95'])} |")
    out += ["", "## Tasks", "", "| task | kind | " + " | ".join(sums) + " |", "|---|---|" + "---|" * len(sums)]
    by_task: dict[str, dict[str, Row]] = defaultdict(dict)
    for r in rows:
        by_task[r.task][r.arm] = r
    for task, arms in by_task.items():
        kind = next(iter(arms.values())).kind
        cells = []
        for arm in sums:
            r = arms.get(arm)
            if r is None:
                cells.append("")
                continue
            mark = "pass" if r.passed else "fail"
            cells.append(f"{mark}, {_usd(r.cost_usd)}, {r.steps} call{'s' if r.steps != 1 else ''}, "
                         f"{' '.join(r.paths) or 'none'}")
        out.append(f"| {task} | {kind} | " + " | ".join(cells) + " |")
    fails = [r for r in rows if not r.passed and r.detail]
    if fails:
        out += ["", "## Why tasks failed", ""]
        out += [f"- {r.arm} / {r.task}: {r.detail.replace(chr(10), ' ')[:200]}" for r in fails]
    return "\n".join(out) + "\n"


def svg_plot(rows: list[Row], title: str = "cost vs quality", width: int = 640, height: int = 420) -> str:
    """Each arm (the baseline, each router setting) as a point: cost per task across, pass rate up."""
    points = [(s.arm, s.cost_per_task, s.pass_rate) for s in summarize(rows).values()]
    known = [c for _, c, _ in points if c is not None]
    x_max = max(known) * 1.15 if known and max(known) > 0 else 1e-6
    left, right, top, bottom = 80, 30, 40, 60
    pw, ph = width - left - right, height - top - bottom

    def x(c: float) -> float:
        return left + pw * c / x_max

    def y(rate: float) -> float:
        return top + ph * (1 - rate)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
             f'<rect width="{width}" height="{height}" fill="white"/>',
             f'<text x="{width / 2}" y="22" text-anchor="middle" font-size="15">{html.escape(title)}</text>',
             f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="black"/>',
             f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" stroke="black"/>']
    for i in range(6):
        rate = i / 5
        parts.append(f'<line x1="{left - 4}" y1="{y(rate):.1f}" x2="{left + pw}" y2="{y(rate):.1f}" '
                     f'stroke="#ddd"/><text x="{left - 8}" y="{y(rate) + 4:.1f}" text-anchor="end">{rate:.0%}</text>')
        cost = x_max * i / 5
        parts.append(f'<text x="{x(cost):.1f}" y="{top + ph + 18}" text-anchor="middle">${cost:.2g}</text>')
    parts.append(f'<text x="{left + pw / 2}" y="{height - 15}" text-anchor="middle">cost per task (USD)</text>')
    parts.append(f'<text x="18" y="{top + ph / 2}" text-anchor="middle" '
                 f'transform="rotate(-90 18 {top + ph / 2})">pass rate</text>')
    for i, (arm, cost, rate) in enumerate(points):
        if cost is None:
            continue
        color = "#c0392b" if i == 0 else "#2471a3"
        parts.append(f'<circle cx="{x(cost):.1f}" cy="{y(rate):.1f}" r="6" fill="{color}" data-arm="{html.escape(arm)}" '
                     f'data-cost="{cost:.8f}" data-pass-rate="{rate:.4f}"/>')
        parts.append(f'<text x="{x(cost) + 9:.1f}" y="{y(rate) - 8:.1f}">{html.escape(arm)} '
                     f'({rate:.0%}, ${cost:.2g})</text>')
    unknown = [arm for arm, cost, _ in points if cost is None]
    if unknown:
        parts.append(f'<text x="{left}" y="{height - 2}" font-size="10">no cost known: '
                     f'{html.escape(", ".join(unknown))}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
