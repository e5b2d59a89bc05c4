"""
TLS pieces without sockets: upstream URLs and Host for https, the upstream TLS settings and their files, failure
reasons, listener endpoints, ALPN and the options.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure

from tests._certs import TestCA
from txrevproxy import PoolConfig, ProxyConfig, ProxySite, ReverseProxyResource, UpstreamTLS
from txrevproxy._http.headers import host_header
from txrevproxy._tls.client import ClientTLS, tls_failure
from txrevproxy._tls.server import server_endpoint, tls_layers
from txrevproxy._upstream.pool import UpstreamAddress
from txrevproxy.resource import parse_upstream_url
from txrevproxy.tap import Options


def test_https_url() -> None:
    """An https upstream URL defaults to port 443 and keeps its scheme in the address (a different pool key)."""
    assert parse_upstream_url("https://example.com/base/") == (UpstreamAddress("example.com", 443, "https"), b"/base")
    assert parse_upstream_url("http://example.com") == (UpstreamAddress("example.com", 80, "http"), b"")
    assert UpstreamAddress("h", 443, "https") != UpstreamAddress("h", 443, "http")


def test_other_schemes_refused() -> None:
    """Only http and https upstreams exist."""
    with pytest.raises(ValueError, match="the scheme must be http or https"):
        parse_upstream_url("ftp://example.com")


def test_host_header_leaves_out_the_default_port() -> None:
    """Host names the port only when it is not the scheme's default."""
    assert host_header("example.com", 443, "https") == b"example.com"
    assert host_header("example.com", 8443, "https") == b"example.com:8443"
    assert host_header("example.com", 443, "http") == b"example.com:443"


def test_resource_from_https_url_and_children() -> None:
    """A resource made from an https URL relays over TLS, and so do its children."""
    resource = ReverseProxyResource.from_url("https://example.com:8443/base")
    child = resource.getChild(b"x", None)
    assert (resource.scheme, child.scheme) == ("https", "https")
    assert child._upstream() == (UpstreamAddress("example.com", 8443, "https"), b"example.com:8443")


def test_client_tls_files(tmp_path: Path) -> None:
    """Missing or unusable files are one-line ValueErrors; good ones load."""
    ca = TestCA(tmp_path)
    ClientTLS(UpstreamTLS(ca_file=str(ca.ca_file), client_cert=str(ca.issue("client").both)))
    with pytest.raises(ValueError, match="cannot read the CA file"):
        ClientTLS(UpstreamTLS(ca_file=str(tmp_path / "missing.pem")))
    empty = tmp_path / "empty.pem"
    empty.write_text("")
    with pytest.raises(ValueError, match="no certificate in the CA file"):
        ClientTLS(UpstreamTLS(ca_file=str(empty)))
    with pytest.raises(ValueError, match="needs a private key and a certificate"):
        ClientTLS(UpstreamTLS(client_cert=str(ca.ca_file)))
    broken = tmp_path / "broken.pem"
    broken.write_bytes(b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    with pytest.raises(ValueError, match="cannot be loaded"):
        ClientTLS(UpstreamTLS(ca_file=str(broken)))


def test_client_tls_creator_per_host(tmp_path: Path) -> None:
    """A connection creator is made once per host name."""
    tls = ClientTLS(UpstreamTLS(ca_file=str(TestCA(tmp_path).ca_file)))
    assert tls.creator("a.example") is tls.creator("a.example")
    assert tls.creator("a.example") is not tls.creator("b.example")
    insecure = ClientTLS(UpstreamTLS(insecure=True))
    assert insecure.creator("127.0.0.1") is insecure.creator("127.0.0.1")


def test_failure_reasons() -> None:
    """A name mismatch and an OpenSSL error are named; a plain close is not a TLS failure."""
    try:
        raise VerificationError(errors=[])
    except VerificationError:
        mismatch = Failure()
    assert tls_failure(mismatch, None, "h.example") == "hostname mismatch: the certificate is not valid for h.example"
    alert = Failure(SSL.Error([("SSL routines", "", "tlsv13 alert certificate required")]))
    assert tls_failure(alert, None, "h") == "tlsv13 alert certificate required"
    assert tls_failure(Failure(ConnectionDone()), None, "h") is None


def test_server_endpoint(tmp_path: Path) -> None:
    """A tls: listener gets our SNI certificates on Twisted's TCP endpoint; a bad directory is a ValueError; other
    endpoints are Twisted's own."""
    from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint

    from txrevproxy._tls.sni import SNICertificates

    assert isinstance(server_endpoint(None, "tcp:8080"), TCP4ServerEndpoint)
    with pytest.raises(ValueError, match="no private key"):
        server_endpoint(None, f"tls:{tmp_path}:port=0")
    with pytest.raises(ValueError, match="is not a directory"):
        server_endpoint(None, f"tls:{tmp_path / 'nothing'}:port=0")
    with pytest.raises(ValueError, match="port=, backlog=, interface="):
        server_endpoint(None, f"tls:{tmp_path}:port=0:privateKey=x.pem")
    certs = tmp_path / "certs"
    TestCA(tmp_path / "ca").issue("a.example")
    certs.mkdir()
    (certs / "a.pem").write_bytes((tmp_path / "ca" / "a.example.pem").read_bytes())
    tcp, creator = tls_layers(server_endpoint(None, f"tls:{certs}:port=8443:interface=127.0.0.1"))
    assert isinstance(creator, SNICertificates) and set(creator.contexts) == {"a.example"}
    assert isinstance(tcp, TCP4ServerEndpoint) and (tcp._port, tcp._interface) == (8443, "127.0.0.1")
    tcp, _ = tls_layers(server_endpoint(None, f"tls:{certs}:port=8443"))
    assert isinstance(tcp, TCP6ServerEndpoint) and tcp._interface == "::"


def test_alpn_offers_http1_only() -> None:
    """A ProxySite made without http2 offers HTTP/1.1 alone over ALPN."""
    assert ProxySite(None).acceptableProtocols() == [b"http/1.1"]


def test_upstream_tls_options(tmp_path: Path) -> None:
    """The upstream TLS flags land in the pool configuration."""
    ca = TestCA(tmp_path)
    client = ca.issue("client")
    options = Options()
    options.parseOptions(
        [
            "--upstream",
            "https://127.0.0.1:1",
            "--upstream-ca",
            str(ca.ca_file),
            "--upstream-client-cert",
            str(client.both),
        ]
    )
    tls = options.config().pool.tls
    assert tls == UpstreamTLS(ca_file=str(ca.ca_file), client_cert=str(client.both), insecure=False)
    assert ProxyConfig().pool == PoolConfig() and PoolConfig().tls == UpstreamTLS()
