"""The committed Envoy bootstrap is current, and real Envoy accepts what we generate."""
import socket
import subprocess
from pathlib import Path

import yaml

from cascade_extproc import cli, config, envoy_config
from cascade_extproc.envoy_config import Addr
from cascade_extproc.envoy_proc import envoy_binary
from cascade_extproc.headers import CLIENT_CREDENTIALS

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_committed_envoy_yaml_is_current(capsys):
    assert cli.main(["envoy-config"]) == 0
    assert capsys.readouterr().out == (ROOT / "envoy" / "envoy.yaml").read_text(), \
        "envoy/envoy.yaml is stale: run `cascade-extproc envoy-config > envoy/envoy.yaml`"


def test_envoy_validates_the_committed_bootstrap():
    out = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(ROOT / "envoy" / "envoy.yaml")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_llm_traffic_limits_are_set():
    cfg = config.load()
    boot = envoy_config.build(cfg, listen=Addr("127.0.0.1", 1), grpc=Addr("127.0.0.1", 2),
                              admin=Addr("127.0.0.1", 3))
    listener = boot["static_resources"]["listeners"][0]
    assert listener["per_connection_buffer_limit_bytes"] == cfg.limits.max_body_bytes  # no 413 at 1 MiB
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    ext = hcm["http_filters"][0]["typed_config"]
    assert ext["failure_mode_allow"] is True
    assert float(ext["message_timeout"].rstrip("s")) >= 1  # not 200 ms
    # A cascade may extend the wait up to its own limits (override_message_timeout).
    wait = float(ext["max_message_timeout"].rstrip("s"))
    assert wait > cfg.cascade.draft_timeout_s + cfg.cascade.verify_timeout_s
    routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
    assert all(float(r["route"]["timeout"].rstrip("s")) >= 600 for r in routes)  # not 15 s
    # https upstreams get TLS with SNI; the draft route needs the server's metadata.
    clusters = {c["name"]: c for c in boot["static_resources"]["clusters"]}
    assert clusters["strong_anthropic"]["transport_socket"]["typed_config"]["sni"] == "api.anthropic.com"
    assert routes[0]["match"]["dynamic_metadata"][0]["filter"] == "cascade"


def build_from(tmp_path, data, **kw):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    boot = envoy_config.build(config.load(path), listen=Addr("127.0.0.1", 1), grpc=Addr("127.0.0.1", 2),
                              admin=Addr("127.0.0.1", 3), **kw)
    return boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]


def test_draft_routes_rewrite_the_path_and_swap_credentials(tmp_path):
    hcm = build_from(tmp_path, {"providers": {
        "anthropic": {"draft": {"base_url": "https://api.deepseek.com/anthropic", "format": "anthropic"}},
        "openai": {"draft": {"base_url": "https://api.deepseek.com/v1", "format": "openai"}}}})
    routes = {r["name"]: r for r in hcm["route_config"]["virtual_hosts"][0]["routes"]}
    for api, path, auth in (("anthropic", "/anthropic/v1/messages", ("x-api-key", "%DYNAMIC_METADATA(cascade.draft:key)%")),
                            ("openai", "/v1/chat/completions", ("authorization", "Bearer %DYNAMIC_METADATA(cascade.draft:key)%"))):
        r = routes[f"draft-{api}"]
        (match,) = r["match"]["dynamic_metadata"]  # only the server can select it; no client header can
        assert match == {"filter": "cascade", "path": [{"key": "route"}],
                         "value": {"string_match": {"exact": f"draft-{api}"}}}
        assert r["route"]["regex_rewrite"] == {"pattern": {"regex": "^.*$"}, "substitution": path}
        assert r["route"]["host_rewrite_literal"] == "api.deepseek.com"
        assert set(r["request_headers_to_remove"]) == set(CLIENT_CREDENTIALS)
        added = {h["header"]["key"]: h["header"]["value"] for h in r["request_headers_to_add"]}
        assert added[auth[0]] == auth[1]
    # The draft key is accepted from the server, and sent back to no one.
    ext = hcm["http_filters"][0]["typed_config"]
    assert ext["metadata_options"] == {"receiving_namespaces": {"untyped": ["cascade", "cascade.draft"]}}


def test_filters_and_what_each_sends(tmp_path):
    hcm = build_from(tmp_path, {})
    names = [f["name"] for f in hcm["http_filters"]]
    assert names == ["envoy.filters.http.ext_proc", "envoy.filters.http.buffer", "envoy.filters.http.router"]
    ext, hold = (f["typed_config"] for f in hcm["http_filters"][:2])
    # The body, with the headers the server reads as attributes; then the answer's headers.
    mode = ext["processing_mode"]
    assert (mode["request_header_mode"], mode["request_body_mode"]) == ("SKIP", "BUFFERED")
    assert (mode["response_header_mode"], mode["response_body_mode"]) == ("SEND", "NONE")
    assert ext["allow_mode_override"] is True  # the answer's body mode is chosen at its headers
    assert {"request.path", "request.headers['x-api-key']"} <= set(ext["request_attributes"])
    assert hold["max_request_bytes"] == ext["grpc_service"]["envoy_grpc"]["max_receive_message_length"]
    # Non-model routes: neither the server nor the hold filter sees their bodies.
    for r in hcm["route_config"]["virtual_hosts"][0]["routes"]:
        disabled = set(r.get("typed_per_filter_config", {}))
        model_call = r["name"].startswith(("model-", "draft-"))
        assert disabled == (set() if model_call else {"envoy.filters.http.ext_proc", "envoy.filters.http.buffer"})


def test_base_url_paths_become_rewrites(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"providers": {"anthropic": {"strong": {"base_url": "http://llm-proxy.internal:8080/proxy/anthropic"}}}}))
    boot = envoy_config.build(config.load(path), listen=Addr("127.0.0.1", 1), grpc=Addr("127.0.0.1", 2),
                              admin=Addr("127.0.0.1", 3))
    hcm = boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    routes = {r["name"]: r for r in hcm["route_config"]["virtual_hosts"][0]["routes"]}
    assert routes["strong-anthropic"]["route"]["prefix_rewrite"] == "/proxy/anthropic/"
    assert routes["model-anthropic"]["route"]["prefix_rewrite"] == "/proxy/anthropic/v1/messages"
    assert routes["model-anthropic"]["match"] == {"path": "/v1/messages"}  # the query is not part of it
    assert routes["strong-anthropic"]["route"]["host_rewrite_literal"] == "llm-proxy.internal:8080"


def test_health_listener_exposes_only_ready(tmp_path):
    import urllib.error
    import urllib.request

    from cascade_extproc.envoy_proc import EnvoyProcess

    boot = envoy_config.build(config.load(), listen=Addr("127.0.0.1", free_port()), grpc=Addr("127.0.0.1", free_port()),
                              admin=Addr("127.0.0.1", free_port()), health=Addr("127.0.0.1", free_port()))
    health = boot["static_resources"]["listeners"][1]["address"]["socket_address"]["port_value"]
    envoy = EnvoyProcess(boot)
    envoy.start()
    try:
        envoy.wait_ready()
        with urllib.request.urlopen(f"http://127.0.0.1:{health}/ready", timeout=5) as r:
            assert r.status == 200 and r.read().strip() == b"LIVE"
        for path in ("/stats", "/quitquitquit", "/config_dump"):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{health}{path}", timeout=5)
                raise AssertionError(f"{path} reachable")
            except urllib.error.HTTPError as e:
                assert e.code == 404
    finally:
        envoy.stop()
