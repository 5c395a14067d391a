"""Composition root: builds the runtime and the servers from a Config and runs their lifecycle.

A config is valid when a runtime can be built from it: load_config and parse_config (what the
command line and the reload watcher use) check the schema (config.py), then compile the rest."""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from dataclasses import dataclass, field
from typing import Any, Callable

import aiohttp
import grpc
from aiohttp import web
from prometheus_client import Gauge
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from cascade_extproc import admin, config
from cascade_extproc._proto import als_pb2_grpc as als_grpc
from cascade_extproc._proto import external_processor_pb2_grpc as ep_grpc
from cascade_extproc.config import Addr, Config
from cascade_extproc.extproc.access_log import AccessLogSink, AwaitingLog
from cascade_extproc.extproc.relay import Relay
from cascade_extproc.extproc.servicer import ExternalProcessor
from cascade_extproc.metering import tracing
from cascade_extproc.metering.ledger import Ledger
from cascade_extproc.metering.metrics import Metrics
from cascade_extproc.metering.prices import PriceTable
from cascade_extproc.providers import HttpProvider
from cascade_extproc.reload import ConfigWatcher
from cascade_extproc.routing.router import Router
from cascade_extproc.routing.state import Conversations
from cascade_extproc.types import Api

log = logging.getLogger("cascade_extproc")
EXT_PROC_SERVICE = "envoy.service.ext_proc.v3.ExternalProcessor"
# On shutdown, how long the access log entries of answers just finished may still arrive
# (Envoy flushes every deploy/envoy_config.ACCESS_LOG_FLUSH).
ACCESS_LOG_DRAIN_S = 0.5
SOCKET_MODE = 0o660


@dataclass
class Runtime:
    """Everything built from one Config; replaced whole when the config changes."""

    cfg: Config
    router: Router
    prices: PriceTable
    providers: dict[tuple[Api, str], HttpProvider]  # (client api, "draft" | "strong")
    relay: Relay = field(default_factory=Relay)
    shadow_slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(4))
    cascade_slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(32))


def runtime_from(cfg: Config, session: aiohttp.ClientSession | None, relay: Relay | None = None,
                 make_provider: Callable = HttpProvider, conversations: Conversations | None = None) -> Runtime:
    """Compile `cfg` (rules, keywords, prices: ConfigError naming the key) and wire the providers.
    No I/O: the providers use `session` only when called. `conversations`: the router's
    conversation state, the app's (it outlives the runtime); None keeps none."""
    providers = {}
    for api in Api:
        pair = cfg.providers.for_api(api)
        for role in ("draft", "strong"):
            prov = getattr(pair, role)
            providers[(api, role)] = make_provider(prov.api(api), prov.base_url, session)
            if cfg.tracing.enabled:  # each call made for a traced request: a child span
                providers[(api, role)] = tracing.TracedProvider(providers[(api, role)], role,
                                                                prov.model if role == "draft" else "")
    router = Router.from_config(cfg, conversations)
    return Runtime(cfg=cfg, router=router, prices=router.ctx.prices or PriceTable([]), providers=providers,
                   relay=relay if relay is not None else Relay(),
                   shadow_slots=asyncio.Semaphore(cfg.shadow.max_concurrent),
                   cascade_slots=asyncio.Semaphore(cfg.cascade.max_concurrent))


def parse_config(data: Any) -> Config:
    """config.parse, then a runtime built from the result: a ConfigError, naming the key, for
    anything the server could not run with."""
    cfg = config.parse(data)
    runtime_from(cfg, None)
    return cfg


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """config.load (the file at `path`, or the defaults alone), checked as parse_config checks."""
    cfg = config.load(path)
    runtime_from(cfg, None)
    return cfg


def draft_keys(cfg: Config) -> list[str]:
    """The sidecar's own keys: redacted wherever text leaves it (logs, captured span content)."""
    return [k for k in (cfg.providers.for_api(api).draft.api_key() for api in Api) if k]


