"""
HTTP/2 in memory: the protocol choice per TLS connection, a stream relayed to an HTTP/1.1 upstream, the body limit
and the connection gate, with an h2 client object writing frames into a StringTransport.
"""

from __future__ import annotations

import h2.config
import h2.connection
import h2.events
from _harness import Harness
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from txrevproxy import ClientConfig, HeadLimits, ProxyChannel, ProxySite
from txrevproxy._gate import ConnectionGate, GateConfig
from txrevproxy._h2 import NegotiatedChannel, ProxyH2Connection


class H2Pair:
    """
    A proxy site with HTTP/2 on, one connection to it whose ALPN result is ``protocol``, and an h2 client.
    """

    def __init__(self, protocol: bytes | None = b"h2", client: ClientConfig | None = None) -> None:
        self.h = Harness()
        self.gate = ConnectionGate(GateConfig(), self.h.reactor)
        self.site = ProxySite(
            self.h.resource, reactor=self.h.reactor, http2=True, client=client, gate=self.gate, max_streams=5
        )
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", "10.0.0.2", 5000))
        self.transport.negotiatedProtocol = protocol  # type: ignore[attr-defined]
        self.protocol = self.site.buildProtocol(IPv4Address("TCP", "10.0.0.2", 5000))
        self.protocol.makeConnection(self.transport)
        self.client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        self.client.initiate_connection()
        self.events: list[object] = []

    def send(self) -> None:
        self.protocol.dataReceived(self.client.data_to_send())
        self.pump()

    def pump(self) -> None:
        self.h.reactor.advance(0)  # H2Connection sends its queued frames on the reactor's next turn
        data = self.transport.value()
        self.transport.clear()
        if data:
            self.events += self.client.receive_data(data)

    def request(self, method: bytes, path: bytes, headers: list[tuple[bytes, bytes]] = [], body: bytes | None = None) -> int:
        stream = self.client.get_next_available_stream_id()
        pseudo = [(b":method", method), (b":authority", b"example.com"), (b":scheme", b"https"), (b":path", path)]
        self.client.send_headers(stream, pseudo + headers, end_stream=body is None)
        if body is not None:
            self.client.send_data(stream, body, end_stream=True)
        self.send()
        return stream

    def of(self, kind: type, stream: int) -> list[object]:
        return [e for e in self.events if isinstance(e, kind) and getattr(e, "stream_id", None) == stream]


def test_alpn_offer_and_protocol_choice() -> None:
    """A site with HTTP/2 on offers h2 first and builds a negotiating protocol; without, HTTP/1.1 and the channel."""
    h = Harness()
    plain = ProxySite(h.resource, reactor=h.reactor)
    both = ProxySite(h.resource, reactor=h.reactor, http2=True)
    assert plain.acceptableProtocols() == [b"http/1.1"] and both.acceptableProtocols() == [b"h2", b"http/1.1"]
    assert isinstance(plain.buildProtocol(None), ProxyChannel)
    assert isinstance(both.buildProtocol(None), NegotiatedChannel)


def test_http1_when_alpn_chose_it() -> None:
    """A TLS connection that negotiated http/1.1 is served by the proxy's HTTP/1.1 channel."""
    pair = H2Pair(protocol=b"http/1.1")
    pair.protocol.dataReceived(b"GET /x HTTP/1.1\r\nHost: e\r\n\r\n")
    assert isinstance(pair.protocol._channel, ProxyChannel)
    assert pair.h.upstream().accept().received().startswith(b"GET /x HTTP/1.1\r\n")


def test_stream_relayed() -> None:
    """A stream's request goes upstream as HTTP/1.1 with Host from :authority; the response comes back on it."""
    pair = H2Pair()
    stream = pair.request(b"GET", b"/a?b=1")
    assert isinstance(pair.protocol._channel, ProxyH2Connection)
    up = pair.h.upstream().accept()
    sent = up.received()
    assert sent.startswith(b"GET /a?b=1 HTTP/1.1\r\n")
    assert b"X-Forwarded-Host: example.com\r\n" in sent and b"Via: 2 txrevproxy\r\n" in sent
    up.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Up: 1\r\nConnection: keep-alive\r\n\r\nhello")
    pair.pump()
    [response] = pair.of(h2.events.ResponseReceived, stream)
    headers = dict(response.headers)  # type: ignore[attr-defined]
    assert headers[b":status"] == b"200" and headers[b"x-up"] == b"1"
    assert b"connection" not in headers and b"server" not in headers
    assert b"".join(e.data for e in pair.of(h2.events.DataReceived, stream)) == b"hello"  # type: ignore[attr-defined]
    assert pair.of(h2.events.StreamEnded, stream)


