"""The transparent-capture listener of the Envoy bootstrap (docs/transparent.md)."""
import os
import subprocess

import pytest
import yaml

from cascade_extproc import cli, config
from cascade_extproc.config import Addr
from cascade_extproc.deploy import certs, envoy_config
from cascade_extproc.deploy.envoy_config import EXT_PROC, TransparentConfig
from cascade_extproc.deploy.envoy_proc import envoy_binary
from cascade_extproc.headers import API_HEADER, INTERNAL_HEADERS, PATH_HEADER, PROVIDER_PATHS, TICKET_HEADER
from cascade_extproc.types import Api

HCM = "envoy.filters.network.http_connection_manager"


def build(cfg=None, **kw):
    return envoy_config.build(cfg or config.load(), listen=Addr("127.0.0.1", 10000), grpc=Addr("127.0.0.1", 50051),
                              admin=Addr("127.0.0.1", 9901), **kw)


def listeners(boot):
    return {ln["name"]: ln for ln in boot["static_resources"]["listeners"]}


def clusters(boot):
    return {c["name"]: c for c in boot["static_resources"]["clusters"]}


def chains(listener):
    return {c["name"]: c for c in listener["filter_chains"]}


def hcm_of(chain):
    (f,) = chain["filters"]
    assert f["name"] == HCM
    return f["typed_config"]


def load(tmp_path, data):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    return config.load(path)


def test_listener_shape():
    boot = build(transparent=TransparentConfig())
    t = listeners(boot)["transparent"]
    assert t["address"] == envoy_config.socket_address(Addr("127.0.0.1", 15443))
    # original_dst first (where the app was going), then the SNI.
    assert [f["name"] for f in t["listener_filters"]] == [
        "envoy.filters.listener.original_dst", "envoy.filters.listener.tls_inspector"]
    assert t["continue_on_listener_filters_timeout"] is True
    # Pass-through connections get Envoy's ordinary 1 MiB; the intercepted model routes their own.
    assert t["per_connection_buffer_limit_bytes"] == 1024 * 1024
    by_name = chains(t)
    assert set(by_name) == {"direct-to-listener-15443", "intercept-api.anthropic.com", "intercept-api.openai.com"}
    # Untouched passthrough for everything else, to the original destination.
    default = t["default_filter_chain"]["filters"][0]
    assert default["name"] == "envoy.filters.network.tcp_proxy"
    passthrough = clusters(boot)[default["typed_config"]["cluster"]]
    assert passthrough["type"] == "ORIGINAL_DST" and passthrough["lb_policy"] == "CLUSTER_PROVIDED"
    assert "transport_socket" not in passthrough  # bytes relayed as they are: no TLS of ours
    # A connection straight to the listener (nothing to restore) is closed, not relayed to itself.
    direct = by_name["direct-to-listener-15443"]
    assert direct["filter_chain_match"] == {"destination_port": 15443}
    hole = clusters(boot)[direct["filters"][0]["typed_config"]["cluster"]]
    assert hole["load_assignment"]["endpoints"] == []


@pytest.mark.parametrize("host,api,strong", [("api.anthropic.com", "anthropic", "strong_anthropic"),
                                             ("api.openai.com", "openai", "strong_openai")])
