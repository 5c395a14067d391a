"""Run untrusted code from a model's answer: a subprocess in a temporary directory of its own,
with a wall-clock timeout (the whole process group is killed), CPU, memory, file-size and
open-file limits, an empty environment and Python in isolated mode.

A guard against runaway answers (an endless loop, a memory bomb, a stray file), not a security
boundary against hostile code: the process runs as the caller's user and can reach the network.
Run evals of models you do not trust in a container.
"""
from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

OUTPUT_LIMIT = 8000  # characters of stdout/stderr kept (the tail)
MEMORY_BYTES = 1 << 30
FILE_BYTES = 16 << 20


@dataclass
class Outcome:
    returncode: int | None  # None: killed at the timeout
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def timed_out(self) -> bool:
        return self.returncode is None

    def summary(self) -> str:
        if self.timed_out:
            return "timed out"
        tail = (self.stderr.strip() or self.stdout.strip()).splitlines()[-3:]
        return f"exit {self.returncode}" + (": " + " | ".join(tail) if tail else "")


def _limits(cpu_s: int) -> None:  # runs in the child, before exec
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_BYTES, MEMORY_BYTES))
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_BYTES, FILE_BYTES))
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def run(argv: list[str], cwd: Path, timeout: float = 10.0, stdin: str = "") -> Outcome:
    """`argv` in `cwd`, bounded as the module says."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(cwd), "LANG": "C.UTF-8",
           "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True,
                            preexec_fn=lambda: _limits(int(timeout) + 1))
    try:
        out, err = proc.communicate(stdin.encode(), timeout=timeout)
        code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        code = None
    return Outcome(code, out.decode(errors="replace")[-OUTPUT_LIMIT:], err.decode(errors="replace")[-OUTPUT_LIMIT:])


def run_python(source: str, files: dict[str, str] | None = None, timeout: float = 10.0) -> Outcome:
    """`source` as a script in a fresh temporary directory holding `files` (relative name → text)."""
    with tempfile.TemporaryDirectory(prefix="cascade-eval-") as tmp:
        root = Path(tmp)
        for name, text in (files or {}).items():
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        (root / "main.py").write_text(source)
        return run([sys.executable, "-I", "main.py"], root, timeout)


def run_shell(command: str, cwd: Path, timeout: float = 20.0) -> Outcome:
    """A shell command in `cwd` (the agent's bash tool). `python` is this interpreter."""
    bindir = Path(sys.executable).parent
    return run(["/bin/bash", "-c", f'export PATH="{bindir}:$PATH"; {command}'], cwd, timeout)
