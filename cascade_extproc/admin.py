"""Admin HTTP server: /metrics (Prometheus), /healthz (alive), /readyz (serving ext_proc),
and, when given a data source, the live dashboard (/dashboard, /dashboard/data.json)."""
from __future__ import annotations

import json
import logging
from importlib import resources
from typing import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from cascade_extproc.metering.metrics import Metrics

log = logging.getLogger(__name__)

# The page is self-contained: its own inline script and style, data.json from the same origin,
# nothing else (the favicon is an empty data: URL).
DASHBOARD_CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline'; "
                 "style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; "
                 "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def dashboard_html() -> bytes:
    return resources.files("cascade_extproc").joinpath("dashboard/index.html").read_bytes()


def build(metrics: Metrics, ready: Callable[[], bool], *,
          dashboard_data: Callable[[], dict] | None = None) -> web.Application:
    async def metrics_handler(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(metrics.registry),
                            headers={"content-type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        if ready():
            return web.Response(text="ready\n")
        return web.Response(status=503, text="not ready\n")

    app = web.Application()
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    if dashboard_data is not None:
        _add_dashboard(app, dashboard_data)
    return app


def _add_dashboard(app: web.Application, data: Callable[[], dict]) -> None:
    page = dashboard_html()
    page_headers = {
        "content-type": "text/html; charset=utf-8",
        "content-security-policy": DASHBOARD_CSP,
        "x-content-type-options": "nosniff",
        "referrer-policy": "no-referrer",
        "cache-control": "no-cache",
    }

    async def dashboard(_: web.Request) -> web.Response:
        return web.Response(body=page, headers=page_headers)

    async def dashboard_data(_: web.Request) -> web.Response:
        headers = {"content-type": "application/json", "cache-control": "no-store",
                   "x-content-type-options": "nosniff"}
        try:
            # allow_nan=False: NaN/Infinity are not JSON and would break the page's JSON.parse.
            body = json.dumps(data(), allow_nan=False, separators=(",", ":"))
        except Exception:
            log.exception("dashboard data failed")
            return web.Response(status=500, text='{"error":"dashboard data unavailable"}',
                                headers=headers)
        return web.Response(text=body, headers=headers)

    app.router.add_get("/dashboard", dashboard)
    app.router.add_get("/dashboard/data.json", dashboard_data)
