"""The committed Envoy bootstrap is current, and real Envoy accepts what we generate."""
import os
import socket
import subprocess
from pathlib import Path

import pytest
import yaml

from cascade_extproc import cli, config
from cascade_extproc.config import Addr
from cascade_extproc.deploy import envoy_config
from cascade_extproc.deploy.envoy_proc import envoy_binary
from cascade_extproc.headers import CLIENT_CREDENTIALS

ROOT = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_committed_envoy_yaml_is_current(capsys):
    assert cli.main(["envoy-config"]) == 0
    assert capsys.readouterr().out == (ROOT / "envoy" / "envoy.yaml").read_text(), \
        "envoy/envoy.yaml is stale: run `cascade-extproc envoy-config > envoy/envoy.yaml`"


def test_envoy_validates_the_committed_bootstrap():
    # Envoy reads the draft key from the variable the config names (it may be empty: then no
    # turn is skipped), and refuses to start without the variable.
    env = {**os.environ, "CASCADE_DRAFT_API_KEY": ""}
    out = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(ROOT / "envoy" / "envoy.yaml")],
                         capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stdout + out.stderr


def test_llm_traffic_limits_are_set():
    cfg = config.load()
    boot = envoy_config.build(cfg, listen=Addr("127.0.0.1", 1), grpc=Addr("127.0.0.1", 2),
                              admin=Addr("127.0.0.1", 3))
    listener = boot["static_resources"]["listeners"][0]
    # Large buffers for model calls only (no 413 at 1 MiB); everything else keeps Envoy's 1 MiB,
    # so a slow reader of a download cannot make Envoy hold 64 MiB per connection.
    assert listener["per_connection_buffer_limit_bytes"] == 1024 * 1024
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    ext = next(f["typed_config"] for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.ext_proc")
    assert ext["failure_mode_allow"] is True
    assert float(ext["message_timeout"].rstrip("s")) >= 1  # not 200 ms
    # A cascade may extend the wait up to its own limits (override_message_timeout).
    wait = float(ext["max_message_timeout"].rstrip("s"))
    assert wait > cfg.cascade.draft_timeout_s + cfg.cascade.verify_timeout_s
    routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
    assert all(float(r["route"]["timeout"].rstrip("s")) >= 600 for r in routes)  # not 15 s
    for r in routes:
        model_call = r["name"].startswith("model-")
        assert r.get("request_body_buffer_limit") == (cfg.limits.max_body_bytes if model_call else None), r["name"]
    # https upstreams get TLS with SNI; the skipped route needs the server's metadata.
    clusters = {c["name"]: c for c in boot["static_resources"]["clusters"]}
    assert clusters["strong_anthropic"]["transport_socket"]["typed_config"]["sni"] == "api.anthropic.com"
    assert routes[0]["match"]["dynamic_metadata"][0]["filter"] == "cascade"


def build_from(tmp_path, data, **kw):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    boot = envoy_config.build(config.load(path), listen=Addr("127.0.0.1", 1), grpc=Addr("127.0.0.1", 2),
                              admin=Addr("127.0.0.1", 3), **kw)
    return boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]


