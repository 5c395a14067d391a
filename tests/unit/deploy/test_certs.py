"""gen-certs: a pod-local CA whose private key never reaches the disk, and one leaf for the hosts."""
import datetime as dt
import os
import socket
import ssl
import stat
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from cascade_extproc import cli
from cascade_extproc.deploy import certs

HOSTS = ["api.anthropic.com", "api.openai.com"]


@pytest.fixture
def system_bundle(tmp_path):
    """A stand-in system bundle: one unrelated CA, so the test does not depend on the machine."""
    ca, _, _ = certs.make(["unrelated.example"])
    path = tmp_path / "system.pem"
    path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return path


@pytest.fixture
def out(tmp_path, system_bundle):
    d = tmp_path / "certs"
    certs.generate(d, HOSTS, system_bundle_path=system_bundle)
    return d


def load_chain(path):
    return x509.load_pem_x509_certificates(path.read_bytes())


def verifier_for(ca, host):
    return PolicyBuilder().store(Store([ca])).build_server_verifier(x509.DNSName(host))


def test_leaf_verifies_against_the_ca_for_each_host(out):
    (ca,) = load_chain(out / "ca.pem")
    leaf, chain_ca = load_chain(out / "leaf.pem")
    assert chain_ca == ca  # leaf.pem carries the chain Envoy presents
    for host in HOSTS:
        verifier_for(ca, host).verify(leaf, [])
    with pytest.raises(VerificationError):
        verifier_for(ca, "example.org").verify(leaf, [])


def test_tls_handshake_trusting_the_bundle(out):
    """Python's ssl (OpenSSL) with bundle.pem as its only store, as SSL_CERT_FILE makes it."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(out / "leaf.pem", out / "leaf-key.pem")
    for host in HOSTS:
        with socket.create_server(("127.0.0.1", 0)) as srv:
            def serve():
                conn, _ = srv.accept()
                with server_ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            t = threading.Thread(target=serve, daemon=True)
            t.start()
            client_ctx = ssl.create_default_context(cafile=str(out / "bundle.pem"))
            with socket.create_connection(srv.getsockname(), timeout=5) as raw:
                with client_ctx.wrap_socket(raw, server_hostname=host) as tls:
                    assert tls.getpeercert()["subjectAltName"] == tuple(("DNS", h) for h in HOSTS)
                    tls.send(b"x")
            t.join(5)


def test_ca_and_leaf_extensions(out):
    (ca,) = load_chain(out / "ca.pem")
    leaf = load_chain(out / "leaf.pem")[0]
    bc = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    ku = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_cert_sign and ku.crl_sign and not ku.digital_signature
    nc = ca.extensions.get_extension_for_class(x509.NameConstraints)
    assert nc.critical and [n.value for n in nc.value.permitted_subtrees] == HOSTS
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert leaf.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature
    assert leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == \
        x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH])
    assert leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value \
        .get_values_for_type(x509.DNSName) == HOSTS
    life = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert dt.timedelta(days=30) <= life <= dt.timedelta(days=31)
    assert leaf.not_valid_before_utc < dt.datetime.now(dt.timezone.utc)  # backdated for clock skew
    assert ca.not_valid_after_utc >= leaf.not_valid_after_utc


def test_the_ca_private_key_is_not_on_disk(out):
    assert sorted(p.name for p in out.iterdir()) == ["bundle.pem", "ca.pem", "leaf-key.pem", "leaf.pem"]
    keys = [p for p in out.iterdir() if b"PRIVATE KEY" in p.read_bytes()]
    assert keys == [out / "leaf-key.pem"]
    key = serialization.load_pem_private_key((out / "leaf-key.pem").read_bytes(), None)
    (ca,) = load_chain(out / "ca.pem")
    leaf = load_chain(out / "leaf.pem")[0]
    raw = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    assert key.public_key().public_bytes(*raw) == leaf.public_key().public_bytes(*raw)
    assert key.public_key().public_bytes(*raw) != ca.public_key().public_bytes(*raw)


def test_each_run_makes_a_new_ca(tmp_path, system_bundle):
    a = certs.generate(tmp_path / "a", HOSTS, system_bundle_path=system_bundle)
    b = certs.generate(tmp_path / "b", HOSTS, system_bundle_path=system_bundle)
    assert a.ca.read_bytes() != b.ca.read_bytes()


def test_file_modes_ignore_a_loose_umask(tmp_path, system_bundle):
    old = os.umask(0)
    try:
        w = certs.generate(tmp_path / "c", HOSTS, system_bundle_path=system_bundle)
    finally:
        os.umask(old)
    assert stat.S_IMODE(w.leaf_key.stat().st_mode) == 0o600
    for p in (w.ca, w.bundle, w.leaf):
        assert stat.S_IMODE(p.stat().st_mode) == 0o644


def test_bundle_is_the_system_cas_then_the_pod_ca(out, system_bundle):
    bundle = (out / "bundle.pem").read_bytes()
    assert bundle.startswith(system_bundle.read_bytes())
    assert bundle.endswith((out / "ca.pem").read_bytes())
    assert len(load_chain(out / "bundle.pem")) == 2


def test_regenerating_over_old_files(out, system_bundle):
    old = (out / "ca.pem").read_bytes()
    certs.generate(out, HOSTS, system_bundle_path=system_bundle)
    assert (out / "ca.pem").read_bytes() != old
    assert sorted(p.name for p in out.iterdir()) == ["bundle.pem", "ca.pem", "leaf-key.pem", "leaf.pem"]


def test_default_system_bundle_falls_back(monkeypatch, tmp_path):
    monkeypatch.setattr(certs, "DEFAULT_SYSTEM_BUNDLE", str(tmp_path / "missing.crt"))
    try:
        import certifi
    except ImportError:
        with pytest.raises(FileNotFoundError, match="--system-bundle"):
            certs.system_bundle()
    else:
        assert str(certs.system_bundle()) == certifi.where()


@pytest.mark.parametrize("bad", ["", "10.0.0.1", "*.anthropic.com"])
def test_bad_hosts_are_refused(tmp_path, bad):
    with pytest.raises(ValueError):
        certs.make([bad])


def test_cli(tmp_path, system_bundle, capsys):
    rc = cli.main(["gen-certs", "--out", str(tmp_path / "d"), "--hosts", ",".join(HOSTS),
                   "--system-bundle", str(system_bundle)])
    assert rc == 0 and "not kept" in capsys.readouterr().err
    leaf = load_chain(tmp_path / "d" / "leaf.pem")[0]
    verifier_for(load_chain(tmp_path / "d" / "ca.pem")[0], HOSTS[1]).verify(leaf, [])
    assert cli.main(["gen-certs", "--out", str(tmp_path / "e"), "--hosts", "10.1.2.3"]) == 2
    assert cli.main(["gen-certs", "--out", str(tmp_path / "e"), "--hosts", "a.example", "--days", "0"]) == 2
    assert not (tmp_path / "e").exists()
