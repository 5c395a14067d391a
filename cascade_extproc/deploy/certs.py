"""The pod-local CA for transparent capture (`cascade-extproc gen-certs`).

At each pod start an init container makes a fresh CA, signs ONE server certificate for the
intercepted LLM API hosts with it, and throws the CA's private key away: it is never written
anywhere, so nobody (not even someone who later reads the pod's volumes) can mint another
certificate the app would trust. The CA is also name-constrained to those hosts, so even its
one leaf could not be used for any other name.

Files written to the output directory:

    ca.pem        the CA certificate (NODE_EXTRA_CA_CERTS: Node adds it to its own store)
    bundle.pem    the system CAs followed by ca.pem (SSL_CERT_FILE, REQUESTS_CA_BUNDLE: these
                  replace the default store, so they must carry the public CAs too)
    leaf.pem      the server certificate followed by the CA certificate (Envoy's chain)
    leaf-key.pem  the server certificate's private key, mode 0600 (Envoy only)
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_SYSTEM_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
# Short: the pod makes new ones at every start; a pod running longer than this restarts its
# Envoy with stale certificates, so keep it well above any pod's expected life.
DEFAULT_VALIDITY_DAYS = 30
CLOCK_SKEW = dt.timedelta(minutes=5)  # nodes' clocks differ a little; backdate the start

CA_FILE, BUNDLE_FILE, LEAF_FILE, LEAF_KEY_FILE = "ca.pem", "bundle.pem", "leaf.pem", "leaf-key.pem"


@dataclass(frozen=True)
class Written:
    ca: Path
    bundle: Path
    leaf: Path
    leaf_key: Path


def system_bundle() -> Path:
    """The system's CA bundle; certifi's when the system has none (e.g. a distroless image)."""
    if os.path.isfile(DEFAULT_SYSTEM_BUNDLE):
        return Path(DEFAULT_SYSTEM_BUNDLE)
    try:
        import certifi
    except ImportError:
        raise FileNotFoundError(
            f"no system CA bundle at {DEFAULT_SYSTEM_BUNDLE} and certifi is not installed: "
            "pass --system-bundle") from None
    return Path(certifi.where())


def _check_hosts(hosts: list[str]) -> list[str]:
    out = []
    for h in hosts:
        h = h.strip().lower().rstrip(".")
        if not h:
            continue
        try:
            ipaddress.ip_address(h)
        except ValueError:
            pass
        else:
            raise ValueError(f"{h!r}: transparent capture matches TLS server names, not IP addresses")
        if "*" in h or " " in h:
            raise ValueError(f"{h!r}: give exact host names")
        out.append(h)
    if not out:
        raise ValueError("no hosts given")
    return list(dict.fromkeys(out))


def make(hosts: list[str], *, days: int = DEFAULT_VALIDITY_DAYS,
         now: dt.datetime | None = None) -> tuple[x509.Certificate, x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A new CA and a leaf for `hosts` signed by it: (ca_cert, leaf_cert, leaf_key).
    The CA's private key exists only inside this call."""
    hosts = _check_hosts(hosts)
    if days < 1:
        raise ValueError(f"--days must be at least 1, got {days}")
    now = now or dt.datetime.now(dt.timezone.utc)
    start, end = now - CLOCK_SKEW, now + dt.timedelta(days=days)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    # A random suffix: every pod's CA has its own name, so none can be confused with another's.
    ca_name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cascade-extproc"),
        x509.NameAttribute(NameOID.COMMON_NAME, f"cascade-extproc pod CA {secrets.token_hex(4)}"),
    ])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        # It can only ever vouch for the intercepted hosts (and nothing else, even if misused).
        .add_extension(x509.NameConstraints(permitted_subtrees=[x509.DNSName(h) for h in hosts],
                                            excluded_subtrees=None), critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in hosts]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        # ECDSA server key: signing only (no key encipherment, which is for RSA key transport).
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(leaf_key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    del ca_key  # never serialized: once this returns, no one can sign with this CA again
    return ca, leaf, leaf_key


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write atomically with `mode` from the start (the key is never readable by others, even briefly)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)  # the umask may have narrowed it
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def generate(out: str | Path, hosts: list[str], *, system_bundle_path: str | Path | None = None,
             days: int = DEFAULT_VALIDITY_DAYS) -> Written:
    sys_bundle = Path(system_bundle_path) if system_bundle_path else system_bundle()
    system_pems = sys_bundle.read_bytes()
    ca, leaf, leaf_key = make(hosts, days=days)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    key_pem = leaf_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption())
    w = Written(out / CA_FILE, out / BUNDLE_FILE, out / LEAF_FILE, out / LEAF_KEY_FILE)
    _write(w.leaf_key, key_pem, 0o600)
    _write(w.leaf, _pem(leaf) + _pem(ca), 0o644)
    _write(w.ca, _pem(ca), 0o644)
    sep = b"" if system_pems.endswith(b"\n") or not system_pems else b"\n"
    _write(w.bundle, system_pems + sep + b"# cascade-extproc pod CA\n" + _pem(ca), 0o644)
    return w