def test_intercepted_host_chain(host, api, strong):
    boot = build(transparent=TransparentConfig(certs_dir="/etc/cascade-certs/"))
    base_hcm = hcm_of(listeners(boot)["llm"]["filter_chains"][0])
    chain = chains(listeners(boot)["transparent"])[f"intercept-{host}"]
    assert chain["filter_chain_match"] == {"server_names": [host]}
    tls = chain["transport_socket"]["typed_config"]
    assert tls["@type"].endswith("DownstreamTlsContext")
    assert tls["common_tls_context"]["tls_certificates"] == [
        {"certificate_chain": {"filename": "/etc/cascade-certs/leaf.pem"},
         "private_key": {"filename": "/etc/cascade-certs/leaf-key.pem"}}]
    assert tls["common_tls_context"]["alpn_protocols"] == ["h2", "http/1.1"]
    hcm = hcm_of(chain)
    # The same processing as the base-URL listener.
    assert hcm["http_filters"] == base_hcm["http_filters"]
    # Client copies of the internal headers go first; then Envoy names the host's API.
    (early,) = hcm["early_header_mutation_extensions"]
    muts = early["typed_config"]["mutations"]
    assert muts[:len(INTERNAL_HEADERS)] == [{"remove": h} for h in INTERNAL_HEADERS]
    assert muts[len(INTERNAL_HEADERS):] == [{"append": {"header": {"key": API_HEADER, "value": api},
                                                        "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}}]
    (vhost,) = hcm["route_config"]["virtual_hosts"]
    # Never to a provider (the ticket header goes only to the relay, which the relay route sets).
    assert vhost["request_headers_to_remove"] == [h for h in INTERNAL_HEADERS if h != TICKET_HEADER]
    skipped, model, default = vhost["routes"]
    base_routes = {r["name"]: r for r in base_hcm["route_config"]["virtual_hosts"][0]["routes"]}
    assert skipped == base_routes["skipped"]  # to the relay, selected by the server's metadata
    # Model calls (the provider's own path) reach the server; nothing else does.
    assert model["match"] == {"path": PROVIDER_PATHS[Api(api)]} and "typed_per_filter_config" not in model
    assert default["match"] == {"prefix": "/"}
    assert default["typed_per_filter_config"][EXT_PROC]["disabled"] is True
    for r in (model, default):
        assert r["route"]["cluster"] == strong and "prefix_rewrite" not in r["route"]
        assert r["route"]["host_rewrite_literal"] == host
    assert vhost["response_headers_to_add"] == base_hcm["route_config"]["virtual_hosts"][0]["response_headers_to_add"]
    assert hcm["route_config"]["response_headers_to_add"] == base_hcm["route_config"]["response_headers_to_add"]
    assert vhost["response_headers_to_remove"] == [PATH_HEADER]  # never the provider's word


def test_the_base_listener_is_unchanged():
    plain = build()
    with_t = build(transparent=TransparentConfig())
    assert listeners(with_t)["llm"] == listeners(plain)["llm"]
    assert {k: v for k, v in clusters(with_t).items() if k in clusters(plain)} == clusters(plain)
    # no API header on the base listener: its paths name the API
    muts = hcm_of(listeners(plain)["llm"]["filter_chains"][0])["early_header_mutation_extensions"][0]
    assert all("append" not in m for m in muts["typed_config"]["mutations"])


def test_hosts_override_and_checks(tmp_path):
    boot = build(transparent=TransparentConfig(hosts=("API.Anthropic.com",)))
    assert set(chains(listeners(boot)["transparent"])) == {"direct-to-listener-15443", "intercept-api.anthropic.com"}
    with pytest.raises(ValueError, match="not the host of an https strong provider"):
        build(transparent=TransparentConfig(hosts=("example.org",)))
    # A strong provider over plain HTTP (or another port) cannot be seen in TCP 443 traffic.
    cfg = load(tmp_path, {"providers": {"openai": {"strong": {"base_url": "http://llm-proxy:8080/v1"}}}})
    names = set(chains(listeners(build(cfg, transparent=TransparentConfig()))["transparent"]))
    assert names == {"direct-to-listener-15443", "intercept-api.anthropic.com"}
    cfg = load(tmp_path, {"providers": {"openai": {"strong": {"base_url": "https://api.anthropic.com/v1"}}}})
    with pytest.raises(ValueError, match="both APIs"):
        build(cfg, transparent=TransparentConfig())


def test_more_listen_addresses():
    t = listeners(build(transparent=TransparentConfig(listen=(Addr("127.0.0.1", 15443), Addr("::1", 15443)))))
    assert t["transparent"]["additional_addresses"] == [{"address": envoy_config.socket_address(Addr("::1", 15443))}]


def test_upstream_ca():
    boot = build(upstream_ca="/tmp/test-ca.pem")
    tls = [c for c in clusters(boot).values() if "transport_socket" in c]
    assert tls and all(c["transport_socket"]["typed_config"]["common_tls_context"]["validation_context"]
                       ["trusted_ca"] == {"filename": "/tmp/test-ca.pem"} for c in tls)
    default = clusters(build())["strong_anthropic"]["transport_socket"]["typed_config"]
    assert default["common_tls_context"]["validation_context"]["trusted_ca"]["filename"] == envoy_config.SYSTEM_CA


def test_cli(capsys):
    assert cli.main(["envoy-config", "--transparent", "127.0.0.1:15443", "--certs", "/c",
                     "--transparent-hosts", "api.openai.com", "--upstream-ca", "/ca.pem"]) == 0
    boot = yaml.safe_load(capsys.readouterr().out)
    t = listeners(boot)["transparent"]
    assert set(chains(t)) == {"direct-to-listener-15443", "intercept-api.openai.com"}
    assert clusters(boot)["strong_openai"]["transport_socket"]["typed_config"]["common_tls_context"][
        "validation_context"]["trusted_ca"]["filename"] == "/ca.pem"
    assert cli.main(["envoy-config", "--transparent-hosts", "api.openai.com"]) == 2
    assert cli.main(["envoy-config", "--transparent", "127.0.0.1:15443", "--transparent-hosts", "x.org"]) == 2
    capsys.readouterr()
    assert cli.main(["envoy-config"]) == 0  # without --transparent: no such listener
    assert "transparent" not in listeners(yaml.safe_load(capsys.readouterr().out))


def test_real_envoy_accepts_it(tmp_path):
    (tmp_path / "system.pem").write_text("")
    certs.generate(tmp_path, ["api.anthropic.com", "api.openai.com"], system_bundle_path=tmp_path / "system.pem")
    boot = build(transparent=TransparentConfig(listen=(Addr("127.0.0.1", 15443), Addr("::1", 15443)),
                                               certs_dir=str(tmp_path)))
    path = tmp_path / "envoy.yaml"
    path.write_text(yaml.safe_dump(boot))
    out = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(path)],
                         capture_output=True, text=True, timeout=60,
                         env={**os.environ, "CASCADE_DRAFT_API_KEY": ""})  # Envoy reads the draft key
    assert out.returncode == 0, out.stdout + out.stderr
