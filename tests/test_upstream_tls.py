"""
The pool's TLS connections in memory (Twisted's iosim pumps bytes between our client and a TLS server, on a
MemoryReactorClock): a connection is handed out only once its handshake is done, a failed handshake fails the
connect with its reason, and a handshake that never ends is cut by the connect timeout.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import CertificateOptions, PrivateCertificate
from twisted.internet.testing import MemoryReactorClock
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.test.iosim import IOPump, connect, makeFakeClient, makeFakeServer

from tests._certs import CertFiles, TestCA
from txrevproxy import PoolConfig, UpstreamTLS
from txrevproxy._upstream.pool import ConnectTimeout, UpstreamAddress, UpstreamPool
from txrevproxy._upstream.protocol import UpstreamProtocol, UpstreamTLSError

ADDRESS = UpstreamAddress("127.0.0.1", 443, "https")


def _connecting(ca: TestCA) -> tuple[MemoryReactorClock, UpstreamPool, list[object], Protocol]:
    """
    A pool verifying against ``ca``, asked for a connection: the reactor, the pool, the connect results so far and
    the client's protocol (its TCP connection just made).
    """
    reactor = MemoryReactorClock()
    pool = UpstreamPool(reactor, PoolConfig(connect_timeout=5, tls=UpstreamTLS(ca_file=str(ca.ca_file))))
    results: list[object] = []
    pool.connect(ADDRESS).addBoth(results.append)
    factory = reactor.tcpClients[0][2]
    return reactor, pool, results, factory.buildProtocol(None)


def _serve(reactor: MemoryReactorClock, client: Protocol, leaf: CertFiles) -> IOPump:
    """
    A TLS server with ``leaf``'s certificate connected to ``client`` (nothing pumped yet).
    """
    pem = PrivateCertificate.loadPEM(leaf.both.read_bytes())
    options = CertificateOptions(  # (an origin speaking HTTP/1.1, as the proxy offers over ALPN)
        privateKey=pem.privateKey.original.to_cryptography_key(),
        certificate=pem.original.to_cryptography(),
        acceptableProtocols=[b"http/1.1"],
    )
    server = TLSMemoryBIOFactory(options, False, Factory.forProtocol(Protocol), clock=reactor).buildProtocol(None)
    return connect(server, makeFakeServer(server), client, makeFakeClient(client), greet=False, clock=reactor)


def test_connected_after_the_handshake(tmp_path: Path) -> None:
    """The connect fires only once the TLS handshake is done, with the connection's protocol."""
    ca = TestCA(tmp_path)
    reactor, pool, results, client = _connecting(ca)
    pump = _serve(reactor, client, ca.issue("127.0.0.1"))
    assert results == []  # TCP is connected, TLS is not
    pump.flush()
    assert len(results) == 1 and isinstance(results[0], UpstreamProtocol)
    assert results[0].handshake is None and pool.connected == 1


@pytest.mark.parametrize(
    ("problem", "reason"),
    [
        ("unknown CA", "certificate verify failed: unable to get local issuer certificate"),
        ("expired", "certificate verify failed: certificate has expired"),
        ("other name", "hostname mismatch: the certificate is not valid for 127.0.0.1"),
    ],
)
def test_failed_handshake(tmp_path: Path, problem: str, reason: str) -> None:
    """A handshake that fails verification fails the connect with an UpstreamTLSError naming the reason."""
    ca = TestCA(tmp_path / "ca")
    if problem == "unknown CA":
        leaf = TestCA(tmp_path / "other").issue("127.0.0.1")
    elif problem == "expired":
        past = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=1)
        leaf = ca.issue("127.0.0.1", not_before=past - datetime.timedelta(days=30), not_after=past)
    else:
        leaf = ca.issue("other.example")
    reactor, pool, results, client = _connecting(ca)
    _serve(reactor, client, leaf).flush()
    assert len(results) == 1 and isinstance(results[0], Failure)
    assert results[0].check(UpstreamTLSError) and results[0].getErrorMessage() == reason
    assert pool.open == 0


def test_handshake_cut_by_the_connect_timeout(tmp_path: Path) -> None:
    """A server that accepts TCP but never answers the TLS handshake: the connect times out and the connection is
    aborted."""
    reactor, _pool, results, client = _connecting(TestCA(tmp_path))
    transport = makeFakeClient(client)
    client.makeConnection(transport)
    reactor.advance(4.9)
    assert results == [] and not transport.disconnecting
    reactor.advance(0.2)
    assert len(results) == 1 and results[0].check(ConnectTimeout)
    assert transport.disconnecting
