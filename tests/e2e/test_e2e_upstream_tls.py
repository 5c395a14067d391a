"""Envoy checks a provider's certificate name, not only its chain: a certificate from a trusted CA
for another host is refused before any byte of the request (credentials, prompt) is sent."""
from __future__ import annotations

import ssl
import urllib.error
import urllib.request

import pytest
import yaml

from cascade_extproc import config
from cascade_extproc.config import Addr
from cascade_extproc.deploy import certs, envoy_config
from cascade_extproc.deploy.envoy_proc import EnvoyProcess
from cascade_extproc.sim import SimProvider
from stack import CLIENT_KEY, LoopThread, free_port


@pytest.fixture
def loop():
    lt = LoopThread()
    yield lt
    lt.close()


def tls_provider(loop: LoopThread, tmp_path, name: str) -> tuple[SimProvider, str]:
    """A simulated Anthropic API over TLS whose certificate is for `name`, from a CA of its own;
    returns the sim and that CA's file."""
    w = certs.generate(tmp_path / name, [name], system_bundle_path=certs.system_bundle())
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(w.leaf, w.leaf_key)
    sim = SimProvider("anthropic", name=f"tls-{name}")
    loop.run(sim.start("127.0.0.1", 0, ssl_context=ctx))
    return sim, str(w.ca)


@pytest.mark.parametrize("cert_name, reached", [("wrong.example", False), ("localhost", True)])
def test_a_certificate_for_another_name_is_refused(tmp_path, loop, monkeypatch, cert_name, reached):
    sim, ca = tls_provider(loop, tmp_path, cert_name)
    monkeypatch.setenv("CASCADE_DRAFT_API_KEY", "")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"providers": {"anthropic": {"strong": {"base_url": f"https://localhost:{sim.port}"}}}}))
    port = free_port()
    boot = envoy_config.build(config.load(path), listen=Addr("127.0.0.1", port), grpc=Addr("127.0.0.1", free_port()),
                              admin=Addr.parse(f"unix:{tmp_path}/admin.sock"), upstream_ca=ca)
    envoy = EnvoyProcess(boot)
    envoy.start()
    try:
        envoy.wait_ready()
        # A call that never reaches the sidecar: only Envoy and the provider take part.
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/models", headers={"x-api-key": CLIENT_KEY})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                status = r.status
        except urllib.error.HTTPError as e:
            status = e.code
        _, stats = envoy.admin_get("/stats?filter=strong_anthropic.ssl")
        failed = int(next(line.split(": ")[1] for line in stats.splitlines()
                          if line.endswith("strong_anthropic.ssl.fail_verify_san") or "fail_verify_san:" in line))
        if reached:
            assert status == 200 and len(sim.received) == 1 and failed == 0
        else:
            assert status == 503 and sim.received == [] and failed >= 1
    finally:
        envoy.stop()
        loop.run(sim.stop())
