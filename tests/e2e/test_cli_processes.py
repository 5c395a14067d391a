"""The `sim` and `serve` commands as real processes."""
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import anthropic
import openai

from stack import free_port


def _wait_http(url, timeout_s=20.0):
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_sim_command_serves_both_apis():
    a, o = free_port(), free_port()
    proc = subprocess.Popen([sys.executable, "-m", "cascade_extproc", "sim",
                             "--anthropic", f"127.0.0.1:{a}", "--openai", f"127.0.0.1:{o}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_http(f"http://127.0.0.1:{a}/v1/models")  # answers (401 without a key) once up
        msg = anthropic.Anthropic(base_url=f"http://127.0.0.1:{a}", api_key="k", max_retries=0) \
            .messages.create(model="m", max_tokens=20, messages=[{"role": "user", "content": "hi"}])
        assert msg.content[0].text.startswith("Simulated reply from m")
        c = openai.OpenAI(base_url=f"http://127.0.0.1:{o}/v1", api_key="k", max_retries=0) \
            .chat.completions.create(model="g", messages=[{"role": "user", "content": "hi"}])
        assert c.choices[0].message.content.startswith("Simulated reply from g")
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert "simulated" in out.lower()


def test_serve_health_ready_metrics_and_sigterm(tmp_path):
    grpc_port, admin = free_port(), free_port()
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"listen: {{grpc: '127.0.0.1:{grpc_port}', admin: '127.0.0.1:{admin}'}}\n")
    env = {k: v for k, v in os.environ.items() if k != "CASCADE_DRAFT_API_KEY"}
    proc = subprocess.Popen([sys.executable, "-m", "cascade_extproc", "serve", "--config", str(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        assert _wait_http(f"http://127.0.0.1:{admin}/healthz") == (200, "ok\n")
        assert _wait_http(f"http://127.0.0.1:{admin}/readyz") == (200, "ready\n")
        status, text = _wait_http(f"http://127.0.0.1:{admin}/metrics")
        assert status == 200 and "# TYPE cascade_requests_total counter" in text
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=15)
    assert proc.returncode == 0


def test_bad_config_names_the_key(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("cascade: {draft_timeout_s: soon}\n")
    out = subprocess.run([sys.executable, "-m", "cascade_extproc", "serve", "--config", str(cfg)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert "cascade.draft_timeout_s" in out.stderr


def _children(pid: int, name: str) -> list[int]:
    """Pids of the live processes named `name` whose parent is `pid` (from /proc)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        state, ppid = stat[stat.rindex(")") + 2:].split()[:2]
        if int(ppid) == pid and comm == name and state != "Z":
            out.append(int(entry))
    return out


def _alive(pid: int) -> bool:
    """Running: not gone, and not a zombie waiting for a reaper."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is fine
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _up(port: int, admin: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "CASCADE_DRAFT_API_KEY"}
    return subprocess.Popen([sys.executable, "-m", "cascade_extproc", "up", "--sim",
                             "--listen", f"127.0.0.1:{port}", "--admin", f"127.0.0.1:{admin}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def _read_until(proc: subprocess.Popen, pattern: str, timeout_s: float = 60.0) -> str:
    """The process's output up to a line matching `pattern`, or to its exit."""
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout] + [lines.put(None)], daemon=True).start()
    text, deadline = "", time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.2)
        except queue.Empty:
            continue
        if line is None:
            return text
        text += line
        if re.search(pattern, line):
            return text
    raise AssertionError(f"{pattern!r} not printed in {timeout_s}s:\n{text}")


def test_killed_up_takes_its_envoy_along():
    port, admin = free_port(), free_port()
    proc = _up(port, admin)
    envoys: list[int] = []
    try:
        assert "is up" in _read_until(proc, r"is up|Traceback")
        envoys = _children(proc.pid, "envoy")
        assert len(envoys) == 1
        proc.send_signal(signal.SIGKILL)  # no handler runs: Envoy must not outlive it
        proc.wait(10)
        deadline = time.monotonic() + 5
        while (_alive(envoys[0]) or not _port_free(port)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(envoys[0]), "Envoy outlived the killed `up`"
        assert _port_free(port)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in envoys:  # the one we started, if the test failed
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_up_refuses_a_port_already_taken():
    port, admin = free_port(), free_port()
    # What a stale Envoy holds: a listener with SO_REUSEPORT, which another Envoy (also with
    # SO_REUSEPORT, Envoy's default) could bind as well and share.
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind(("127.0.0.1", port))
        holder.listen()
        proc = _up(port, admin)
        envoys: list[int] = []
        try:
            out = _read_until(proc, r"is up")
            envoys = _children(proc.pid, "envoy")
            proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for pid in envoys:  # if it came up after all
                if _alive(pid):
                    os.kill(pid, signal.SIGKILL)
    assert proc.returncode != 0, out
    assert "is up" not in out
    assert f"127.0.0.1:{port} is already in use" in out, out
    assert "Traceback" not in out
