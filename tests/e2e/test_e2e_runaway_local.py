"""Issue 17's own case on a real model: a local SmolLM2-135M draft (llama.cpp's llama-server)
asked "Say hi" on a skipped stream with no limit the draft could keep to (OpenAI: none set;
Anthropic: 64000) once wrote 8,160 tokens of repetition over 284 seconds. Through Envoy with the
official SDKs, the client now gets a proper end within the budget and the time limit, whatever
the small model does this time. As run here (the server's seed 0) it greets, then loops on 🌍
until the budget of 512 stops it (the log's error `draft-budget`: the detector's first verdict
needs 256 symbols, ~2 model tokens each); both SDKs get 17 words and a length stop.

Small on purpose (two calls, a budget of 512 so a 2-core machine answers in seconds); the strong
model is a simulated one. Skipped when the llama-server binary or the weights are absent
(LLAMA_SERVER, SMOLLM2_GGUF, else the cache scripts/local_models.py fills); under CI=true their
absence fails the test, as for the other local-model tests (tests/e2e/local_llm.py).
"""
from __future__ import annotations

import os
import subprocess
import time
import urllib.request
from pathlib import Path

import anthropic
import openai
import pytest

from cascade_extproc.sim import SimProvider
from local_llm import local_models, require_local_models
from stack import CLIENT_KEY, LoopThread, Stack, free_port

LLAMA_SERVER = Path(os.environ.get("LLAMA_SERVER") or local_models.server_binary())
WEIGHTS = Path(os.environ.get("SMOLLM2_GGUF") or local_models.weights_file())
BUDGET, MAX_S = 512, 60

pytestmark = pytest.mark.timeout(600)  # a CPU model on a shared machine: each call up to skipped_max_s


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    """A llama-server with SmolLM2 as the draft for both APIs, a simulated strong model, the stack."""
    if not (LLAMA_SERVER.is_file() and WEIGHTS.is_file()):
        require_local_models()  # skips, or fails under CI=true
    tmp = tmp_path_factory.mktemp("runaway-local")
    port = free_port()
    log = (tmp / "llama-server.log").open("wb")
    proc = subprocess.Popen([str(LLAMA_SERVER), "-m", str(WEIGHTS), "--host", "127.0.0.1", "--port", str(port),
                             "-c", "4096", "--threads", "1", "--jinja", "--no-webui", "--seed", "0",
                             "--alias", "local-draft"], stdout=log, stderr=subprocess.STDOUT)
    loop, stack = LoopThread(), None
    strong = {api: SimProvider(api, name=f"strong-{api}") for api in ("anthropic", "openai")}
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (tmp / "llama-server.log").read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline, "llama-server not ready"
                time.sleep(0.5)
        for sim in strong.values():
            loop.run(sim.start())
        draft = {"anthropic": {"base_url": f"http://127.0.0.1:{port}", "format": "anthropic"},
                 "openai": {"base_url": f"http://127.0.0.1:{port}/v1", "format": "openai"}}
        providers = {api: {"strong": {"base_url": strong[api].url},
                           "draft": {**draft[api], "model": "local-draft", "api_key_file": str(tmp / "draft-key"),
                                     "api_key_env": ""}} for api in ("anthropic", "openai")}
        stack = Stack(tmp, extra_config={"providers": providers, "cascade": {
            "draft_max_tokens": BUDGET, "skipped_max_s": MAX_S, "draft_timeout_s": 60}})
        yield stack
    finally:
        if stack is not None:
            stack.close()
        for sim in strong.values():
            loop.run(sim.stop())
        loop.close()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_a_local_drafts_say_hi_ends_properly_within_the_budget(local):
    t0 = time.monotonic()
    client = openai.OpenAI(base_url=local.openai_url, api_key=CLIENT_KEY, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-6.2-sol", stream=True, messages=[{"role": "user", "content": "Say hi"}])
    chunks = list(raw.parse())  # to [DONE]: a cut stream would raise here
    secs = time.monotonic() - t0
    path = raw.headers["x-cascade-path"]
    text = "".join(c.delta.content or "" for ch in chunks for c in ch.choices)
    finishes = [c.finish_reason for ch in chunks for c in ch.choices if c.finish_reason]
    print(f"openai: {path}, {finishes}, {len(text.split())} words, {len(text)} characters, {secs:.1f} s")
    assert path in ("skipped", "fallback") and len(finishes) == 1 and finishes[0] in ("stop", "length")
    assert len(text) <= BUDGET * 16 and secs < MAX_S + 15  # a token is rarely 16 characters

    t0 = time.monotonic()
    aclient = anthropic.Anthropic(base_url=local.anthropic_url, api_key=CLIENT_KEY, max_retries=0)
    with aclient.messages.stream(model="claude-sonnet-5", max_tokens=64000,
                                 messages=[{"role": "user", "content": "Say hi"}]) as s:
        final = s.get_final_message()  # the SDK saw message_stop
    secs = time.monotonic() - t0
    text = "".join(b.text for b in final.content if b.type == "text")
    print(f"anthropic: {final.stop_reason}, {len(text.split())} words, {len(text)} characters, {secs:.1f} s")
    assert final.stop_reason in ("end_turn", "max_tokens")
    assert len(text) <= BUDGET * 16 and secs < MAX_S + 15
