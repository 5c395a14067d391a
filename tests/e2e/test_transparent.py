"""Transparent capture, end to end, in a network namespace made for the test (docs/transparent.md).

Inside the namespace, as in a pod: api.anthropic.com and example.org resolve (through the
namespace's /etc/hosts) to addresses that exist only there, where fake "real" servers present
certificates from a test CA standing in for the public ones. The sidecars run as their pod UIDs
(Envoy 101, the server 10001); the k8s init container's script (run here as is) sends every
other process's TCP 443 to Envoy's transparent listener. The app (root) uses the anthropic SDK
with its default base URL and no idea of a sidecar, trusting the pod bundle via SSL_CERT_FILE.
"""
import json
import os
import shutil
import time
from pathlib import Path

import yaml

from cascade_extproc import config as config_mod
from cascade_extproc.config import Addr
from cascade_extproc.deploy import certs, envoy_config
from cascade_extproc.deploy.envoy_config import TransparentConfig
from stack import E2E_RULES
from transparent_net import (CAPTURE_RULE, ENVOY_UID, SERVER_UID, TEST_CA_NAME, TRANSPARENT_PORT, NetNs,
                             as_uid, make_test_pki, python, real_envoy_binary, require_netns, workdir)

HERE = Path(__file__).resolve().parent
DRAFT_KEY = "draft-secret-key-0123"
CLIENT_KEY = "client-secret-key-4567"
DRAFT_PORT = 18081


