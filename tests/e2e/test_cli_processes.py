"""The `sim` and `serve` commands as real processes."""
import os
import signal
import subprocess
import sys
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
