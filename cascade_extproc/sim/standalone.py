"""`cascade-extproc sim`: the simulated providers alone, one for each API, until stopped."""
from __future__ import annotations

import argparse
import asyncio

from cascade_extproc.sim.server import Latency, SimProvider


async def serve_forever(providers: list[tuple[SimProvider, str, int]]) -> None:
    """Start every provider on its (host, port), announce it, and run until cancelled."""
    try:
        for provider, host, port in providers:
            await provider.start(host, port)
            print(f"sim {provider.api} provider (simulated) on {provider.url}", flush=True)
        await asyncio.Event().wait()
    finally:
        for provider, _, _ in providers:
            await provider.stop()


def _host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host or "127.0.0.1", int(port)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--anthropic", type=_host_port, default=("127.0.0.1", 8081), metavar="HOST:PORT",
                        help="where the simulated Anthropic API listens (default 127.0.0.1:8081)")
    parser.add_argument("--openai", type=_host_port, default=("127.0.0.1", 8082), metavar="HOST:PORT",
                        help="where the simulated OpenAI API listens (default 127.0.0.1:8082)")
    parser.add_argument("--ttft-ms", type=float, default=0.0, help="delay before the first token (default 0)")
    parser.add_argument("--tokens-per-s", type=float, default=0.0, help="generation speed (default 0 = instant)")


def main(args: argparse.Namespace) -> int:
    latency = Latency(ttft_s=args.ttft_ms / 1000, tokens_per_s=args.tokens_per_s)
    providers = [(SimProvider("anthropic", latency=latency), *args.anthropic),
                 (SimProvider("openai", latency=latency), *args.openai)]
    try:
        asyncio.run(serve_forever(providers))
    except KeyboardInterrupt:
        pass
    return 0
