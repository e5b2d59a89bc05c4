"""
The connection gate in ProxySite.buildProtocol: access rules and the connection cap, before any byte is read.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure

from txrevproxy import AccessPolicy, PassThroughProxyResource, ProxySite
from txrevproxy._server.gate import CAP_LOG_INTERVAL, DEFAULT_MAX_CONNECTIONS, ConnectionGate, GateConfig


def v4(host: str) -> IPv4Address:
    return IPv4Address("TCP", host, 50000)


OPEN = AccessPolicy()


def make_site(access: AccessPolicy = OPEN, cap: int = 100) -> tuple[ProxySite, MemoryReactorClock]:
    reactor = MemoryReactorClock()
    resource = PassThroughProxyResource("127.0.0.1", 8000, b"", reactor)
    gate = ConnectionGate(GateConfig(access=access, max_connections=cap), reactor)
    return ProxySite(resource, reactor=reactor, gate=gate), reactor


def connect(site: ProxySite, address: object) -> object:
    channel = site.buildProtocol(address)
    if channel is not None:
        channel.makeConnection(StringTransport(peerAddress=address))
    return channel


def lose(channel: object) -> None:
    channel.connectionLost(Failure(ConnectionDone()))


def messages(events) -> list[str]:
    return [formatEvent(e) for e in events if e.get("log_namespace") == "txrevproxy"]


def test_default_gate_config():
    """Without flags the gate lets every client in, up to 10000 connections."""
    assert GateConfig() == GateConfig(access=AccessPolicy(), max_connections=DEFAULT_MAX_CONNECTIONS)
    assert DEFAULT_MAX_CONNECTIONS == 10000


def test_site_without_gate_serves_everyone():
    """A ProxySite built without a gate (the library default) builds a channel for every connection."""
    site = ProxySite(PassThroughProxyResource("127.0.0.1", 8000, b"", MemoryReactorClock()))
    assert site.gate is None and site.buildProtocol(v4("203.0.113.9")) is not None


def test_denied_client_gets_no_channel_and_one_log_line():
    """A denied peer makes buildProtocol return None (Twisted closes the socket) and logs the peer and rule."""
    site, _ = make_site(AccessPolicy.parse(deny=["10.0.0.0/8"]))
    with capturedLogs() as events:
        assert site.buildProtocol(v4("10.2.3.4")) is None
    assert messages(events) == ["refused connection from 10.2.3.4: deny 10.0.0.0/8"]
    assert site.gate.open == 0


def test_allow_list_refuses_others_and_admits_members():
    """With --allow, members get a channel and everyone else is refused with the rule named."""
    site, _ = make_site(AccessPolicy.parse(allow=["127.0.0.1/32"]))
    with capturedLogs() as events:
        assert site.buildProtocol(v4("127.0.0.2")) is None
        assert site.buildProtocol(v4("127.0.0.1")) is not None
    assert messages(events) == ["refused connection from 127.0.0.2: no allow network matches"]


def test_ipv4_mapped_peer_on_dual_stack_listener_matches_ipv4_rule():
    """A ::ffff:a.b.c.d peer is refused by an IPv4 --deny network."""
    site, _ = make_site(AccessPolicy.parse(deny=["192.0.2.0/24"]))
    assert site.buildProtocol(IPv6Address("TCP", "::ffff:192.0.2.1", 50000)) is None
    assert site.buildProtocol(IPv6Address("TCP", "::ffff:192.0.3.1", 50000)) is not None


def test_unix_socket_peer_is_allowed_by_an_allow_list():
    """A UNIX socket peer has no IP address and is let through."""
    site, _ = make_site(AccessPolicy.parse(allow=["10.0.0.0/8"]))
    assert site.buildProtocol(UNIXAddress(None)) is not None


def test_cap_refuses_past_the_limit_and_admits_after_a_close():
    """At --max-connections the next connection is refused; losing one makes room for another."""
    site, _ = make_site(cap=2)
    first, second = connect(site, v4("10.0.0.1")), connect(site, v4("10.0.0.2"))
    assert site.gate.open == 2
    with capturedLogs() as events:
        assert site.buildProtocol(v4("10.0.0.3")) is None
    assert messages(events) == ["refused connection from 10.0.0.3: 2 connections open, at --max-connections 2"]
    lose(first)
    assert site.gate.open == 1
    assert connect(site, v4("10.0.0.3")) is not None
    assert site.gate.open == 2
    lose(second)


def test_connection_lost_twice_counts_once():
    """A channel whose connectionLost runs twice releases its slot once."""
    site, _ = make_site(cap=5)
    keep = connect(site, v4("10.0.0.1"))
    twice = connect(site, v4("10.0.0.2"))
    lose(twice)
    lose(twice)
    assert site.gate.open == 1
    lose(keep)
    assert site.gate.open == 0


def test_cap_refusals_logged_at_most_once_per_interval_with_a_count():
    """Cap refusals log the first one, then one line per interval saying how many were not logged."""
    site, clock = make_site(cap=1)
    connect(site, v4("10.0.0.1"))
    with capturedLogs() as events:
        for _ in range(5):
            assert site.buildProtocol(v4("10.0.0.9")) is None
        clock.advance(CAP_LOG_INTERVAL / 2)
        assert site.buildProtocol(v4("10.0.0.9")) is None
        clock.advance(CAP_LOG_INTERVAL / 2)
        assert site.buildProtocol(v4("10.0.0.8")) is None
    assert messages(events) == [
        "refused connection from 10.0.0.9: 1 connections open, at --max-connections 1",
        (
            "refused connection from 10.0.0.8: 1 connections open, at --max-connections 1"
            " (and 5 more since the last such line)"
        ),
    ]
    assert site.gate.refused_at_cap == 7


def test_access_refusal_does_not_use_a_connection_slot():
    """A refused connection never counts toward the cap."""
    site, _ = make_site(AccessPolicy.parse(deny=["10.9.0.0/16"]), cap=1)
    for _ in range(3):
        assert site.buildProtocol(v4("10.9.0.1")) is None
    assert connect(site, v4("10.0.0.1")) is not None


def test_refused_behind_a_tls_wrapper_is_closed_by_a_protocol():
    """Behind TLS (a wrapping factory, which cannot take None) a refused connection is aborted unread."""
    from twisted.internet import ssl
    from twisted.protocols.tls import TLSMemoryBIOFactory

    site, _ = make_site(AccessPolicy.parse(deny=["10.0.0.0/8"]))
    site.refuse_by_closing = True
    tls = TLSMemoryBIOFactory(ssl.CertificateOptions(), False, site)
    transport = StringTransport()
    tls.buildProtocol(v4("10.0.0.1")).makeConnection(transport)
    assert transport.disconnecting and transport.value() == b""
    assert site.gate.open == 0
    assert site.buildProtocol(v4("192.0.2.1")) is not None
