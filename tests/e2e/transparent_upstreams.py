"""The "real" internet of the transparent-capture test, run inside its network namespace:

- api.anthropic.com on 198.18.0.10:443: a simulated Anthropic API (the strong provider) over TLS
  with a certificate from the test CA, as the real host has one from a public CA;
- the draft provider: a simulated Anthropic API over plain HTTP on 127.0.0.1;
- example.org on 198.18.0.11:443: some other TLS site, answering a recognisable body;
- 198.18.0.12:443: a plain-HTTP (not TLS) server on port 443.

Certificates come from DIR/upstream/<host>.{pem,key}; what the providers receive is appended to
DIR/received-<name>.jsonl; DIR/upstreams.ready appears
once everything listens. Usage: transparent_upstreams.py DIR DRAFT_PORT
"""
from __future__ import annotations

import asyncio
import json
import signal
import ssl
import sys
from pathlib import Path

from aiohttp import web

from cascade_extproc.sim import SimProvider

OTHER_BODY = "example.org origin server: this body was not touched\n"
PLAIN_BODY = "plain HTTP on port 443: not touched\n"


class Tee(list):
    """SimProvider.received, also written out for the test process (outside the namespace)."""

    def __init__(self, path: Path):
        super().__init__()
        self.path = path

    def append(self, r) -> None:
        super().append(r)
        with self.path.open("a") as f:
            f.write(json.dumps({"method": r.method, "path": r.path, "headers": r.headers,
                                "json": r.json}) + "\n")


def tls(d: Path, host: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(d / f"{host}.pem", d / f"{host}.key")
    return ctx


async def site(body: str, host: str, port: int, ctx: ssl.SSLContext | None) -> web.AppRunner:
    async def answer(request: web.Request) -> web.Response:
        return web.Response(text=body, headers={"x-origin": "upstream"})

    app = web.Application()
    app.router.add_get("/", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, ssl_context=ctx).start()
    return runner


async def main(d: Path, draft_port: int) -> None:
    strong = SimProvider("anthropic", name="strong-anthropic")
    draft = SimProvider("anthropic", name="draft-anthropic")
    strong.received = Tee(d / "received-strong.jsonl")
    draft.received = Tee(d / "received-draft.jsonl")
    await strong.start("198.18.0.10", 443, ssl_context=tls(d / "upstream", "api.anthropic.com"))
    await draft.start("127.0.0.1", draft_port)
    sites = [await site(OTHER_BODY, "198.18.0.11", 443, tls(d / "upstream", "example.org")),
             await site(PLAIN_BODY, "198.18.0.12", 443, None)]
    (d / "upstreams.ready").write_text("ok\n")
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    for r in sites:
        await r.cleanup()
    await strong.stop()
    await draft.stop()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2])))