def test_settings_announced() -> None:
    """The connection preface announces the stream limit and the header list size."""
    pair = H2Pair(client=ClientConfig())
    pair.send()
    [changed] = [e for e in pair.events if isinstance(e, h2.events.RemoteSettingsChanged)]
    settings = {code: change.new_value for code, change in changed.changed_settings.items()}  # type: ignore[attr-defined]
    assert settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] == 5
    assert settings[h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE] == 32768


def test_declared_body_over_the_limit() -> None:
    """A content-length over max_body gets 413 on that stream and nothing goes upstream."""
    pair = H2Pair(client=ClientConfig(max_body=10))
    stream = pair.request(b"POST", b"/", [(b"content-length", b"20")], b"x" * 20)
    [response] = pair.of(h2.events.ResponseReceived, stream)
    assert dict(response.headers)[b":status"] == b"413"  # type: ignore[attr-defined]
    assert pair.h.attempts == 0


def test_gate_released() -> None:
    """The connection gate's slot, taken by the channel, is given back when the HTTP/2 connection ends."""
    pair = H2Pair()
    pair.send()
    assert pair.gate.open == 1
    pair.protocol.connectionLost(Failure(ConnectionDone()))
    assert pair.gate.open == 0


def test_invalid_host_is_400() -> None:
    """A complete stream is checked like an HTTP/1.1 request: an invalid Host from :authority gets 400."""
    pair = H2Pair()
    stream = pair.client.get_next_available_stream_id()
    pair.client.send_headers(
        stream, [(b":method", b"GET"), (b":authority", b"bad host"), (b":scheme", b"https"), (b":path", b"/")], end_stream=True
    )
    pair.send()
    [response] = pair.of(h2.events.ResponseReceived, stream)
    assert dict(response.headers)[b":status"] == b"400"  # type: ignore[attr-defined]
    assert pair.h.attempts == 0


def test_header_list_over_the_limit() -> None:
    """A header list over the announced size ends the connection (GOAWAY) and nothing goes upstream."""
    pair = H2Pair(client=ClientConfig(head=HeadLimits(header_section=4096)))
    pair.request(b"GET", b"/", [(b"x-big", b"y" * 8000)])
    assert [e for e in pair.events if isinstance(e, h2.events.ConnectionTerminated)]
    assert pair.h.attempts == 0


def test_too_many_streams() -> None:
    """Opening more streams than announced ends the connection; the streams within the limit were relayed."""
    pair = H2Pair()  # its client has not read the server's SETTINGS yet, so it does not hold itself to 5
    for _ in range(6):
        stream = pair.client.get_next_available_stream_id()
        pair.client.send_headers(
            stream, [(b":method", b"GET"), (b":authority", b"e"), (b":scheme", b"https"), (b":path", b"/")], end_stream=True
        )
        pair.protocol.dataReceived(pair.client.data_to_send())
    pair.pump()
    assert [e for e in pair.events if isinstance(e, h2.events.ConnectionTerminated)]
    assert pair.h.attempts == 5


def test_body_after_413_is_dropped() -> None:
    """The rest of a body refused with 413 is dropped without harm: the connection serves the next stream."""
    pair = H2Pair(client=ClientConfig(max_body=10))
    stream = pair.client.get_next_available_stream_id()
    pseudo = [(b":method", b"POST"), (b":authority", b"e"), (b":scheme", b"https"), (b":path", b"/")]
    pair.client.send_headers(stream, pseudo + [(b"content-length", b"30")])
    pair.client.send_data(stream, b"x" * 10)
    pair.send()
    [response] = pair.of(h2.events.ResponseReceived, stream)
    assert dict(response.headers)[b":status"] == b"413"  # type: ignore[attr-defined]
    pair.client.send_data(stream, b"y" * 20, end_stream=True)
    pair.send()
    assert not [e for e in pair.events if isinstance(e, h2.events.ConnectionTerminated)]
    following = pair.request(b"GET", b"/next")
    assert pair.h.upstream().accept().received().startswith(b"GET /next HTTP/1.1")
    assert not pair.of(h2.events.StreamReset, following)