def _config(work: Path) -> Path:
    key = work / "draft-key"
    key.write_text(DRAFT_KEY + "\n")
    os.chown(key, SERVER_UID, SERVER_UID)
    key.chmod(0o600)
    draft = {"base_url": f"http://127.0.0.1:{DRAFT_PORT}", "model": "sim-draft-claude",
             "format": "anthropic", "api_key_file": str(key), "api_key_env": ""}
    data = {
        "log_level": "info",
        "listen": {"grpc": "127.0.0.1:50051", "admin": "127.0.0.1:9464"},
        "providers": {
            # The strong provider is the real host name: the one the app calls and Envoy captures.
            "anthropic": {"strong": {"base_url": "https://api.anthropic.com"}, "draft": draft},
            # Not captured (not https): keeps Envoy from resolving public names in the namespace.
            "openai": {"strong": {"base_url": "http://127.0.0.1:18082/v1"},
                       "draft": {**draft, "base_url": "http://127.0.0.1:18082/v1", "format": "openai"}},
        },
        "router": {"rules": E2E_RULES},  # the paths' tests choose a route by the request's shape
    }
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _wait_file(path: Path, procs, timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        for p, log in procs:
            assert p.poll() is None, f"{p.args} exited:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.05)


def _received(work: Path, name: str) -> list[dict]:
    path = work / f"received-{name}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _key(r: dict) -> str:
    h = r["headers"]
    return h.get("x-api-key") or h.get("authorization", "").removeprefix("Bearer ")


def test_transparent_capture_end_to_end():
    require_netns()
    work = workdir()
    ns = None
    logs = {name: work / f"{name}.log" for name in ("upstreams", "server", "envoy")}
    try:
        ns = NetNs(["198.18.0.10", "198.18.0.11", "198.18.0.12"],
                   {"api.anthropic.com": "198.18.0.10", "example.org": "198.18.0.11"})
        # The pod's certificates, made as the init container makes them (Envoy reads the key).
        pod = certs.generate(work / "pod-certs", ["api.anthropic.com"])
        os.chown(pod.leaf_key, ENVOY_UID, ENVOY_UID)
        upstream_dir = work / "upstream"
        upstream_dir.mkdir()
        test_ca = make_test_pki(upstream_dir, ["api.anthropic.com", "example.org"])
        shutil.copy(test_ca, work / "test-ca.pem")
        test_ca = work / "test-ca.pem"
        test_ca.chmod(0o644)

        cfg_path = _config(work)
        cfg = config_mod.load(cfg_path)
        boot = envoy_config.build(
            cfg, listen=Addr("127.0.0.1", 10000), grpc=Addr.parse(cfg.listen.grpc), admin=Addr("127.0.0.1", 9901),
            transparent=TransparentConfig(listen=(Addr("127.0.0.1", TRANSPARENT_PORT),),
                                          certs_dir=str(work / "pod-certs")),
            upstream_ca=str(test_ca))  # Envoy's "public" CAs, to reach the fake api.anthropic.com
        (work / "envoy.yaml").write_text(yaml.safe_dump(boot, sort_keys=False))

        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONUNBUFFERED": "1",
               "PYTHONDONTWRITEBYTECODE": "1", "HOME": str(work)}
        upstreams = ns.spawn([python(), str(HERE / "transparent_upstreams.py"), str(work), str(DRAFT_PORT)],
                             logs["upstreams"], env)
        # The server's own draft and verify calls must not be captured: it runs as its pod UID.
        # It trusts the test CA (the fake "public" one) for its verify calls to api.anthropic.com.
        server = ns.spawn([*as_uid(SERVER_UID), python(), "-m", "cascade_extproc", "serve", "--config", str(cfg_path)],
                          logs["server"], {**env, "SSL_CERT_FILE": str(test_ca)})
        envoy = ns.spawn([*as_uid(ENVOY_UID), real_envoy_binary(), "-c", str(work / "envoy.yaml"),
                          "--log-level", "warning", "--disable-hot-restart", "--concurrency", "1"],
                         logs["envoy"], env)
        ns.capture()  # k8s/components/transparent/capture.sh, as the init container runs it
        assert ns.nat_rules() == [CAPTURE_RULE]
        procs = [(upstreams, logs["upstreams"]), (server, logs["server"]), (envoy, logs["envoy"])]
        _wait_file(work / "upstreams.ready", procs)

        run = ns.run([python(), str(HERE / "transparent_client.py"), str(test_ca), str(pod.ca)],
                     capture_output=True, text=True, timeout=60,
                     env={**env, "SSL_CERT_FILE": str(pod.bundle)})
        assert run.returncode == 0, run.stdout + run.stderr + "".join(
            f"\n--- {n} ---\n{p.read_text()}" for n, p in logs.items() if p.exists())
        out = json.loads(run.stdout)

        # Through Envoy and the server: the header only the sidecar sets, and the right path.
        assert out["skipped"]["path"] == "skipped"
        assert out["skipped"]["text"].startswith("Simulated reply from sim-draft-claude")
        assert out["direct"]["path"] == "direct" and out["direct"]["model"] == "claude-haiku-4-5"
        assert out["cascade"]["path"] == "accepted"
        draft, strong = _received(work, "draft"), _received(work, "strong")
        # skipped, then the cascade's draft call: the sidecar's key and model, never the client's.
        assert [r["json"]["model"] for r in draft] == ["sim-draft-claude"] * 2
        for r in draft:
            assert _key(r) == DRAFT_KEY and CLIENT_KEY not in json.dumps(r)
        # direct, then the cascade's verify call (made by the server as UID 10001, not captured).
        assert [(r["path"], r["json"]["model"]) for r in strong] == \
            [("/v1/messages", "claude-haiku-4-5"), ("/v1/messages", "claude-sonnet-5")]
        assert [_key(r) for r in strong] == [CLIENT_KEY] * 2, strong
        assert "[cascade-verify nonce=" in json.dumps(strong[1]["json"]["messages"][-1])
        for r in draft + strong:  # Envoy's internal headers stay inside the pod
            assert "x-cascade-api" not in r["headers"] and "x-cascade-route" not in r["headers"]

        # api.anthropic.com was answered by Envoy with the pod CA's certificate...
        assert out["anthropic_issuer_with_pod_ca"].startswith("cascade-extproc pod CA")
        assert out["anthropic_issuer_with_test_ca"].startswith("rejected")
        # ...while example.org went through untouched: its own certificate, body and headers.
        other = out["other"]
        assert other["issuer"] == TEST_CA_NAME
        assert other["status"] == 200 and other["body"] == "example.org origin server: this body was not touched\n"
        assert other["headers"].get("x-origin") == "upstream" and "x-cascade-path" not in other["headers"]
        assert "envoy" not in other["headers"].get("server", "")
        # Not TLS at all on 443: relayed too.
        plain = out["plain"]
        assert plain["body"] == "plain HTTP on port 443: not touched\n" and plain["cascade_path"] is None
        assert "envoy" not in plain["server"]
    finally:
        if ns is not None:
            ns.close()
        shutil.rmtree(work, ignore_errors=True)
    assert not Path(f"/run/netns/{ns.name}").exists() and not ns.etc.exists()
