"""(e) A Claude-Code-like session through the stack, with simulated providers at realistic
latencies: p50/p95 latency and cost, routed vs all-strong, side by side in one run.

    .venv/bin/python bench/workload.py [--turns 30]

The session is scripted like a replayed transcript: a task, then tool loops (small results),
acknowledgements and a few complex follow-ups, each request carrying the whole history so far.
"All-strong" is the same stack with one rule sending everything direct.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from cascade_extproc.sim import Latency  # noqa: E402
from claude_code import SYSTEM, TOOLS  # noqa: E402
from stack import CLIENT_KEY, Stack  # noqa: E402

# Realistic, if round, figures: a fast draft and a slower, deliberate strong model.
DRAFT = Latency(ttft_s=0.35, tokens_per_s=120)
STRONG = Latency(ttft_s=1.0, tokens_per_s=50)
TASK = ("The nightly export job fails on large tenants with a timeout. Find the cause in the export "
        "module, propose a fix that keeps memory bounded, and explain the trade-offs.")


def session(turns: int) -> list[dict]:
    """The requests of one session, in order."""
    out, history = [], [{"role": "user", "content": TASK}]
    for i in range(turns):
        out.append({"model": "claude-sonnet-5", "max_tokens": 4000, "system": SYSTEM, "tools": TOOLS,
                    "messages": json.loads(json.dumps(history))})
        step = i % 6
        tid = f"toolu_{i:04d}"
        if step in (0, 1, 2, 3):  # a tool loop step: the assistant calls a tool, the result comes back
            history.append({"role": "assistant", "content": [
                {"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": tid, "name": "Read", "input": {"path": f"/src/export/part{i}.py"}}]})
            history.append({"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": tid, "content": "def export(rows):\n    return list(rows)\n" * 10}]})
        elif step == 4:
            history.append({"role": "assistant", "content": "Found it: the export loads every row at once."})
            history.append({"role": "user", "content": "ok, go ahead"})
        else:
            history.append({"role": "assistant", "content": "Done. Streaming the rows now."})
            history.append({"role": "user", "content": "Why is streaming safer here than paging? Compare both "
                                                       "for our retry semantics and explain the failure modes."})
    return out


def run(stack: Stack, requests: list[dict]) -> list[float]:
    lat = []
    for body in requests:
        req = urllib.request.Request(stack.anthropic_url + "/v1/messages", data=json.dumps(body).encode(),
                                     method="POST", headers={"content-type": "application/json",
                                                             "x-api-key": CLIENT_KEY, "anthropic-version": "2023-06-01"})
        t0 = time.perf_counter()
        with urllib.request.urlopen(req, timeout=120) as r:
            r.read()
        lat.append((time.perf_counter() - t0) * 1000)
    return lat


def costs(stack: Stack) -> tuple[float, float, dict[str, float]]:
    cost = baseline = 0.0
    paths: dict[str, float] = {}
    for fam in text_string_to_metric_families(stack.metrics_text()):
        for s in fam.samples:
            if s.name == "cascade_cost_usd_total":
                cost += s.value
            elif s.name == "cascade_baseline_cost_usd_total":
                baseline += s.value
            elif s.name == "cascade_requests_total":
                paths[s.labels["path"]] = paths.get(s.labels["path"], 0) + s.value
    return cost, baseline, paths


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--turns", type=int, default=30)
    args = ap.parse_args()
    requests = session(args.turns)
    rows = {}
    for name, extra in (("routed", {}), ("all-strong", {"router": {"rules": [{"name": "all", "route": "direct"}]}})):
        with tempfile.TemporaryDirectory() as tmp:
            s = Stack(Path(tmp), extra_config={"log_level": "warning", **extra})
            try:
                for sim in s.sims.values():
                    sim.latency = DRAFT if sim.name.startswith("draft") else STRONG
                lat = run(s, requests)
                rows[name] = (lat, *costs(s))
            finally:
                s.close()
    print(f"(e) a {args.turns}-call Claude-Code-like session, simulated latencies: draft {DRAFT.ttft_s * 1000:.0f} ms "
          f"to first token + {DRAFT.tokens_per_s:.0f} tok/s, strong {STRONG.ttft_s * 1000:.0f} ms + "
          f"{STRONG.tokens_per_s:.0f} tok/s\n")
    print(f"{'':<11} {'p50 ms':>8} {'p95 ms':>8} {'cost USD':>10}  paths")
    for name, (lat, cost, baseline, paths) in rows.items():
        p95 = sorted(lat)[round(0.95 * (len(lat) - 1))]
        print(f"{name:<11} {statistics.median(lat):>8.0f} {p95:>8.0f} {cost:>10.5f}  "
              + ", ".join(f"{p} {int(n)}" for p, n in sorted(paths.items())))
    routed, strong = rows["routed"], rows["all-strong"]
    print(f"\nrouted vs all-strong: p50 {statistics.median(strong[0]) / statistics.median(routed[0]):.2f}x lower, "
          f"cost {100 * (1 - routed[1] / strong[1]):.1f}% lower (the routed run's own baseline estimate: "
          f"{100 * (1 - routed[1] / routed[2]):.1f}%)")


if __name__ == "__main__":
    main()
