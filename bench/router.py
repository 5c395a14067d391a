"""Router speed: features + rules per request, and JSON parsing, at three body sizes.

    .venv/bin/python bench/router.py [--repeat N]

Claude-Code-like bodies (system blocks, 22 tools, a long tool loop) of about 20 KB, 200 KB and
2 MB, serialized as Claude Code and the SDKs send them (compact JSON, UTF-8); one 200 KB body as
Python's json.dumps writes it (spaces, non-ASCII escaped), which costs the parser's duplicate-key
check more. Each figure is the median (and 95th percentile) over N timed runs in this process.
The router runs as live: with a full conversation store (router.max_conversations of them), so
"features + rules" includes the conversation's fingerprint, its lookup and the cache features
read from its warm state.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))

from claude_code import SYSTEM, TOOLS  # noqa: E402  (the shapes the tests use)

from cascade_extproc import codecs, config  # noqa: E402
from cascade_extproc.routing.router import Router  # noqa: E402
from cascade_extproc.routing.state import Conversations  # noqa: E402
from cascade_extproc.types import Api, Path, Usage  # noqa: E402


def _encode(body: dict, spaced: bool) -> bytes:
    if spaced:
        return json.dumps(body).encode()
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def body_of_size(target: int, big_last_turn: bool = False, spaced: bool = False) -> bytes:
    """A tool loop grown to `target` bytes; or, with `big_last_turn`, a short history whose last
    user turn is a pasted file of that size (the text classifiers' worst case)."""
    if big_last_turn:
        pasted = "Why does this fail?\n```python\n" + "def f(x):\n    return x * 2\n" * (target // 28) + "```"
        return _encode({"model": "claude-opus-4-6", "max_tokens": 32000, "system": SYSTEM, "tools": TOOLS,
                        "messages": [{"role": "user", "content": pasted}], "stream": True}, spaced)
    messages = [{"role": "user", "content": "Fix the flaky test in the payment module."}]
    i = 0
    while True:
        messages.append({"role": "assistant", "content": [
            {"type": "text", "text": "Let me look at the file."},
            {"type": "tool_use", "id": f"toolu_{i:06d}", "name": "Read", "input": {"path": f"/src/mod{i}.py"}}]})
        messages.append({"role": "user", "content": [{"type": "tool_result", "tool_use_id": f"toolu_{i:06d}",
                                                      "content": "def f(x):\n    return x * 2\n" * 40}]})
        raw = _encode({"model": "claude-opus-4-6", "max_tokens": 32000, "system": SYSTEM, "tools": TOOLS,
                       "messages": messages, "stream": True}, spaced)
        if len(raw) >= target:
            return raw
        i += 1


def timed(fn, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e6)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=300)
    args = ap.parse_args()
    cfg = config.load()
    store = Conversations(cfg.router.max_conversations)
    for _ in range(cfg.router.max_conversations):  # full: every lookup among as many as it keeps
        store.get(os.urandom(16))
    router = Router.from_config(cfg, store)
    print(f"router benchmark: {args.repeat} runs each, median (p95) in microseconds\n")
    print(f"{'body':>8}  {'parse JSON':>18}  {'features + rules':>18}  {'parse share':>11}")
    for size, big_last, spaced in ((20_000, False, False), (200_000, False, False), (2_000_000, False, False),
                                   (200_000, True, False), (200_000, False, True)):
        raw = body_of_size(size, big_last, spaced)
        req = codecs.parse_request(Api.ANTHROPIC, raw, {"user-agent": "claude-cli/2.0"})
        parse = timed(lambda: codecs.parse_request(Api.ANTHROPIC, raw, {}), max(20, args.repeat // (size // 20_000)))
        # Its conversation warm: a strong call and a skipped one seen a moment ago.
        d = router.decide(req, len(raw))
        prompt = len(raw) // 4
        router.settle(d, req, Path.DIRECT, Usage(output_tokens=100, cache_write_tokens=prompt), None)
        router.settle(d, req, Path.SKIPPED, None, Usage(input_tokens=prompt, output_tokens=100))
        route = timed(lambda: router.decide(req, len(raw)), args.repeat)
        p, r = statistics.median(parse), statistics.median(route)
        fmt = lambda v: f"{statistics.median(v):9.1f} ({sorted(v)[int(0.95 * (len(v) - 1))]:7.1f})"  # noqa: E731
        label = f"{len(raw) / 1000:.0f}K" + (" *" if big_last else " †" if spaced else "")
        print(f"{label:>8}  {fmt(parse):>18}  {fmt(route):>18}  {100 * p / (p + r):10.1f}%")
    print("\n* one user turn of that size (a pasted file): the text classifiers' worst case")
    print("† the same kind of body as json.dumps writes it (spaced, non-ASCII escaped)")
    print(f"features + rules include the conversation lookup among {len(store):,} kept conversations")


if __name__ == "__main__":
    main()
