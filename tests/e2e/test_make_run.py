"""`make run` with no keys set: the printed URL works with the anthropic SDK; Ctrl-C stops all."""
import os
import re
import queue
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import anthropic
import openai

from stack import free_port

ROOT = Path(__file__).resolve().parents[2]


class Output:
    """All of a process's output, read by a thread (select() can't see Python's buffer)."""

    def __init__(self, proc):
        self.text = ""
        self._lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [self._lines.put(x) for x in proc.stdout], daemon=True).start()

    def wait_for(self, pattern, timeout_s=60.0):
        deadline = time.monotonic() + timeout_s
        while not re.search(pattern, self.text):
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} not printed; output so far:\n{self.text}")
            try:
                self.text += self._lines.get(timeout=0.2)
            except queue.Empty:
                pass
        return self.text


def test_make_run_serves_the_sdk_and_stops_cleanly():
    port, admin = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k != "CASCADE_DRAFT_API_KEY"}
    proc = subprocess.Popen(
        ["make", "-s", "run", f"ARGS=--listen 127.0.0.1:{port} --admin 127.0.0.1:{admin}"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)
    try:
        output = Output(proc)
        out = output.wait_for(r"Stop: Ctrl-C")
        assert "SIMULATED" in out
        base = re.search(r"export ANTHROPIC_BASE_URL=(\S+)", out).group(1)
        # The banner says what key to export: both SDKs refuse to start without one.
        keys = dict(re.findall(r"(ANTHROPIC_API_KEY|OPENAI_API_KEY)=(\S+)", out))
        assert set(keys) == {"ANTHROPIC_API_KEY", "OPENAI_API_KEY"}, out
        client = anthropic.Anthropic(base_url=base, api_key=keys["ANTHROPIC_API_KEY"], max_retries=0)
        msg = client.messages.create(model="claude-sonnet-5", max_tokens=100,
                                     messages=[{"role": "user", "content": "hello"}])
        assert msg.content[0].text.startswith("Simulated reply")
        obase = re.search(r"export OPENAI_BASE_URL=(\S+)", out).group(1)
        oclient = openai.OpenAI(base_url=obase, api_key=keys["OPENAI_API_KEY"], max_retries=0)
        assert oclient.chat.completions.create(
            model="gpt-6.2-sol", messages=[{"role": "user", "content": "hello"}]).choices[0].message.content
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does to the foreground group
        # make itself dies of the SIGINT, as it always does; the stack below it must stop cleanly.
        output.wait_for(r"cascade-extproc stopped", timeout_s=20)
        proc.wait(20)
        # Envoy and every server are gone: the ports are free again.
        for p in (port, admin):
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is fine
                s.bind(("127.0.0.1", p))  # fails while anything still listens there
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
