"""`cascade-extproc up`: the whole local stack in one command.

Simulated providers (unless a draft key is configured), the ext_proc and admin servers in this
process, and a real Envoy as a child process. Ctrl-C / SIGTERM stops everything.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import socket
import sys
import tempfile

from cascade_extproc.app import App, wait_for_signal
from cascade_extproc.config import Addr, Config, replace_providers
from cascade_extproc.deploy import envoy_config
from cascade_extproc.deploy.envoy_proc import EnvoyProcess
from cascade_extproc.sim import SimProvider
from cascade_extproc.types import Api

log = logging.getLogger("cascade_extproc.up")
SIM_DRAFT_KEY = "sim-draft-key"


def _has_real_keys(cfg: Config) -> bool:
    return any(cfg.providers.for_api(api).draft.api_key() for api in Api)


async def _start_sims(cfg: Config) -> tuple[Config, list[SimProvider]]:
    sims = []
    urls = {}
    for api in Api:
        for role in ("strong", "draft"):
            # The drafts cache as DeepSeek does (automatically, kept an hour); the strong ones as
            # Anthropic (cache_control) and OpenAI (automatically) do.
            sim = SimProvider(str(api), name=f"{role}-{api}",
                              **({"cache": "automatic", "cache_ttl_s": 3600} if role == "draft" else {}))
            await sim.start("127.0.0.1", 0)
            sims.append(sim)
            urls[f"{api}_{role}"] = sim.url
    cfg = replace_providers(cfg, **urls)
    # The simulated draft accepts any key; give the sidecar one without touching the config file.
    for api in Api:
        env = cfg.providers.for_api(api).draft.api_key_env or "CASCADE_DRAFT_API_KEY"
        os.environ.setdefault(env, SIM_DRAFT_KEY)
    return cfg, sims


def _in_use(addr: Addr) -> bool:
    """Whether a TCP listener holds `addr`: a bind without SO_REUSEPORT fails, even where the
    holder (a stale Envoy, whose default is SO_REUSEPORT) would let another Envoy share it."""
    if addr.is_unix or addr.port == 0:
        return False
    family, kind, proto, _, sockaddr = socket.getaddrinfo(
        addr.host, addr.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is not in use
        try:
            s.bind(sockaddr)
        except OSError:
            return True
    return False


async def up(cfg: Config, *, listen: str, admin: str | None, force_sim: bool) -> int:
    listen_addr = Addr.parse(listen)
    if admin:
        cfg = dataclasses.replace(cfg, listen=dataclasses.replace(cfg.listen, admin=admin))
    # Before starting anything: a second stack on a taken port would share it with the first
    # (or with a leftover Envoy), and requests would fail at random.
    for addr, flag in ((listen_addr, "--listen"), (Addr.parse(cfg.listen.admin), "--admin")):
        if _in_use(addr):
            print(f"cascade-extproc up: {addr} is already in use (another cascade-extproc or Envoy?); "
                  f"stop it, or choose another address with {flag}", file=sys.stderr, flush=True)
            return 2
    # Envoy reaches the server over a Unix socket: no TCP stack between them, no port to pick.
    sock_dir = tempfile.mkdtemp(prefix="cascade-")
    cfg = dataclasses.replace(cfg, listen=dataclasses.replace(cfg.listen, grpc=f"unix:{sock_dir}/extproc.sock",
                                                              relay=f"unix:{sock_dir}/relay.sock"))
    simulated = force_sim or not _has_real_keys(cfg)
    sims: list[SimProvider] = []
    if simulated:
        cfg, sims = await _start_sims(cfg)
    app = App(cfg)
    envoy = None
    try:
        await app.start()
        # Envoy's admin on a Unix socket: nothing on the machine's TCP ports can stop or
        # reconfigure it.
        boot = envoy_config.build(cfg, listen=listen_addr, grpc=Addr.parse(cfg.listen.grpc),
                                  admin=Addr.parse(f"unix:{sock_dir}/envoy-admin.sock"))
        envoy = EnvoyProcess(boot)
        envoy.start()
        await envoy.wait_ready_async()
        _print_banner(listen_addr, Addr.parse(cfg.listen.admin).host, app.admin_port, simulated)
        await wait_for_signal()
        log.info("stopping")
        return 0
    finally:
        if envoy:
            envoy.stop()
        await app.stop()
        for sim in sims:
            await sim.stop()
        shutil.rmtree(sock_dir, ignore_errors=True)
        print("cascade-extproc stopped", flush=True)


def _print_banner(listen: Addr, admin_host: str, admin_port: int, simulated: bool) -> None:
    base = f"http://{listen}"
    kind = "SIMULATED providers (no keys configured)" if simulated else "real providers"
    # Both SDKs refuse to start without a key; the simulated providers take any value, real
    # ones get the client's own key (the sidecar passes it to the strong provider).
    keys = ("  export ANTHROPIC_API_KEY=sim-key OPENAI_API_KEY=sim-key   # any value will do\n"
            if simulated else "  (and your own ANTHROPIC_API_KEY / OPENAI_API_KEY, as usual)\n")
    print(f"cascade-extproc is up, with {kind}. Point your clients at it:\n"
          f"  export ANTHROPIC_BASE_URL={base}\n"
          f"  export OPENAI_BASE_URL={base}/openai/v1\n"
          f"{keys}"
          f"Dashboard: http://{admin_host}:{admin_port}/dashboard   "
          f"Metrics: http://{admin_host}:{admin_port}/metrics   Stop: Ctrl-C", flush=True)
