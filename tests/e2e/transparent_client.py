"""The app of the transparent-capture test, run inside the namespace as root (a UID the rule
captures). It knows nothing of the sidecar: the anthropic SDK talks to https://api.anthropic.com,
trusting the pod bundle through SSL_CERT_FILE as the pod's app would. Prints one JSON object.

Usage: transparent_client.py TEST_CA_FILE POD_CA_FILE
"""
from __future__ import annotations

import json
import os
import socket
import ssl
import sys
import time
import urllib.request

import anthropic

CLIENT_KEY = "client-secret-key-4567"
COMPLEX = ("Refactor the retry loop below so that it backs off exponentially, explain the "
           "trade-offs of jitter, and keep the public interface unchanged.\n```python\n"
           "def fetch(url):\n    for _ in range(3):\n        try:\n            return get(url)\n"
           "        except IOError:\n            pass\n```")


def wait_ready(urls: list[str], timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    for url in urls:
        while True:
            try:
                with urllib.request.urlopen(url, timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"not ready: {url}") from None
                time.sleep(0.05)


def issuer_cn(cert: dict) -> str:
    return dict(x[0] for x in cert["issuer"]).get("commonName", "")


def https_get(host: str, cafile: str) -> dict:
    """GET https://HOST/ trusting only `cafile`: the peer certificate's issuer, status, body."""
    ctx = ssl.create_default_context(cafile=cafile)
    with socket.create_connection((host, 443), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname=host) as s:
        issuer = issuer_cn(s.getpeercert())
        s.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    return {"issuer": issuer, "status": int(lines[0].split()[1]), "headers": headers, "body": body.decode()}


def peer_issuer(host: str, cafile: str) -> str:
    """The issuer of what HOST:443 presents, or the verification error when `cafile` rejects it."""
    ctx = ssl.create_default_context(cafile=cafile)
    try:
        with socket.create_connection((host, 443), timeout=5) as raw, \
                ctx.wrap_socket(raw, server_hostname=host) as s:
            return issuer_cn(s.getpeercert())
    except ssl.SSLCertVerificationError as e:
        return f"rejected: {e.verify_message}"


def main(test_ca: str, pod_ca: str) -> dict:
    wait_ready(["http://127.0.0.1:9464/readyz", "http://127.0.0.1:9901/ready"])
    client = anthropic.Anthropic(base_url="https://api.anthropic.com", api_key=CLIENT_KEY, max_retries=0)
    out: dict = {"ssl_cert_file": os.environ.get("SSL_CERT_FILE")}
    for name, model, text in [("skipped", "claude-sonnet-5", "hi"),
                              ("direct", "claude-haiku-4-5", "hi"),
                              ("cascade", "claude-sonnet-5", COMPLEX)]:
        raw = client.messages.with_raw_response.create(
            model=model, max_tokens=200, messages=[{"role": "user", "content": text}])
        msg = raw.parse()
        out[name] = {"path": raw.headers.get("x-cascade-path"), "model": msg.model,
                     "text": msg.content[0].text}
    # Who answers TLS for api.anthropic.com: a pod-CA certificate (Envoy), which the test CA
    # (the "public" one) does not vouch for.
    out["anthropic_issuer_with_pod_ca"] = peer_issuer("api.anthropic.com", pod_ca)
    out["anthropic_issuer_with_test_ca"] = peer_issuer("api.anthropic.com", test_ca)
    out["other"] = https_get("example.org", test_ca)
    with urllib.request.urlopen("http://198.18.0.12:443/", timeout=5) as r:
        out["plain"] = {"status": r.status, "server": r.headers.get("server", ""),
                        "cascade_path": r.headers.get("x-cascade-path"), "body": r.read().decode()}
    return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2])))
