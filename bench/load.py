"""Load and soak through the real stack: Envoy + server + simulated providers on loopback.

    .venv/bin/python bench/load.py [--requests 20000] [--concurrency 64] [--fault-rate 0.01]

A mix of paths (skipped, cascade, direct, tool results, OpenAI), half of them streamed, with
provider faults injected at the given rate (HTTP 500s at the draft and the strong providers).
It checks the promises: no request lost (every one gets an HTTP answer), errors only where the
strong provider itself failed, and the server's memory flat after warm-up. Prints a table.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))

import aiohttp  # noqa: E402

from stack import CLIENT_KEY, Stack  # noqa: E402  (the harness the end-to-end tests use)

COMPLEX = ("Explain how to make this cache eviction policy safe under concurrent writers, with the "
           "trade-offs of each locking scheme you would consider.")
TOOL_LOOP = [{"role": "user", "content": "list files"},
             {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "LS", "input": {}}]},
             {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "a.py b.py"}]}]
TOOLS = [{"name": "LS", "description": "List files.", "input_schema": {"type": "object", "properties": {}}}]


def requests_mix(rng: random.Random, base: str) -> tuple[str, dict, dict]:
    """(url, headers, body) of one request drawn from the mix."""
    kind = rng.random()
    stream = rng.random() < 0.5
    a_headers = {"x-api-key": CLIENT_KEY, "anthropic-version": "2023-06-01", "content-type": "application/json"}
    o_headers = {"authorization": f"Bearer {CLIENT_KEY}", "content-type": "application/json"}
    if kind < 0.10:
        return (f"{base}/openai/v1/chat/completions", o_headers,
                {"model": "gpt-6.2-sol", "stream": stream, "messages": [{"role": "user", "content": "ok"}]})
    body = {"model": "claude-sonnet-5", "max_tokens": 200, "stream": stream}
    if kind < 0.45:
        body["messages"] = [{"role": "user", "content": f"thanks {rng.randrange(1000)}"}]
    elif kind < 0.65:
        body["messages"] = [{"role": "user", "content": f"{COMPLEX} ({rng.randrange(1000)})"}]
    elif kind < 0.85:
        body["model"] = "claude-haiku-4-5"
        body["messages"] = [{"role": "user", "content": f"{COMPLEX} ({rng.randrange(1000)})"}]
    else:
        body["messages"], body["tools"] = TOOL_LOOP, TOOLS
    return f"{base}/v1/messages", a_headers, body


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@dataclass
class LoadResult:
    requests: int = 0
    ok: int = 0
    errors: int = 0  # HTTP errors the client got
    lost: int = 0  # no HTTP answer at all
    foreign_errors: int = 0  # errors that are not a strong provider's own failure
    strong_faults: int = 0
    draft_faults: int = 0
    paths: dict[str, int] = field(default_factory=dict)
    latency_ms: dict[str, list[float]] = field(default_factory=dict)
    rss_warm_kb: int = 0
    rss_end_kb: int = 0
    seconds: float = 0.0


async def _run(stack: Stack, n: int, concurrency: int, fault_rate: float, seed: int) -> LoadResult:
    rng = random.Random(seed)
    res = LoadResult(requests=n)
    sims = stack.sims
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)
    warm_at = max(1, n // 10)

    async def one(session: aiohttp.ClientSession, i: int) -> None:
        url, headers, body = requests_mix(rng, stack.anthropic_url)
        if rng.random() < fault_rate:
            target = rng.choice(["draft_anthropic", "strong_anthropic", "draft_openai", "strong_openai"])
            sims[target].fail_next(500)
        t0 = time.perf_counter()
        try:
            async with session.post(url, data=json.dumps(body), headers=headers) as resp:
                data = await resp.read()
                path = resp.headers.get("x-cascade-path", "?")
                if resp.status == 200:
                    res.ok += 1
                else:
                    res.errors += 1
                    if b"simulated failure" not in data:  # not a provider's own injected error
                        res.foreign_errors += 1
        except (aiohttp.ClientError, asyncio.TimeoutError):
            res.lost += 1
            return
        res.paths[path] = res.paths.get(path, 0) + 1
        res.latency_ms.setdefault(path, []).append((time.perf_counter() - t0) * 1000)
        if i == warm_at:
            res.rss_warm_kb = rss_kb(stack.server.pid)

    async def worker(session: aiohttp.ClientSession) -> None:
        while True:
            try:
                i = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            await one(session, i)

    t0 = time.perf_counter()
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    res.seconds = time.perf_counter() - t0
    res.rss_end_kb = rss_kb(stack.server.pid)
    res.strong_faults = sims["strong_anthropic"].faults_served + sims["strong_openai"].faults_served
    res.draft_faults = sims["draft_anthropic"].faults_served + sims["draft_openai"].faults_served
    return res


def run_load(stack: Stack, n: int, concurrency: int, fault_rate: float, seed: int = 1) -> LoadResult:
    # Faults and recorded requests are per run; the sims keep no history that would grow.
    for sim in stack.sims.values():
        sim.clear()
        sim.record = False
    return asyncio.run(_run(stack, n, concurrency, fault_rate, seed))


def report(r: LoadResult) -> str:
    lines = [f"load: {r.requests} requests in {r.seconds:.1f} s ({r.requests / r.seconds:.0f} req/s)",
             "", f"{'path':<10} {'calls':>7} {'p50 ms':>8} {'p95 ms':>8}"]
    for path, lat in sorted(r.latency_ms.items()):
        ordered = sorted(lat)
        lines.append(f"{path:<10} {len(lat):>7} {statistics.median(lat):>8.1f} "
                     f"{ordered[int(0.95 * (len(ordered) - 1))]:>8.1f}")
    lines += ["", f"answered 200: {r.ok}   HTTP errors: {r.errors}   lost: {r.lost}",
              f"faults injected and served: strong {r.strong_faults}, draft {r.draft_faults}",
              f"errors not caused by a strong provider's own failure: {r.foreign_errors}",
              f"server RSS: {r.rss_warm_kb / 1024:.1f} MiB after warm-up, {r.rss_end_kb / 1024:.1f} MiB at the end "
              f"({r.rss_end_kb / max(r.rss_warm_kb, 1):.2f}x)"]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--fault-rate", type=float, default=0.01)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        stack = Stack(Path(tmp), extra_config={"log_level": "warning"})
        try:
            print(report(run_load(stack, args.requests, args.concurrency, args.fault_rate)))
        finally:
            stack.close()


if __name__ == "__main__":
    main()
