"""What Envoy's Lua filters cost per request, in LuaJIT 2.1 (what Envoy embeds), via lupa.

    .venv/bin/python bench/lua.py [--runs 200]

The fail-open filter on a body the server did not decide (the server down), Claude-Code-like
agentic conversations of about 2 KB, 200 KB and 2 MB with thinking on: the plain pre-check that
lets a body without "thinking" go, the full scan of a tool loop whose last turn starts with
thinking (nothing to change), and the scan plus the splice of one whose last turn does not. And
the usage filter on a flagged OpenAI stream, per chunk. Each figure includes handing the bytes to
Lua (Envoy's getBytes copies them too); median (p95) in microseconds. The decided path (the
server up) is one metadata lookup: see bench/overhead.py --against.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lupa import luajit21  # noqa: E402

from cascade_extproc.envoy_config import lua_source  # noqa: E402

FILLER = "def handler(event):\n    return process(event) * 2\n" * 8


def conversation(size: int, signed_last: bool, thinking: bool = True) -> bytes:
    """A tool loop of about `size` bytes: reads and their results, the last call's thinking
    present (`signed_last`) or not (the draft's turn)."""
    messages: list[dict] = [{"role": "user", "content": "Fix the failing test in handler.py"}]
    body: dict = {"model": "claude-sonnet-5", "max_tokens": 8192, "messages": messages,
                  "tools": [{"name": "read_file", "input_schema": {"type": "object", "properties": {
                      "path": {"type": "string"}}}}]}
    if thinking:
        body["thinking"] = {"type": "enabled", "budget_tokens": 4096}
    i = 0
    while True:
        first = [{"type": "thinking", "thinking": f"step {i}: read the next file", "signature": "sig" * 20}]
        call = {"type": "tool_use", "id": f"toolu_{i:04d}", "name": "read_file", "input": {"path": f"f{i}.py"}}
        messages += [{"role": "assistant", "content": first + [call]},
                     {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call["id"], "content": FILLER}]}]
        i += 1
        raw = json.dumps(body).encode()
        if len(raw) >= size:
            if not signed_last:
                messages[-2]["content"] = messages[-2]["content"][1:]
            return json.dumps(body).encode()


def stream_chunks() -> list[bytes]:
    head = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-5"}
    events = [{**head, "choices": [{"index": 0, "delta": {"content": f"word{i} "}, "finish_reason": None}],
               "usage": None} for i in range(50)]
    events.append({**head, "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 50, "total_tokens": 59}})
    return [f"data: {json.dumps(e)}\n\n".encode() for e in events] + [b"data: [DONE]\n\n"]


def timed(fn, runs: int) -> tuple[float, float]:
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e6)
    samples.sort()
    return statistics.median(samples), samples[int(0.95 * (len(samples) - 1))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=200)
    args = ap.parse_args()
    fail_open = luajit21.LuaRuntime(encoding=None)
    fail_open.execute(lua_source("fail_open").encode())
    fix = fail_open.globals().cascade_fix_body
    print(f"Lua filters in LuaJIT 2.1 (lupa): median (p95) in microseconds over {args.runs} runs\n")
    print(f"{'fail_open, undecided body':<34} {'2K':>16} {'200K':>16} {'2M':>16}")
    rows = {
        "no \"thinking\": pre-check only": lambda n: conversation(n, False, thinking=False).replace(b"thinking", b"reasoning"),
        "last turn signed: full scan": lambda n: conversation(n, True),
        "last turn unsigned: scan + splice": lambda n: conversation(n, False),
    }
    for label, make in rows.items():
        cells = []
        for size in (2_000, 200_000, 2_000_000):
            raw = make(size)
            changed = fix(raw) is not None
            assert changed == label.startswith("last turn unsigned"), label
            runs = args.runs if size < 1_000_000 else max(20, args.runs // 10)
            med, p95 = timed(lambda: fix(raw), runs)
            cells.append(f"{med:>7.1f} ({p95:>6.1f})")
        print(f"{label:<34} {cells[0]:>16} {cells[1]:>16} {cells[2]:>16}")
    usage = luajit21.LuaRuntime(encoding=None)
    usage.execute(lua_source("usage_chunk").encode())
    drop = usage.globals().cascade_drop_usage
    chunks = stream_chunks()

    def whole_stream() -> None:
        carry = b""
        for c in chunks:
            _, carry = drop(carry, c)
    med, p95 = timed(whole_stream, args.runs)
    print(f"\nusage_chunk, a flagged stream of {len(chunks)} chunks (one event each): "
          f"{med:.1f} ({p95:.1f}) us per stream, {med / len(chunks):.2f} us per chunk")


if __name__ == "__main__":
    main()