def test_the_skipped_route_takes_a_ticket_to_the_relay(tmp_path):
    hcm = build_from(tmp_path, {"listen": {"relay": "unix:/run/cascade/relay.sock"}})
    routes = {r["name"]: r for r in hcm["route_config"]["virtual_hosts"][0]["routes"]}
    r = routes["skipped"]
    (match,) = r["match"]["dynamic_metadata"]  # only the server can select it; no client header can
    assert match == {"filter": "cascade", "path": [{"key": "route"}], "value": {"string_match": {"exact": "relay"}}}
    assert r["route"]["cluster"] == "relay"
    assert r["route"]["regex_rewrite"] == {"pattern": {"regex": "^.*$"}, "substitution": "/relay"}
    assert set(r["request_headers_to_remove"]) == set(CLIENT_CREDENTIALS)  # the relay needs none of them
    (ticket,) = r["request_headers_to_add"]
    assert ticket["header"] == {"key": "x-cascade-ticket", "value": "%DYNAMIC_METADATA(cascade:ticket)%"}
    # The vhost's removal of internal headers runs after the route's additions: not the ticket.
    assert "x-cascade-ticket" not in hcm["route_config"]["virtual_hosts"][0]["request_headers_to_remove"]
    ext = next(f["typed_config"] for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.ext_proc")
    assert ext["metadata_options"] == {"receiving_namespaces": {"untyped": ["cascade"]}}


def boot_from(tmp_path, data, **kw):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    return envoy_config.build(config.load(path), listen=Addr("127.0.0.1", 1), grpc=Addr("127.0.0.1", 2),
                              admin=Addr("127.0.0.1", 3), **kw)


def test_the_draft_key_is_nowhere_in_envoy(tmp_path):
    """The relay (the sidecar) calls the draft: Envoy has no draft cluster, no secret, no key."""
    boot = boot_from(tmp_path, {"listen": {"relay": "unix:/run/cascade/relay.sock"}, "providers": {
        "anthropic": {"draft": {"api_key_file": "/var/run/secrets/cascade/draft-key"}}}})
    assert "secrets" not in boot["static_resources"]
    clusters = {c["name"]: c for c in boot["static_resources"]["clusters"]}
    assert set(clusters) == {"extproc", "relay", "strong_anthropic", "strong_openai"}
    assert clusters["relay"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"] == \
        {"pipe": {"path": "/run/cascade/relay.sock"}}
    assert "draft-key" not in str(boot) and "deepseek" not in str(boot)


def test_every_tls_upstream_checks_the_certificate_name_and_dns_is_calm(tmp_path):
    boot = boot_from(tmp_path, {"providers": {"openai": {"strong": {"base_url": "https://10.0.0.7:8443/v1"}}}})
    upstreams = [c for c in boot["static_resources"]["clusters"] if c["name"].startswith("strong_")]
    assert len(upstreams) == 2
    for c in upstreams:
        tls = c["transport_socket"]["typed_config"]
        host = tls["sni"]
        san = tls["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"]
        assert san == [{"san_type": "IP_ADDRESS" if host == "10.0.0.7" else "DNS", "matcher": {"exact": host}}]
        # ~4 lookups per 30 s per pod instead of ~140: a minute's refresh, the TTL respected, and
        # never the pod's search domains (ndots:5).
        dns = c["cluster_type"]["typed_config"]
        assert dns["dns_refresh_rate"] == "60s" and dns["respect_dns_ttl"] is True
        assert dns["typed_dns_resolver_config"]["typed_config"]["dns_resolver_options"] == {"no_default_search_domain": True}
        assert "per_connection_buffer_limit_bytes" not in c


def test_envoy_sheds_load_before_its_memory_limit(tmp_path):
    om = boot_from(tmp_path, {})["overload_manager"]
    (monitor,) = om["resource_monitors"]
    assert monitor["name"] == "envoy.resource_monitors.fixed_heap"
    assert monitor["typed_config"]["max_heap_size_bytes"] < 1024 ** 3  # under the pod's 1 GiB limit
    om = boot_from(tmp_path, {"limits": {"envoy_max_heap_bytes": 3 << 30}})["overload_manager"]
    assert om["resource_monitors"][0]["typed_config"]["max_heap_size_bytes"] == 3 << 30
    actions = {a["name"] for a in om["actions"]}
    assert {"envoy.overload_actions.reset_high_memory_stream", "envoy.overload_actions.stop_accepting_requests"} <= actions


def test_filters_and_what_each_sends(tmp_path):
    hcm = build_from(tmp_path, {})
    names = [f["name"] for f in hcm["http_filters"]]
    # The usage filter before ext_proc (on the way back it runs after it), the fail-open filter
    # after it (it holds the request until the body is decided); no buffer filter any more.
    assert names == ["cascade.usage_chunk", "envoy.filters.http.ext_proc", "cascade.fail_open",
                     "envoy.filters.http.router"]
    usage, ext, fail_open = (f["typed_config"] for f in hcm["http_filters"][:3])
    # The body, with the headers the server reads as attributes; then the answer's headers.
    mode = ext["processing_mode"]
    assert (mode["request_header_mode"], mode["request_body_mode"]) == ("SKIP", "BUFFERED")
    assert (mode["response_header_mode"], mode["response_body_mode"]) == ("SEND", "NONE")
    assert ext["allow_mode_override"] is True  # the answer's body mode is chosen at its headers
    assert {"request.path", "request.headers['x-api-key']"} <= set(ext["request_attributes"])
    # The Lua code is inline: the bootstrap needs no file beside it (the Kubernetes ConfigMap).
    for lua, name in ((usage, "usage_chunk"), (fail_open, "fail_open")):
        assert lua["default_source_code"] == {"inline_string": envoy_config.lua_source(name)}
    assert "function envoy_on_response" in usage["default_source_code"]["inline_string"]
    assert "function envoy_on_request" in fail_open["default_source_code"]["inline_string"]
    # Non-model routes: none of our filters sees them (no body held, no server asked).
    ours = {"cascade.usage_chunk", "envoy.filters.http.ext_proc", "cascade.fail_open"}
    for r in hcm["route_config"]["virtual_hosts"][0]["routes"]:
        disabled = set(r.get("typed_per_filter_config", {}))
        model_call = r["name"].startswith("model-") or r["name"] == "skipped"
        assert disabled == (set() if model_call else ours)


def test_envoy_own_413_says_rejected():
    mappers = envoy_config.local_reply_config()["mappers"]
    too_large = [m for m in mappers if "413" in str(m["filter"])]
    assert len(too_large) == 2  # OpenAI's error shape under /openai/, Anthropic's elsewhere
    for m in too_large:
        assert m["headers_to_add"] == [{"header": {"key": "x-cascade-path", "value": "rejected"},
                                        "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]
    assert all("headers_to_add" not in m for m in mappers if m not in too_large)


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


def test_health_listener_is_dual_stack_and_exposes_only_ready_and_prometheus_stats(tmp_path, monkeypatch):
    import urllib.error
    import urllib.request

    from cascade_extproc.deploy.envoy_proc import EnvoyProcess

    monkeypatch.setenv("CASCADE_DRAFT_API_KEY", "")
    port = free_port()
    boot = envoy_config.build(config.load(), listen=Addr("127.0.0.1", free_port()), grpc=Addr("127.0.0.1", free_port()),
                              admin=Addr.parse(f"unix:{tmp_path}/admin.sock"), health=Addr.parse(f"[::]:{port}"))
    assert boot["admin"]["address"] == {"pipe": {"path": f"{tmp_path}/admin.sock", "mode": 0o600}}
    envoy = EnvoyProcess(boot)
    envoy.start()
    try:
        envoy.wait_ready()
        for host in ("127.0.0.1", "[::1]"):  # probes come to the pod's IPv4 or IPv6 address
            with urllib.request.urlopen(f"http://{host}:{port}/ready", timeout=5) as r:
                assert r.status == 200 and r.read().strip() == b"LIVE"
            with urllib.request.urlopen(f"http://{host}:{port}/stats/prometheus", timeout=5) as r:
                assert r.status == 200 and b"envoy_server_live" in r.read()
        for method, path in (("GET", "/stats"), ("POST", "/quitquitquit"), ("GET", "/config_dump"),
                             ("POST", "/runtime_modify?x=1"), ("POST", "/logging?level=trace"),
                             ("POST", "/stats/prometheus")):
            try:
                urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method),
                                       timeout=5)
                raise AssertionError(f"{method} {path} reachable")
            except urllib.error.HTTPError as e:
                assert e.code == 404
        assert envoy.proc.poll() is None
    finally:
        envoy.stop()


@pytest.mark.parametrize("change, refused", [
    ({"providers": {"anthropic": {"strong": {"base_url": "https://other.example"}}}},
     ["providers.anthropic.strong.base_url"]),
    ({"cascade": {"draft_timeout_s": 30}}, ["cascade.draft_timeout_s"]),
    ({"limits": {"max_body_bytes": 1 << 20}}, ["limits.max_body_bytes"]),
    ({"limits": {"envoy_max_heap_bytes": 1 << 30}}, ["limits.envoy_max_heap_bytes"]),
    ({"listen": {"admin": "127.0.0.1:9999"}}, ["listen.admin"]),
    ({"listen": {"relay": "unix:/run/other.sock"}}, ["listen.relay"]),
    # What the server alone reads reloads freely: the draft provider is the relay's to call.
    ({"mode": "shadow", "metering": False, "providers": {"anthropic": {"draft": {
        "model": "deepseek-v4", "base_url": "https://other.example/anthropic", "api_key_file": "/run/k"}},
        "openai": {"draft": {"format": "anthropic"}}},
      "router": {"rules": [{"name": "all", "route": "direct"}]}, "cascade": {"on_verify_failure": "serve_draft"}}, []),
])
def test_keys_needing_restart_are_what_the_bootstrap_and_sockets_hold(tmp_path, change, refused):
    old = config.load()
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(change))
    assert envoy_config.keys_needing_restart(old, config.load(path)) == refused


def test_llm_listener_answers_http_1_0(tmp_path):
    hcm = build_from(tmp_path, {})
    assert hcm["http_protocol_options"] == {"accept_http_10": True}  # Envoy's default: an empty reply


def test_no_listener_shares_its_port(tmp_path):
    """Envoy enables SO_REUSEPORT on listeners by default: a second Envoy (say, one left running
    by a killed `up`) would bind the same port and share its connections. Every listener opts
    out, so a taken port is an error at bind."""
    from cascade_extproc.deploy.envoy_config import TransparentConfig

    boot = envoy_config.build(config.load(), listen=Addr("127.0.0.1", 1), grpc=Addr("127.0.0.1", 2),
                              admin=Addr.parse(f"unix:{tmp_path}/admin.sock"), health=Addr("127.0.0.1", 4),
                              transparent=TransparentConfig())
    listeners = boot["static_resources"]["listeners"]
    assert [x["name"] for x in listeners] == ["llm", "transparent", "health"]
    assert all(x["enable_reuse_port"] is False for x in listeners)
