"""The relay: the sidecar's HTTP endpoint that Envoy sends skipped requests to.

The ext_proc server decides a request is skipped, keeps what the relay will need under a random
ticket (SkipCall), and tells Envoy (dynamic metadata) to route the request to the relay with that
ticket in a header. The relay takes the ticket, once, and serves the request
(cascade/skipped.py). The body Envoy forwards is empty: the relay has it already.

It listens where only Envoy reaches it (a Unix socket in the pod's private volume, like the
ext_proc socket): it answers with the sidecar's own draft key.
"""
from __future__ import annotations

import logging
import secrets

from aiohttp import web

from cascade_extproc.cascade import skipped
from cascade_extproc.cascade.skipped import SkipCall
from cascade_extproc.headers import RELAY_PATH, TICKET_HEADER
from cascade_extproc.metering import tracing

log = logging.getLogger("cascade_extproc.relay")


class Relay:
    def __init__(self) -> None:
        self._calls: dict[str, SkipCall] = {}
        self._traces: dict[str, tracing.Trace] = {}  # tracing on: the registering request's trace

    def register(self, call: SkipCall) -> str:
        ticket = secrets.token_urlsafe(18)
        self._calls[ticket] = call
        trace = tracing.current() if tracing.enabled() else None
        if trace is not None:
            self._traces[ticket] = trace
        return ticket

    def discard(self, ticket: str) -> SkipCall | None:
        """Forget a ticket never taken (the client went away before Envoy routed it)."""
        self._traces.pop(ticket, None)
        return self._calls.pop(ticket, None)

    def __len__(self) -> int:
        return len(self._calls)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post(RELAY_PATH, self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        ticket = request.headers.get(TICKET_HEADER, "")
        call = self._calls.pop(ticket, None)
        if tracing.enabled() or self._traces:  # its draft call joins the request's trace
            tracing.resume(self._traces.pop(ticket, None))
        if call is None:
            log.warning("relay: a request with no valid ticket")
            return web.json_response({"error": "unknown ticket"}, status=404)
        call.taken = True
        await request.read()
        try:
            return await skipped.serve(call, request)
        finally:
            call.on_done(call)
