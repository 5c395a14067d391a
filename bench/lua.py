"""What Envoy's Lua filters cost per request, in LuaJIT 2.1 (what Envoy embeds), via lupa.

    .venv/bin/python bench/lua.py [--runs 200] [--in-envoy [--repeat 7]]

The fail-open filter on a body the server did not decide (the server down), Claude-Code-like
agentic conversations of about 2 KB, 200 KB and 2 MB with thinking on: the plain pre-check that
lets a body without "thinking" go, the full scan of a tool loop whose last turn starts with
thinking (nothing to change), and the scan plus the splice of one whose last turn does not. And
the usage filter on a flagged OpenAI stream, per chunk. Each figure includes handing the bytes to
Lua (Envoy's getBytes copies them too); median (p95) in microseconds. The decided path (the
server up) is one metadata lookup: see bench/overhead.py --against.

--in-envoy: what each piece costs inside Envoy. Envoys with one filter each in front of the
router and a trivial upstream (no ext_proc): none, the buffer filter the fail-open filter
replaced, a Lua filter that does nothing, one that holds the body, one that also reads the
metadata, a response-side one that reads the metadata, and the fail-open filter itself (its
undecided path: no server here). Envoy's CPU per request, median over --repeat turns.
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

from cascade_extproc.deploy.envoy_config import lua_source  # noqa: E402

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


def in_envoy(repeat: int) -> None:
    import asyncio
    import copy
    import tempfile

    import yaml

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))
    from overhead import Upstream, body, cpu_s, measure
    from stack import LoopThread, free_port

    from cascade_extproc import config
    from cascade_extproc.config import Addr
    from cascade_extproc.deploy import envoy_config
    from cascade_extproc.deploy.envoy_proc import EnvoyProcess

    loop = LoopThread()
    up = Upstream()
    loop.run(up.start())
    tmp = Path(tempfile.mkdtemp())
    url = f"http://127.0.0.1:{up.port}"
    (tmp / "key").write_text("k")
    (tmp / "c.yaml").write_text(yaml.safe_dump({"providers": {api: {
        "strong": {"base_url": url + ("/v1" if api == "openai" else "")},
        "draft": {"base_url": url, "model": "d", "api_key_file": str(tmp / "key"), "api_key_env": ""}}
        for api in ("anthropic", "openai")}}))
    base = envoy_config.build(config.load(tmp / "c.yaml"), listen=Addr("127.0.0.1", 1),
                              grpc=Addr("127.0.0.1", 2), admin=Addr("127.0.0.1", 0))

    def lua(code: str) -> dict:
        return {"name": "lua", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
                                                "default_source_code": {"inline_string": code}}}
    hold = {"name": "hold", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer", "max_request_bytes": 1 << 26}}
    fail_open = {"name": "lua", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
                                                 "default_source_code": {"inline_string": lua_source("fail_open")}}}
    kinds = {
        "router only": None,
        "buffer filter (the old hold)": hold,
        "Lua, nothing": lua("function envoy_on_request(h) end"),
        "Lua, body()": lua("function envoy_on_request(h) h:body() end"),
        "Lua, body() + metadata": lua("function envoy_on_request(h) local b = h:body()\n"
                                      "local m = h:streamInfo():dynamicMetadata():get('cascade')\n"
                                      "local n = b and b:length() end"),
        "Lua, response metadata": lua("function envoy_on_response(h)\n"
                                      "local m = h:streamInfo():dynamicMetadata():get('cascade') end"),
        "fail_open (undecided)": fail_open,
    }
    ports, envoys = {}, {}
    for kind, flt in kinds.items():
        boot = copy.deepcopy(base)
        listener = boot["static_resources"]["listeners"][0]
        ports[kind] = free_port()
        listener["address"]["socket_address"]["port_value"] = ports[kind]
        hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
        hcm["http_filters"] = ([flt] if flt else []) + [f for f in hcm["http_filters"] if f["name"].endswith("router")]
        envoys[kind] = EnvoyProcess(boot)
        envoys[kind].start()
    raw = body(2000, "direct")
    cpu: dict[str, list[float]] = {k: [] for k in kinds}
    try:
        for e in envoys.values():
            e.wait_ready()
        for _ in range(repeat):
            for kind in kinds:
                pid = envoys[kind].proc.pid
                c0 = cpu_s(pid)
                asyncio.run(measure(f"http://127.0.0.1:{ports[kind]}/v1/messages", raw, 400, 4))
                cpu[kind].append((cpu_s(pid) - c0) * 1e6 / 400)
    finally:
        for e in envoys.values():
            e.stop()
        loop.run(up.runner.cleanup())
        loop.close()
    print(f"\nInside Envoy, one filter in front of the router, 2 KB bodies, concurrency 4: Envoy CPU per "
          f"request in microseconds, median of {repeat} turns of 400\n")
    for kind in kinds:
        print(f"{kind:<30} {statistics.median(cpu[kind]):>7.0f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--in-envoy", action="store_true", help="also each piece's cost inside Envoy")
    ap.add_argument("--repeat", type=int, default=7, help="turns for --in-envoy")
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
    if args.in_envoy:
        in_envoy(args.repeat)


if __name__ == "__main__":
    main()