def listening_socket(addr: Addr) -> socket.socket:
    """A TCP socket bound to `addr`. `[::]` listens on both IPv6 and IPv4 (the kubelet probes the
    pod's address, which is IPv6 on IPv6-only clusters), or on IPv4 alone where the node has no
    IPv6."""
    if addr.host == "::":
        try:
            sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        except OSError:
            log.warning("no IPv6 here: the admin server listens on IPv4 only")
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            addr = Addr("0.0.0.0", addr.port)
    else:
        family = socket.AF_INET6 if ":" in addr.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((addr.host, addr.port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


class App:
    """The ext_proc gRPC server and the admin HTTP server, sharing one runtime."""

    def __init__(self, cfg: Config, metrics: Metrics | None = None, config_path: str | None = None):
        self.cfg = cfg
        self.config_path = config_path
        self.metrics = metrics or Metrics()
        self.ledger = Ledger(self.metrics)
        self.ledger.mode = cfg.mode
        self.grpc_port = 0
        self.admin_port = 0
        self.relay_port = 0
        self.relay = Relay()  # outlives config reloads: skipped requests in flight keep their tickets
        # What each provider's prompt cache holds of each conversation (routing/state.py): outlives
        # config reloads too, or every reload would forget every cache.
        self.conversations = Conversations(cfg.router.max_conversations)
        self._relay: web.AppRunner | None = None
        self._ready = False
        self._runtime: Runtime | None = None
        self._session: aiohttp.ClientSession | None = None
        self._grpc: grpc.aio.Server | None = None
        self._admin: web.AppRunner | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._health = health.aio.HealthServicer()
        # Records of answers Envoy meters, waiting for its access log (extproc/access_log.py).
        self.access_log = AccessLogSink(AwaitingLog())
        Gauge("cascade_metering_pending", "Records of answers Envoy meters, waiting for its access log entry.",
              registry=self.metrics.registry).set_function(lambda: len(self.access_log.awaiting))

    def runtime(self) -> Runtime:
        assert self._runtime is not None, "App.start() first"
        return self._runtime

    async def start(self) -> None:
        cfg = self.cfg
        tracing.configure(cfg.tracing, draft_keys(cfg))
        # One pooled session for all provider calls; per-call timeouts are set by the cascade.
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        self._runtime = runtime_from(cfg, self._session, self.relay, conversations=self.conversations)
        limit = cfg.limits.max_body_bytes + 1024 * 1024  # the body plus the message around it
        self._grpc = grpc.aio.server(options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
        ])
        ep_grpc.add_ExternalProcessorServicer_to_server(
            ExternalProcessor(self.runtime, self.ledger, self.access_log.awaiting), self._grpc)
        als_grpc.add_AccessLogServiceServicer_to_server(self.access_log, self._grpc)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._grpc)
        for service in ("", EXT_PROC_SERVICE):
            await self._health.set(service, health_pb2.HealthCheckResponse.SERVING)
        grpc_addr = Addr.parse(cfg.listen.grpc)
        self.grpc_port = self._grpc.add_insecure_port(str(grpc_addr))
        await self._grpc.start()
        if grpc_addr.is_unix:
            # Envoy and this server only: in Kubernetes the socket's volume is mounted into those
            # two containers, never into the app's (docs/kubernetes.md).
            os.chmod(grpc_addr.path, SOCKET_MODE)
        # On shutdown, skipped answers being streamed get the same grace as cascades.
        self._relay = web.AppRunner(self.relay.app(), access_log=None, shutdown_timeout=cfg.shutdown_grace_s)
        await self._relay.setup()
        relay_addr = Addr.parse(cfg.listen.relay)
        if relay_addr.is_unix:
            await web.UnixSite(self._relay, relay_addr.path).start()
            os.chmod(relay_addr.path, SOCKET_MODE)
        else:
            relay_sock = listening_socket(relay_addr)
            await web.SockSite(self._relay, relay_sock).start()
            self.relay_port = relay_sock.getsockname()[1]
        self._admin = web.AppRunner(admin.build(self.metrics, lambda: self._ready,
                                                dashboard_data=self.ledger.dashboard), access_log=None)
        await self._admin.setup()
        admin_addr = Addr.parse(cfg.listen.admin)
        sock = listening_socket(admin_addr)
        await web.SockSite(self._admin, sock).start()
        self.admin_port = sock.getsockname()[1]  # the real port when 0 was asked
        if self.config_path:
            watcher = ConfigWatcher(self.config_path, parse_config, self.apply, self.metrics,
                                    cfg.reload_interval_s, current=lambda: self.cfg)
            self._watcher = asyncio.get_running_loop().create_task(watcher.run())
        self._ready = True
        log.info("ext_proc gRPC on %s, admin on http://%s:%d",
                 grpc_addr if grpc_addr.is_unix else f"{grpc_addr.host}:{self.grpc_port}",
                 admin_addr.host, self.admin_port)

    def apply(self, cfg: Config) -> None:
        """Use `cfg` for every request from now on (the watcher refuses what needs a restart)."""
        assert self._session is not None
        self.conversations.resize(cfg.router.max_conversations)
        self._runtime = runtime_from(cfg, self._session, self.relay, conversations=self.conversations)
        self.cfg = cfg
        self.ledger.mode = cfg.mode
        tracing.configure(cfg.tracing, draft_keys(cfg))
        logging.getLogger().setLevel(cfg.log_level.upper())

    async def stop(self, grace_s: float = 5.0) -> None:
        """Drain: report NOT_SERVING (admin /readyz and gRPC health), refuse new streams (Envoy
        then sends new requests straight on: failure_mode_allow), and give the streams in flight,
        cascades included, up to `grace_s` to finish."""
        self._ready = False
        if self._watcher:
            self._watcher.cancel()
        await self._health.enter_graceful_shutdown()
        await asyncio.gather(*([self._grpc.stop(grace_s)] if self._grpc else []),
                             *([self._relay.cleanup()] if self._relay else []),
                             self.access_log.close(min(ACCESS_LOG_DRAIN_S, grace_s)))
        if self._admin:
            await self._admin.cleanup()
        if self._session:
            await self._session.close()
        await asyncio.to_thread(tracing.shutdown)  # the spans still queued reach the collector


async def wait_for_signal() -> None:
    """Return on SIGINT or SIGTERM."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def serve(cfg: Config, config_path: str | None = None) -> None:
    app = App(cfg, config_path=config_path)
    await app.start()
    try:
        await wait_for_signal()
        log.info("shutting down: draining for up to %.0f s", cfg.shutdown_grace_s)
    finally:
        await app.stop(cfg.shutdown_grace_s)
