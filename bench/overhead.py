"""Side by side in one run: Envoy alone vs Envoy + cascade-extproc, then the cascade's own
orchestration cost and the server's memory.

    .venv/bin/python bench/overhead.py [--repeat 5] [--requests 200] [--against REV]
                                       [--paths direct,skipped] [--sizes 20000,200000,2000000]

(a) overhead on the direct and skipped paths, bodies of ~20 KB, 200 KB and 2 MB, concurrency 1
    and 16: p50/p99 latency, throughput, and the ratios to Envoy alone. Three Envoys route to the
    same trivial upstream, which answers at once, so what is measured is the proxy path: one
    without our filters ("alone"), one with them in front of cascade-extproc ("ext"), and one
    with them in front of a server that does nothing (bench/null_extproc.py, "floor": what the
    Python gRPC stack costs before any work). Runs alternate between them and each figure is the
    median over --repeat runs.
    With --against REV, two more Envoys run the same way with the bootstrap REV generates
    (`cascade-extproc envoy-config` in a worktree of REV): REV's filters in front of the same
    server and of the same do-nothing one. The server is this checkout's in both, so the
    difference is Envoy's filters alone (e.g. the Lua filters: docs/performance.md).
(b) cascade orchestration: a cascade's end-to-end latency vs the sum of the two provider
    latencies (simulated providers with fixed delays).
(d) memory: the server's RSS per cascade in flight.
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))

import aiohttp  # noqa: E402
import yaml  # noqa: E402
from aiohttp import web  # noqa: E402

from cascade_extproc import config as config_mod  # noqa: E402
from cascade_extproc.config import Addr  # noqa: E402
from cascade_extproc.deploy import envoy_config  # noqa: E402
from cascade_extproc.deploy.envoy_proc import EnvoyProcess  # noqa: E402
from cascade_extproc.sim import Latency  # noqa: E402
from stack import LoopThread, free_port  # noqa: E402

ANSWER = json.dumps({"id": "msg_1", "type": "message", "role": "assistant", "model": "m",
                     "content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn", "stop_sequence": None,
                     "usage": {"input_tokens": 10, "output_tokens": 1, "cache_creation_input_tokens": 0,
                               "cache_read_input_tokens": 0}}).encode()
HEADERS = {"x-api-key": "bench-client-key", "anthropic-version": "2023-06-01", "content-type": "application/json"}


def body(size: int, path: str) -> bytes:
    """A Claude-Code-like conversation of about `size` bytes whose last turn routes to `path`."""
    filler = "def handler(event):\n    return process(event) * 2\n" * 8
    messages, i = [], 0
    while True:
        messages += [{"role": "user", "content": f"step {i}: {filler}"},
                     {"role": "assistant", "content": f"done {i}: {filler}"}]
        i += 1
        last = {"role": "user", "content": "thanks"}
        model = "claude-haiku-4-5" if path == "direct" else "claude-sonnet-5"
        raw = json.dumps({"model": model, "max_tokens": 100, "messages": messages + [last]}).encode()
        if len(raw) >= size:
            return raw


class Upstream:
    """The trivial upstream: reads the body, answers a fixed message."""

    async def start(self) -> None:
        async def handle(request: web.Request) -> web.Response:
            await request.read()
            return web.Response(body=ANSWER, content_type="application/json")
        app = web.Application(client_max_size=64 << 20)
        app.router.add_post("/{tail:.*}", handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        self.port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()


async def measure(url: str, data: bytes, n: int, concurrency: int) -> tuple[list[float], float]:
    lat: list[float] = []
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        queue = list(range(n))

        async def worker() -> None:
            while queue:
                queue.pop()
                t0 = time.perf_counter()
                async with session.post(url, data=data, headers=HEADERS) as r:
                    await r.read()
                    assert r.status == 200, r.status
                lat.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return lat, n / (time.perf_counter() - t0)


def cpu_s(pid: int) -> float:
    """A process's CPU time so far, all its threads, in seconds (schedstat: nanoseconds, where
    /proc/PID/stat counts 10 ms ticks)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass  # a thread that just ended
    return total / 1e9


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def start_server(tmp: Path, data: dict):
    import urllib.request
    cfg_path = tmp / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(data))
    proc = subprocess.Popen([sys.executable, "-m", "cascade_extproc", "serve", "--config", str(cfg_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    admin = data["listen"]["admin"]
    for _ in range(400):
        try:
            with urllib.request.urlopen(f"http://{admin}/readyz", timeout=1):
                break
        except OSError:
            time.sleep(0.05)
    return proc, config_mod.load(cfg_path)


ROOT = Path(__file__).resolve().parents[1]


def bootstrap_at(rev: str, data: dict, port: int, tmp: Path) -> dict:
    """The bootstrap revision `rev` generates for this config (data), listening on `port`."""
    tree = tmp / f"rev-{rev.replace('/', '_')}"
    if not tree.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(tree), rev], check=True)
    cfg = tmp / f"rev-config-{port}.yaml"
    cfg.write_text(yaml.safe_dump(data))
    out = subprocess.run([sys.executable, "-m", "cascade_extproc", "envoy-config", "--config", str(cfg),
                          "--listen", f"127.0.0.1:{port}", "--envoy-admin", "127.0.0.1:0"],
                         cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)}, check=True,
                         capture_output=True, text=True).stdout
    return yaml.safe_load(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--tcp", action="store_true", help="Envoy to server over TCP instead of a Unix socket")
    ap.add_argument("--no-metering", action="store_true", help="the server does not read the answers")
    ap.add_argument("--skip-cascade", action="store_true", help="only (a)")
    ap.add_argument("--against", metavar="REV", help="also REV's Envoy filters, side by side (implies --skip-cascade)")
    ap.add_argument("--paths", default="direct,skipped")
    ap.add_argument("--sizes", default="20000,200000,2000000", help="body sizes in bytes")
    args = ap.parse_args()
    paths = args.paths.split(",")
    sizes = [int(x) for x in args.sizes.split(",")]
    loop = LoopThread()
    up = Upstream()
    loop.run(up.start())
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        (tmp / "key").write_text("bench-draft-key")
        grpc = f"127.0.0.1:{free_port()}" if args.tcp else f"unix:{tmp}/extproc.sock"
        url = f"http://127.0.0.1:{up.port}"
        data = {"log_level": "warning", "metering": not args.no_metering, "listen": {"grpc": grpc, "admin": f"127.0.0.1:{free_port()}"},
                "providers": {api: {"strong": {"base_url": url + ("/v1" if api == "openai" else "")},
                                    "draft": {"base_url": url + ("/v1" if api == "openai" else ""),
                                              "model": "sim-draft-x", "api_key_file": str(tmp / "key"),
                                              "api_key_env": ""}} for api in ("anthropic", "openai")}}
        server, cfg = start_server(tmp, data)
        null_grpc = f"127.0.0.1:{free_port()}" if args.tcp else f"unix:{tmp}/null.sock"
        null = subprocess.Popen([sys.executable, str(Path(__file__).with_name("null_extproc.py")), null_grpc])
        ports = {"alone": free_port(), "floor": free_port(), "ext": free_port()}
        boots = {name: envoy_config.build(cfg, listen=Addr("127.0.0.1", port),
                                          grpc=Addr.parse(null_grpc if name == "floor" else grpc),
                                          admin=Addr("127.0.0.1", 0)) for name, port in ports.items()}
        hcm = boots["alone"]["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        hcm["http_filters"] = [f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.router"]
        if args.against:
            for name, server_grpc in (("floor@", null_grpc), ("ext@", grpc)):
                port = ports[name + args.against] = free_port()
                boots[name + args.against] = bootstrap_at(
                    args.against, {**data, "listen": {**data["listen"], "grpc": server_grpc}}, port, tmp)
        envoy_of = {name: EnvoyProcess(b) for name, b in boots.items()}
        envoys = list(envoy_of.values())
        for e in envoys:
            e.start()
            e.wait_ready()
        try:
            print(f"(a) overhead: Envoy alone vs Envoy + cascade-extproc ({'TCP' if args.tcp else 'Unix socket'} "
                  f"to the server, metering {'off' if args.no_metering else 'on'}); median of {args.repeat} runs "
                  f"of {args.requests} requests\n")
            print("latency in ms, throughput in requests/s; ratios to Envoy alone (x); floor: the same filters "
                  "in front of a server that does nothing\n")
            if args.against:
                rev = args.against
                print(f"@{rev}: the filters {rev} generates, in front of the same servers; "
                      f"x: this checkout over {rev}; cpu: Envoy's own CPU per request, in microseconds\n")
                print(f"{'path':<8} {'body':>6} {'conc':>4}  {'alone':>6} {'floor':>6} {'@' + rev[:7]:>8} "
                      f"{'ext':>6} {'@' + rev[:7]:>8} {'floor':>6} {'ext':>6}  {'floor':>6} {'@' + rev[:7]:>8} "
                      f"{'ext':>6} {'@' + rev[:7]:>8} {'floor':>6} {'ext':>6}  {'floor':>6} {'@' + rev[:7]:>8} "
                      f"{'ext':>6} {'@' + rev[:7]:>8}")
                print(f"{'':<8} {'':>6} {'':>4}  {'p50':>6} {'p50':>6} {'p50':>8} {'p50':>6} {'p50':>8} "
                      f"{'x':>6} {'x':>6}  {'rps':>6} {'rps':>8} {'rps':>6} {'rps':>8} {'x':>6} {'x':>6}  "
                      f"{'cpu':>6} {'cpu':>8} {'cpu':>6} {'cpu':>8}")
            else:
                print(f"{'path':<8} {'body':>6} {'conc':>4}  {'alone':>6} {'floor':>6} {'ext':>6} {'floor':>6} {'ext':>6}  "
                      f"{'alone':>6} {'ext':>6}  {'alone':>6} {'floor':>6} {'ext':>6} {'floor':>6} {'ext':>6}")
                print(f"{'':<8} {'':>6} {'':>4}  {'p50':>6} {'p50':>6} {'p50':>6} {'x':>6} {'x':>6}  "
                      f"{'p99':>6} {'p99':>6}  {'rps':>6} {'rps':>6} {'rps':>6} {'x':>6} {'x':>6}")
            for path in paths:
                for size in sizes:
                    raw = body(size, path)
                    for conc in (1, 16):
                        n = max(20, args.requests // (1 if size < 1_000_000 else 5))
                        runs: dict[str, list] = {name: [] for name in ports}
                        cpu: dict[str, list[float]] = {name: [] for name in ports}
                        for _ in range(args.repeat):
                            for name, port in ports.items():
                                pid = envoy_of[name].proc.pid
                                cpu0 = cpu_s(pid)
                                runs[name].append(asyncio.run(measure(f"http://127.0.0.1:{port}/v1/messages",
                                                                      raw, n, conc)))
                                cpu[name].append((cpu_s(pid) - cpu0) * 1e6 / n)
                        med = {k: (statistics.median(statistics.median(l) for l, _ in v),
                                   statistics.median(pct(l, 0.99) for l, _ in v),
                                   statistics.median(t for _, t in v)) for k, v in runs.items()}
                        a, f, e = med["alone"], med["floor"], med["ext"]
                        if args.against:
                            fb, eb = med["floor@" + args.against], med["ext@" + args.against]
                            c = {k: statistics.median(v) for k, v in cpu.items()}
                            print(f"{path:<8} {len(raw) // 1000:>5}K {conc:>4}  {a[0]:>6.2f} {f[0]:>6.2f} {fb[0]:>8.2f} "
                                  f"{e[0]:>6.2f} {eb[0]:>8.2f} {f[0] / fb[0]:>5.2f}x {e[0] / eb[0]:>5.2f}x  "
                                  f"{f[2]:>6.0f} {fb[2]:>8.0f} {e[2]:>6.0f} {eb[2]:>8.0f} {f[2] / fb[2]:>5.2f}x "
                                  f"{e[2] / eb[2]:>5.2f}x  {c['floor']:>6.0f} {c['floor@' + args.against]:>8.0f} "
                                  f"{c['ext']:>6.0f} {c['ext@' + args.against]:>8.0f}")
                            continue
                        print(f"{path:<8} {len(raw) // 1000:>5}K {conc:>4}  {a[0]:>6.2f} {f[0]:>6.2f} {e[0]:>6.2f} "
                              f"{f[0] / a[0]:>5.2f}x {e[0] / a[0]:>5.2f}x  {a[1]:>6.2f} {e[1]:>6.2f}  "
                              f"{a[2]:>6.0f} {f[2]:>6.0f} {e[2]:>6.0f} {f[2] / a[2]:>5.2f}x {e[2] / a[2]:>5.2f}x")
        finally:
            for e in envoys:
                e.stop()
            for proc in (server, null):
                proc.terminate()
                proc.wait()
            for tree in tmp.glob("rev-*"):
                if tree.is_dir():
                    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
    if not args.skip_cascade and not args.against:
        cascade_bench(args.repeat)


def cascade_bench(repeat: int) -> None:
    """(b) and (d): simulated providers with fixed delays, through Envoy + server."""
    from stack import Stack
    with tempfile.TemporaryDirectory() as tmp:
        s = Stack(Path(tmp), extra_config={"log_level": "warning"})
        try:
            s.sims["draft_anthropic"].latency = Latency(ttft_s=0.2)
            s.sims["strong_anthropic"].latency = Latency(ttft_s=0.3)
            text = ("Explain the difference between optimistic and pessimistic locking for our inventory "
                    "service, with the failure modes under contention.")
            raw = json.dumps({"model": "claude-sonnet-5", "max_tokens": 100,
                              "messages": [{"role": "user", "content": text}]}).encode()
            lat, _ = asyncio.run(measure(s.anthropic_url + "/v1/messages", raw, 10 * repeat, 1))
            provider = 0.2 + 0.3
            p50 = statistics.median(lat) / 1000
            print(f"\n(b) cascade orchestration: provider time {provider * 1000:.0f} ms (draft 200 + verify 300), "
                  f"end to end p50 {p50 * 1000:.1f} ms: {p50 / provider:.3f}x the provider time "
                  f"(+{(p50 - provider) * 1000:.1f} ms)")
            s.sims["draft_anthropic"].latency = Latency(ttft_s=3.0)
            idle = rss_kb(s.server.pid)
            k = 50

            async def in_flight() -> int:
                connector = aiohttp.TCPConnector(limit=k)
                async with aiohttp.ClientSession(connector=connector) as session:
                    tasks = [asyncio.create_task(session.post(s.anthropic_url + "/v1/messages", data=raw,
                                                              headers=HEADERS)) for _ in range(k)]
                    await asyncio.sleep(1.5)
                    during = rss_kb(s.server.pid)
                    for t in tasks:
                        (await t).release()
                    return during
            during = asyncio.run(in_flight())
            print(f"\n(d) memory: server RSS {idle / 1024:.1f} MiB idle, {during / 1024:.1f} MiB with {k} "
                  f"cascades in flight: {(during - idle) / k:.0f} KiB per cascade")
        finally:
            s.close()


if __name__ == "__main__":
    main()
