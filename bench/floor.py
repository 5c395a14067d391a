"""The sidecar against the real floor and against its peer, side by side in one run (`make bench`).

    .venv/bin/python bench/floor.py [--repeat 3] [--requests 100] [--no-litellm]

Columns, each a process chain in front of the same trivial upstream (answers at once: a JSON
message, or an SSE stream of --chunks text deltas with usage in message_start and message_delta):

- alone:   Envoy with no filter of ours (the router only);
- floor:   our Envoy filters in front of bench/floor/null_extproc, a C++ (grpc++) ext_proc server
           that does nothing but continue (built from Debian's packages by bench/floor/build.sh;
           the column is left out when it cannot be built);
- sidecar: our Envoy filters in front of `cascade-extproc serve` (metering on: the usage comes
           back by Envoy's access log);
- uvloop:  the same sidecar on uvloop (CASCADE_EXTPROC_LOOP=uvloop), behind its own Envoy;
- litellm: LiteLLM's proxy, one worker, routing the same model to the same upstream (installed by
           bench/litellm.sh into ~/.cache/cascade-bench/litellm; left out when it is not there).
           Its added latency is over calling the upstream directly ("upstream" column), since it
           replaces Envoy rather than sitting behind it.

Direct path (a cheap model: the sidecar passes it on), JSON at ~200 KB and streamed answers with a
small body, concurrency 1 and 16. Runs alternate between the columns; each figure is the median
over --repeat runs. CPU per call is read from /proc (schedstat) for the server process (sidecar,
floor or LiteLLM) and for Envoy.
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
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests" / "e2e"))

from aiohttp import web  # noqa: E402

from cascade_extproc.config import Addr  # noqa: E402
from cascade_extproc.deploy import envoy_config  # noqa: E402
from cascade_extproc.deploy.envoy_proc import EnvoyProcess  # noqa: E402
from overhead import ANSWER, body, cpu_s, measure, pct, start_server  # noqa: E402
from stack import LoopThread, free_port  # noqa: E402

FLOOR_BIN = HERE / "floor" / "null_extproc"
LITELLM = Path.home() / ".cache" / "cascade-bench" / "litellm" / "bin" / "litellm"
MODEL = "claude-haiku-4-5"  # a cheap model: the direct path


class Upstream:
    def __init__(self, chunks: int):
        self.chunks = chunks

    async def start(self) -> None:
        async def handle(request: web.Request) -> web.StreamResponse:
            req = json.loads(await request.read())
            if not req.get("stream"):
                return web.Response(body=ANSWER, content_type="application/json")
            resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
            await resp.prepare(request)
            usage = {"input_tokens": 1200, "output_tokens": 1, "cache_read_input_tokens": 0,
                     "cache_creation_input_tokens": 0}
            msg = {"id": "msg_x", "type": "message", "role": "assistant", "model": req.get("model"), "content": [],
                   "stop_reason": None, "stop_sequence": None, "usage": usage}

            def ev(name: str, data: dict) -> bytes:
                return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
            await resp.write(ev("message_start", {"type": "message_start", "message": msg}))
            await resp.write(ev("content_block_start", {"type": "content_block_start", "index": 0,
                                                        "content_block": {"type": "text", "text": ""}}))
            delta = ev("content_block_delta", {"type": "content_block_delta", "index": 0,
                                               "delta": {"type": "text_delta", "text": "w "}})
            for _ in range(self.chunks):
                await resp.write(delta)
                await asyncio.sleep(0)
            await resp.write(ev("content_block_stop", {"type": "content_block_stop", "index": 0}))
            await resp.write(ev("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn",
                                                  "stop_sequence": None}, "usage": {"output_tokens": self.chunks}}))
            await resp.write(ev("message_stop", {"type": "message_stop"}))
            await resp.write_eof()
            return resp
        app = web.Application(client_max_size=64 << 20)
        app.router.add_post("/{tail:.*}", handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        self.port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()


TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu_s(pid: int) -> float:
    """A process's CPU time so far, threads that have ended included (the C++ server's pool
    threads come and go, so per-thread schedstat would lose theirs): 10 ms ticks."""
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / TICK


def build_floor() -> Path | None:
    if FLOOR_BIN.exists():
        return FLOOR_BIN
    try:
        subprocess.run(["sh", str(HERE / "floor" / "build.sh")], check=True, capture_output=True, timeout=900)
    except (subprocess.SubprocessError, OSError) as exc:
        print(f"(the C++ floor could not be built: {exc}; see bench/floor/build.sh)")
        return None
    return FLOOR_BIN


def start_litellm(tmp: Path, upstream: str) -> tuple[subprocess.Popen, int] | None:
    if not LITELLM.exists():
        print("(LiteLLM is not installed: `sh bench/litellm.sh` installs it into ~/.cache/cascade-bench)")
        return None
    port = free_port()
    cfg = tmp / "litellm.yaml"
    cfg.write_text(json.dumps({"model_list": [{"model_name": MODEL, "litellm_params": {
        "model": f"anthropic/{MODEL}", "api_base": upstream, "api_key": "bench-client-key"}}],
        "litellm_settings": {"drop_params": True, "telemetry": False}}))
    env = {**os.environ, "LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False", "DISABLE_SCHEMA_UPDATE": "True"}
    proc = subprocess.Popen([str(LITELLM), "--config", str(cfg), "--port", str(port), "--host", "127.0.0.1",
                             "--num_workers", "1"], stdout=subprocess.DEVNULL, stderr=open(tmp / "litellm.log", "w"),
                            env=env)
    for _ in range(600):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health/liveliness", timeout=1).read()
            return proc, port
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.2)
    print(f"(LiteLLM did not start: {tmp / 'litellm.log'})")
    proc.terminate()
    return None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--requests", type=int, default=100)
    ap.add_argument("--chunks", type=int, default=170)
    ap.add_argument("--size", type=int, default=200_000)
    ap.add_argument("--no-litellm", action="store_true")
    args = ap.parse_args()
    loop = LoopThread()
    up = Upstream(args.chunks)
    loop.run(up.start())
    upstream = f"http://127.0.0.1:{up.port}"
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        (tmp / "key").write_text("bench-draft-key")
        grpc = f"unix:{tmp}/extproc.sock"
        data = {"log_level": "warning", "listen": {"grpc": grpc, "admin": f"127.0.0.1:{free_port()}",
                                                   "relay": f"127.0.0.1:{free_port()}"},
                "providers": {api: {"strong": {"base_url": upstream + ("/v1" if api == "openai" else "")},
                                    "draft": {"base_url": upstream + ("/v1" if api == "openai" else ""),
                                              "model": "sim-draft-x", "api_key_file": str(tmp / "key"),
                                              "api_key_env": ""}} for api in ("anthropic", "openai")}}
        os.environ["CASCADE_EXTPROC_LOOP"] = "asyncio"
        server, cfg = start_server(tmp, data)
        procs: dict[str, subprocess.Popen] = {"sidecar": server}
        # The same server on uvloop, side by side (cli.LOOP_ENV).
        uv_dir = tmp / "uv"
        uv_dir.mkdir()
        uv_grpc = f"unix:{uv_dir}/extproc.sock"
        os.environ["CASCADE_EXTPROC_LOOP"] = "uvloop"
        procs["uvloop"], _ = start_server(uv_dir, {**data, "listen": {
            "grpc": uv_grpc, "admin": f"127.0.0.1:{free_port()}", "relay": f"127.0.0.1:{free_port()}"}})
        del os.environ["CASCADE_EXTPROC_LOOP"]
        floor_grpc = f"unix:{tmp}/floor.sock"
        floor_bin = build_floor()
        if floor_bin is not None:
            procs["floor"] = subprocess.Popen([str(floor_bin), floor_grpc], stdout=subprocess.DEVNULL,
                                              stderr=subprocess.DEVNULL)
        ports = {"alone": free_port(), **({"floor": free_port()} if "floor" in procs else {}), "sidecar": free_port(),
                 "uvloop": free_port()}
        server_of = {"floor": floor_grpc, "uvloop": uv_grpc}
        boots = {name: envoy_config.build(cfg, listen=Addr("127.0.0.1", port),
                                          grpc=Addr.parse(server_of.get(name, grpc)),
                                          admin=Addr("127.0.0.1", 0)) for name, port in ports.items()}
        hcm = boots["alone"]["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        hcm["http_filters"] = [f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.router"]
        hcm.pop("access_log", None)
        envoys = {name: EnvoyProcess(b) for name, b in boots.items()}
        for e in envoys.values():
            e.start()
            e.wait_ready()
        urls = {name: f"http://127.0.0.1:{port}/v1/messages" for name, port in ports.items()}
        urls["upstream"] = upstream + "/v1/messages"
        lite = None if args.no_litellm else start_litellm(tmp, upstream)
        if lite is not None:
            procs["litellm"] = lite[0]
            urls["litellm"] = f"http://127.0.0.1:{lite[1]}/v1/messages"
        time.sleep(1)
        try:
            run(args, urls, envoys, procs)
        finally:
            for e in envoys.values():
                e.stop()
            for p in procs.values():
                p.terminate()
                p.wait()


def run(args, urls: dict[str, str], envoys: dict[str, EnvoyProcess], procs: dict[str, subprocess.Popen]) -> None:
    small = json.dumps({"model": MODEL, "max_tokens": 1024, "stream": True,
                        "messages": [{"role": "user", "content": "hello " * 400}]}, separators=(",", ":")).encode()
    big = json.loads(body(args.size, "direct"))
    big["model"] = MODEL
    # Compact JSON, as Claude Code (JSON.stringify) and the SDKs send it.
    kinds = [("json", json.dumps(big, separators=(",", ":")).encode()), (f"sse {args.chunks}", small)]
    cols = list(urls)
    print(f"direct path, median of {args.repeat} interleaved runs; added: p50/p99 over Envoy alone "
          f"(litellm: over the upstream called directly); cpu: ms per call of the server process "
          f"(sidecar, floor, litellm) and of Envoy\n")
    head = f"{'kind':<8} {'body':>5} {'conc':>4}  {'column':<8} {'p50':>7} {'p99':>7} {'+p50':>7} {'+p99':>7} {'calls/s':>8} {'srv cpu':>8} {'envoy cpu':>9}"
    print(head)
    for kind, raw in kinds:
        for conc in (1, 16):
            n = args.requests * (1 if conc == 1 else 3) // (1 if kind == "json" else 2)
            res: dict[str, list] = {c: [] for c in cols}
            for _ in range(args.repeat):
                for c in cols:
                    srv = procs.get(c)
                    env = envoys.get(c)
                    m = min(n, 40) if c == "litellm" else n  # 20-100x slower: fewer calls
                    s0 = proc_cpu_s(srv.pid) if srv else 0.0
                    e0 = cpu_s(env.proc.pid) if env else 0.0
                    try:
                        lat, rps = asyncio.run(measure(urls[c], raw, m, conc))
                    except Exception as exc:  # a reset under load: the run is left out, and said
                        print(f"({c}: a run failed: {exc!r})", flush=True)
                        continue
                    s1 = proc_cpu_s(srv.pid) if srv else 0.0
                    e1 = cpu_s(env.proc.pid) if env else 0.0
                    res[c].append((statistics.median(lat), pct(lat, 0.99), rps, (s1 - s0) * 1000 / m,
                                   (e1 - e0) * 1000 / m))
            med = {c: [statistics.median(r[i] for r in res[c]) for i in range(5)] for c in cols if res[c]}
            if not {"alone", "sidecar", "uvloop", "upstream"} <= set(med):
                print("  -> (too many failed runs)\n")
                continue
            for c in [c for c in cols if c in med]:
                base = med["upstream" if c == "litellm" else "alone"]
                p50, p99, rps, scpu, ecpu = med[c]
                added = c not in ("alone", "upstream")
                print(f"{kind:<8} {len(raw) // 1000:>4}K {conc:>4}  {c:<8} {p50:>7.2f} {p99:>7.2f} "
                      f"{(f'{p50 - base[0]:+7.2f}' if added else ''):>7} {(f'{p99 - base[1]:+7.2f}' if added else ''):>7} "
                      f"{rps:>8.0f} {(f'{scpu:8.2f}' if c in procs else ''):>8} {(f'{ecpu:9.2f}' if c in envoys else ''):>9}")
            lines = []
            s, a, uv = med["sidecar"], med["alone"], med["uvloop"]
            lines.append(f"sidecar cpu {s[3]:.2f} ms/call (uvloop {uv[3]:.2f}); envoy cpu {s[4] / a[4]:.2f}x envoy alone's")
            if "floor" in med:
                f = med["floor"]
                ratio = (f"{(s[0] - a[0]) / (f[0] - a[0]):.2f}x the floor's" if f[0] - a[0] > 0.05
                         else "n/a (the floor's is within noise)")
                lines.append(f"added p50 {ratio}; calls/s {s[2] / f[2]:.2f}x the floor's; "
                             + (f"server cpu {s[3] / f[3]:.1f}x the floor's" if f[3] >= 0.05
                                else "server cpu: the floor's under the clock's resolution"))
            if "litellm" in med:
                lt, u = med["litellm"], med["upstream"]
                lines.append(f"litellm adds {(lt[0] - u[0]) / (s[0] - a[0]):.1f}x the sidecar's p50" if s[0] - a[0] > 0.05
                             else f"litellm adds +{lt[0] - u[0]:.1f} ms, the sidecar within noise")
            print("  -> " + "; ".join(lines) + "\n", flush=True)


if __name__ == "__main__":
    main()
