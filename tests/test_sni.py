"""
Certificates chosen by SNI (``txrevproxy._tls.sni``) without sockets: the name rule, loading a directory, and real TLS
handshakes between two pyOpenSSL connections in memory.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from OpenSSL import SSL

from tests._certs import TestCA
from txrevproxy._tls.sni import SNICertificates, choose, lookup_names


def test_lookup_names() -> None:
    """A name is looked up as itself, then as the wildcard for its first label; case and a final dot do not count."""
    assert lookup_names("a.example.com") == ("a.example.com", "*.example.com")
    assert lookup_names("A.Example.COM.") == ("a.example.com", "*.example.com")
    assert lookup_names("localhost") == ("localhost",)


def test_choose() -> None:
    """No name, a name that is not ASCII or an unknown name keep the default (None); known names and wildcards match."""
    contexts = {"a.example": "A", "*.b.example": "B"}
    assert choose(contexts, None) is None and choose(contexts, b"") is None
    assert choose(contexts, "é.example".encode()) is None
    assert choose(contexts, b"nope.example") is None
    assert choose(contexts, b"A.example") == "A"
    assert choose(contexts, b"x.b.example") == "B"
    assert choose(contexts, b"b.example") is None  # a wildcard covers one label, not the bare domain
    assert choose(contexts, b"y.x.b.example") is None


def _handshake(server: SNICertificates, name: str | None) -> SSL.Connection:
    """
    A TLS handshake in memory between a client sending ``name`` and ``server``; the client's connection.
    """
    client_context = SSL.Context(SSL.TLS_METHOD)
    client = SSL.Connection(client_context, None)
    client.set_connect_state()
    if name is not None:
        client.set_tlsext_host_name(name.encode())
    accepted = server.serverConnectionForTLS(None)
    accepted.set_accept_state()
    done = [False, False]
    for _ in range(20):
        for index, (one, other) in enumerate(((client, accepted), (accepted, client))):
            try:
                one.do_handshake()
                done[index] = True
            except SSL.WantReadError:
                pass
            try:
                other.bio_write(one.bio_read(65536))
            except SSL.WantReadError:
                pass
        if all(done):
            return client
    raise AssertionError("the handshake did not complete")


def _names(cert: x509.Certificate) -> list[str]:
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)


@pytest.fixture
def certs(tmp_path: Path) -> Path:
    """A directory with a default certificate, one for a.example and a wildcard for *.b.example."""
    ca = TestCA(tmp_path / "ca")
    directory = tmp_path / "certs"
    directory.mkdir()
    for stem, names in (("00-default", ("default.example",)), ("a", ("a.example",)), ("b", ("*.b.example",))):
        shutil.copy(ca.issue(*names, stem=stem).both, directory / f"{stem}.pem")
    return directory


@pytest.mark.parametrize(
    ("sent", "served"),
    [
        ("a.example", "a.example"),
        ("x.b.example", "*.b.example"),
        ("unknown.example", "default.example"),
        (None, "default.example"),
    ],
)
def test_certificate_per_name(certs: Path, sent: str | None, served: str) -> None:
    """The client's name picks its certificate (wildcards too); no name or an unknown one gets the first file's."""
    client = _handshake(SNICertificates.from_directory(str(certs)), sent)
    assert _names(client.get_peer_certificate().to_cryptography()) == [served]


def test_separate_key_and_chain_files(tmp_path: Path) -> None:
    """A key and its certificate in separate files pair up (certbot's layout), and the chain is completed and sent."""
    root = trustme.CA()
    intermediate = root.create_child_ca()
    leaf = intermediate.issue_cert("c.example")
    site = tmp_path / "live" / "c.example"
    site.mkdir(parents=True)
    leaf.private_key_pem.write_to_path(str(site / "privkey.pem"))
    leaf.cert_chain_pems[0].write_to_path(str(site / "cert.pem"))
    intermediate.cert_pem.write_to_path(str(tmp_path / "intermediate.pem"))
    certificates = SNICertificates.from_directory(str(tmp_path))
    assert set(certificates.contexts) == {"c.example"}
    connection = _handshake(certificates, "c.example")
    chain = [cert.to_cryptography().subject for cert in connection.get_peer_cert_chain()]
    assert chain[1:] == [x509.load_pem_x509_certificate(intermediate.cert_pem.bytes()).subject]


def test_directory_errors(tmp_path: Path) -> None:
    """A missing directory, one with no key and certificate, and a file that does not parse are one-line errors."""
    with pytest.raises(ValueError, match="is not a directory"):
        SNICertificates.from_directory(str(tmp_path / "missing"))
    ca = TestCA(tmp_path / "ca")
    only_cert = tmp_path / "only-cert"
    only_cert.mkdir()
    shutil.copy(ca.issue("a.example").cert, only_cert / "a.pem")
    with pytest.raises(ValueError, match="no private key with its certificate"):
        SNICertificates.from_directory(str(only_cert))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "bad.pem").write_bytes(b"-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n")
    with pytest.raises(ValueError, match=r"bad\.pem' cannot be loaded"):
        SNICertificates.from_directory(str(broken))
