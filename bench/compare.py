"""Side by side in one run: this checkout against another git revision, through the real stack
(Envoy + server + simulated providers), call kind by call kind.

    .venv/bin/python bench/compare.py REV [--requests 600] [--repeat 3] [--concurrency 16] [--tracing]

For each revision a driver (this script with --drive, run in that revision's tree) starts its
own stack from that tree; the drivers take turns, so all see the same machine. Per kind of call it prints
the server's CPU time per request (what limits throughput here) and the requests per second,
each the median over --repeat turns. With --tracing a third driver runs this checkout with
tracing on, every request traced and exported over OTLP/gRPC to a receiver in the driver that
discards them (what the exporter's thread costs the server is in its CPU time).
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


def otlp_sink() -> int:
    """An OTLP/gRPC trace receiver that accepts and discards (the bench's collector): its port."""
    from concurrent import futures

    import grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as pb, trace_service_pb2_grpc as pb_grpc

    class Sink(pb_grpc.TraceServiceServicer):
        def Export(self, request, context):
            return pb.ExportTraceServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(2))
    pb_grpc.add_TraceServiceServicer_to_server(Sink(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    otlp_sink.server = server  # kept alive with the driver
    return port


def drive(tree: Path, requests: int, concurrency: int, tracing: bool = False) -> None:
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
        extra: dict = {"log_level": "warning"}
        if tracing:
            extra["tracing"] = {"enabled": True, "endpoint": f"http://127.0.0.1:{otlp_sink()}", "protocol": "grpc"}
        s = Stack(Path(tmp), extra_config=extra)
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
    ap.add_argument("--tracing", action="store_true", help="also this checkout with tracing on")
    ap.add_argument("--drive", metavar="TREE", help=argparse.SUPPRESS)
    ap.add_argument("--drive-tracing", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.drive:
        drive(Path(args.drive), args.requests, args.concurrency, args.drive_tracing)
        return
    if not args.rev:
        ap.error("REV is required")
    with tempfile.TemporaryDirectory() as tmp:
        other = Path(tmp) / "other"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(other), args.rev], check=True)
        try:
            trees = {"this": (ROOT, False), **({"traced": (ROOT, True)} if args.tracing else {}),
                     args.rev: (other, False)}
            drivers = {}
            for name, (tree, traced) in trees.items():
                # Run from the tree with it first on the path: `python -m` would otherwise import
                # whichever copy the working directory holds.
                drivers[name] = subprocess.Popen(
                    [sys.executable, __file__, "--drive", str(tree), "--requests", str(args.requests),
                     "--concurrency", str(args.concurrency)] + (["--drive-tracing"] if traced else []),
                    cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)}, text=True,
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            for d in drivers.values():
                assert d.stdout.readline().strip() == "ready", "a driver failed to start"
            print(f"server CPU per request (ms) and requests/s, concurrency {args.concurrency}, "
                  f"median of {args.repeat} turns of {args.requests} requests\n")
            rev = args.rev[:9]
            names = list(drivers)
            print(f"{'kind':<14} " + " ".join(f"{n[:9] + ' cpu':>13}" for n in names) + " "
                  + " ".join(f"{n[:9] + '/' + rev:>19}" for n in names[:-1]) + "  "
                  + " ".join(f"{n[:9] + ' rps':>13}" for n in names))
            for kind in KINDS:
                got: dict[str, list[dict]] = {name: [] for name in drivers}
                for _ in range(args.repeat):
                    for name, d in drivers.items():
                        d.stdin.write(kind + "\n")
                        d.stdin.flush()
                        got[name].append(json.loads(d.stdout.readline()))
                med = {name: (statistics.median(r["cpu_ms"] for r in rs), statistics.median(r["rps"] for r in rs))
                       for name, rs in got.items()}
                base = med[args.rev][0]
                print(f"{kind:<14} " + " ".join(f"{med[n][0]:>13.2f}" for n in names) + " "
                      + " ".join(f"{med[n][0] / base:>18.2f}x" for n in names[:-1]) + "  "
                      + " ".join(f"{med[n][1]:>13.0f}" for n in names))
            for d in drivers.values():
                d.stdin.close()
                d.wait(timeout=60)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(other)], check=False)


if __name__ == "__main__":
    main()
