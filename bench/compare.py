"""Side by side in one run: this checkout against another git revision, through the real stack
(Envoy + server + simulated providers), call kind by call kind.

    .venv/bin/python bench/compare.py REV [--requests 600] [--repeat 3] [--concurrency 16]

For each revision a driver (this script with --drive, run in that revision's tree) starts its
own stack from that tree; the two drivers take turns, so both see the same machine. Per kind of call it prints
the server's CPU time per request (what limits throughput here) and the requests per second,
each the median over --repeat turns.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMPLEX = ("Explain how to make this cache eviction policy safe under concurrent writers, with the "
           "trade-offs of each locking scheme you would consider.")
KINDS = {
    "skipped json": {"model": "claude-sonnet-5", "messages": [{"role": "user", "content": "thanks"}]},
    "skipped sse": {"model": "claude-sonnet-5", "stream": True, "messages": [{"role": "user", "content": "thanks"}]},
    "direct json": {"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": COMPLEX}]},
    "direct sse": {"model": "claude-haiku-4-5", "stream": True, "messages": [{"role": "user", "content": COMPLEX}]},
    "cascade": {"model": "claude-sonnet-5", "messages": [{"role": "user", "content": COMPLEX}]},
}


def drive(tree: Path, requests: int, concurrency: int) -> None:
    """Run a stack from `tree`; for each kind name read on stdin, answer one JSON line."""
    sys.path[:0] = [str(tree / "tests" / "e2e"), str(tree)]
    import aiohttp
    from stack import CLIENT_KEY, Stack

    def cpu_s(pid: int) -> float:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    async def run(url: str, body: dict, n: int) -> None:
        headers = {"x-api-key": CLIENT_KEY, "anthropic-version": "2023-06-01", "content-type": "application/json"}
        data = json.dumps({"max_tokens": 200, **body})
        async with aiohttp.ClientSession() as session:
            left = [n]

            async def worker() -> None:
                while left[0] > 0:
                    left[0] -= 1
                    async with session.post(url + "/v1/messages", data=data, headers=headers) as r:
                        await r.read()
            await asyncio.gather(*(worker() for _ in range(concurrency)))

    with tempfile.TemporaryDirectory() as tmp:
        s = Stack(Path(tmp), extra_config={"log_level": "warning"})
        try:
            for kind in KINDS:
                asyncio.run(run(s.anthropic_url, KINDS[kind], 50))  # warm-up
            print("ready", flush=True)
            for line in sys.stdin:
                body = KINDS[line.strip()]
                cpu0, t0 = cpu_s(s.server.pid), time.perf_counter()
                asyncio.run(run(s.anthropic_url, body, requests))
                print(json.dumps({"cpu_ms": (cpu_s(s.server.pid) - cpu0) * 1000 / requests,
                                  "rps": requests / (time.perf_counter() - t0)}), flush=True)
        finally:
            s.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("rev", nargs="?")
    ap.add_argument("--requests", type=int, default=600)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--drive", metavar="TREE", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.drive:
        drive(Path(args.drive), args.requests, args.concurrency)
        return
    if not args.rev:
        ap.error("REV is required")
    with tempfile.TemporaryDirectory() as tmp:
        other = Path(tmp) / "other"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(other), args.rev], check=True)
        try:
            trees = {"this": ROOT, args.rev: other}
            drivers = {}
            for name, tree in trees.items():
                # Run from the tree with it first on the path: `python -m` would otherwise import
                # whichever copy the working directory holds.
                drivers[name] = subprocess.Popen(
                    [sys.executable, __file__, "--drive", str(tree), "--requests", str(args.requests),
                     "--concurrency", str(args.concurrency)],
                    cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)}, text=True,
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            for d in drivers.values():
                assert d.stdout.readline().strip() == "ready", "a driver failed to start"
            print(f"server CPU per request (ms) and requests/s, concurrency {args.concurrency}, "
                  f"median of {args.repeat} turns of {args.requests} requests\n")
            print(f"{'kind':<14} {'this cpu':>9} {args.rev[:9] + ' cpu':>13} {'ratio':>6}  {'this rps':>9} {args.rev[:9] + ' rps':>13}")
            for kind in KINDS:
                got: dict[str, list[dict]] = {name: [] for name in drivers}
                for _ in range(args.repeat):
                    for name, d in drivers.items():
                        d.stdin.write(kind + "\n")
                        d.stdin.flush()
                        got[name].append(json.loads(d.stdout.readline()))
                med = {name: (statistics.median(r["cpu_ms"] for r in rs), statistics.median(r["rps"] for r in rs))
                       for name, rs in got.items()}
                (a_cpu, a_rps), (b_cpu, b_rps) = med["this"], med[args.rev]
                print(f"{kind:<14} {a_cpu:>9.2f} {b_cpu:>13.2f} {a_cpu / b_cpu:>5.2f}x  {a_rps:>9.0f} {b_rps:>13.0f}")
            for d in drivers.values():
                d.stdin.close()
                d.wait(timeout=60)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(other)], check=False)


if __name__ == "__main__":
    main()
