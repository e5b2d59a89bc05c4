"""
HTTP/2 in memory: the protocol choice per TLS connection, a stream relayed to an HTTP/1.1 upstream, the body limit
and the connection gate, with an h2 client object writing frames into a StringTransport (the proxy's HTTP/2
connection driven by hand) and the upstream connections on the in-memory network.
"""

from __future__ import annotations

import h2.config
import h2.connection
import h2.errors
import h2.events
import pytest
from hyperframe.frame import DataFrame, RstStreamFrame
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IProtocol
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from zope.interface.verify import verifyObject

from tests._harness import CapturedLog, Harness, Upstream
from txrevproxy import ClientConfig, HeadLimits, ProxyChannel, ProxySite
from txrevproxy._http.framing import ChunkedDecoder
from txrevproxy._http.responses import error_body
from txrevproxy._http.validate import Rejection
from txrevproxy._server.accesslog import AccessLog
from txrevproxy._server.gate import ConnectionGate, GateConfig
from txrevproxy._server.h2 import HPACK_CEILING, NegotiatedChannel, ProxyH2Connection, head_rejection


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
        self.h.flush()  # (H2Connection sends its queued frames on the reactor's next turn)
        data = self.transport.value()
        self.transport.clear()
        if data:
            self.events += self.client.receive_data(data)

    def request(
        self, method: bytes, path: bytes, headers: list[tuple[bytes, bytes]] | None = None, body: bytes | None = None
    ) -> int:
        if headers is None:
            headers = []
        stream = self.client.get_next_available_stream_id()
        pseudo = [(b":method", method), (b":authority", b"example.com"), (b":scheme", b"https"), (b":path", path)]
        self.client.send_headers(stream, pseudo + headers, end_stream=body is None)
        if body is not None:
            self.client.send_data(stream, body, end_stream=True)
        self.send()
        return stream

    def open(
        self, method: bytes, path: bytes, headers: list[tuple[bytes, bytes]] | None = None, end: bool = False
    ) -> int:
        """
        Send a stream's headers (with END_STREAM if ``end``); its body, if any, follows with :meth:`data`.
        """
        if headers is None:
            headers = []
        stream = self.client.get_next_available_stream_id()
        pseudo = [(b":method", method), (b":authority", b"example.com"), (b":scheme", b"https"), (b":path", path)]
        self.client.send_headers(stream, pseudo + headers, end_stream=end)
        self.send()
        return stream

    def data(self, stream: int, data: bytes, end: bool = False) -> None:
        self.client.send_data(stream, data, end_stream=end)
        self.send()

    def in_flight(self, frame: object) -> None:
        """
        Deliver a frame the client sent before it read what the proxy sent last (so the client's own state has no
        say): DATA after the proxy reset the stream, a reset crossing the proxy's.
        """
        self.protocol.dataReceived(frame.serialize())  # type: ignore[attr-defined]
        self.pump()

    def of(self, kind: type, stream: int) -> list[object]:
        return [e for e in self.events if isinstance(e, kind) and getattr(e, "stream_id", None) == stream]

    def kinds(self, stream: int) -> list[type]:
        """
        The kinds of the events of ``stream``, in order.
        """
        return [type(e) for e in self.events if getattr(e, "stream_id", None) == stream]

    def terminated(self) -> bool:
        return any(isinstance(e, h2.events.ConnectionTerminated) for e in self.events)

    def status(self, stream: int) -> int:
        [response] = self.of(h2.events.ResponseReceived, stream)
        return int(dict(response.headers)[b":status"])  # type: ignore[attr-defined]

    def held(self, stream: int, upstream: Upstream) -> int:
        """
        The body bytes the proxy holds for ``stream``: DATA not yet taken from the stream, the streaming body's
        buffer, and the upstream connection's unsent bytes.
        """
        h2_stream = self.protocol._channel.streams[stream]
        unread = sum(len(chunk) for chunk, _ in h2_stream._inboundDataBuffer if isinstance(chunk, bytes))
        return unread + h2_stream._request.proxy_body._pending_size + len(upstream.transport.outgoing)

    def upload_until_shut(self, stream: int, most: int) -> int:
        """
        Send DATA on ``stream`` while its flow-control window allows, up to ``most`` bytes; return how many were sent.
        """
        sent = 0
        while sent < most:
            room = min(self.client.local_flow_control_window(stream), self.client.max_outbound_frame_size, most - sent)
            if room <= 0:
                break
            self.data(stream, b"u" * room)
            sent += room
        return sent


def stalled_upstream(pair: H2Pair) -> Upstream:
    """
    Accept the latest upstream connection, from an upstream that reads nothing.
    """
    up = pair.h.upstream().accept()
    up.stop_reading()
    return up


def dechunk(data: bytes) -> bytes:
    body = bytearray()
    decoder = ChunkedDecoder(body.extend)
    assert decoder.feed(data) == b""
    return bytes(body)


def test_alpn_offer_and_protocol_choice() -> None:
    """A site with HTTP/2 on offers h2 first and builds a negotiating protocol; without, HTTP/1.1 and the channel."""
    h = Harness()
    plain = ProxySite(h.resource, reactor=h.reactor)
    both = ProxySite(h.resource, reactor=h.reactor, http2=True)
    assert plain.acceptableProtocols() == [b"http/1.1"] and both.acceptableProtocols() == [b"h2", b"http/1.1"]
    assert isinstance(plain.buildProtocol(None), ProxyChannel)
    assert isinstance(both.buildProtocol(None), NegotiatedChannel)


def test_negotiating_protocol_passes_the_connection_on_before_any_byte() -> None:
    """The negotiating protocol is an IProtocol; a connection lost before its first byte is the HTTP/1.1 channel's."""
    pair = H2Pair()
    verifyObject(IProtocol, pair.protocol)
    assert isinstance(pair.protocol._channel, ProxyChannel) and pair.protocol.transport is pair.transport
    assert pair.gate.open == 1
    pair.protocol.connectionLost(Failure(ConnectionDone()))
    assert pair.gate.open == 0 and pair.protocol._channel.phase.value == "closed"


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


def test_idle_connection_times_out_on_the_sites_clock() -> None:
    """An idle HTTP/2 connection gets GOAWAY after the site's timeout on its reactor, and is aborted 15 s later."""
    pair = H2Pair()
    pair.send()
    assert pair.site.timeOut == 60.0
    pair.h.advance(59.5)
    pair.pump()
    assert not pair.terminated() and not pair.transport.disconnecting
    pair.h.advance(0.5)
    pair.pump()
    assert pair.terminated() and pair.transport.disconnecting and not pair.transport.disconnected
    pair.h.advance(15)
    assert pair.transport.disconnected  # (the abort after the timeout: the same clock)


def test_connect_without_path_is_400_and_logged() -> None:
    """An HTTP/2 CONNECT (no :path, as RFC 9113 has it) gets 400 on its stream, and its access-log line is written."""
    pair = H2Pair()
    lines: list[bytes] = []
    pair.site.access_log = AccessLog(lines.append, pair.h.reactor)
    pair.send()
    stream = pair.client.get_next_available_stream_id()
    pair.client.send_headers(stream, [(b":method", b"CONNECT"), (b":authority", b"example.com:443")], end_stream=True)
    pair.send()
    assert pair.status(stream) == 400 and pair.h.attempts == 0
    pair.site.access_log.flush()
    assert [line.split(b'"')[1] for line in lines] == [b"CONNECT  HTTP/2"]


def test_invalid_host_is_400() -> None:
    """A complete stream is checked like an HTTP/1.1 request: an invalid Host from :authority gets 400."""
    pair = H2Pair()
    stream = pair.client.get_next_available_stream_id()
    pair.client.send_headers(
        stream,
        [(b":method", b"GET"), (b":authority", b"bad host"), (b":scheme", b"https"), (b":path", b"/")],
        end_stream=True,
    )
    pair.send()
    [response] = pair.of(h2.events.ResponseReceived, stream)
    assert dict(response.headers)[b":status"] == b"400"  # type: ignore[attr-defined]
    assert pair.h.attempts == 0


def test_header_list_over_the_limit_is_431_on_its_stream() -> None:
    """A header list over the announced size gets 431 on its stream, nothing goes upstream, and the connection
    goes on: the next stream is relayed."""
    pair = H2Pair(client=ClientConfig(head=HeadLimits(header_section=4096)))
    stream = pair.request(b"GET", b"/", [(b"x-big", b"y" * 8000)])
    assert pair.status(stream) == 431 and pair.of(h2.events.StreamEnded, stream)
    assert pair.h.attempts == 0 and not pair.terminated()
    after = pair.request(b"GET", b"/after")
    assert pair.h.upstream().accept().received().startswith(b"GET /after HTTP/1.1\r\n")
    assert not pair.of(h2.events.ResponseReceived, after) and not pair.terminated()


def test_header_list_over_the_hpack_ceiling_ends_the_connection() -> None:
    """Past HPACK_CEILING times the announced size the decoder stops midway: the connection ends (GOAWAY)."""
    pair = H2Pair(client=ClientConfig(head=HeadLimits(header_section=4096)))
    pair.request(b"GET", b"/", [(b"x-big", b"y" * (HPACK_CEILING * 4096))])
    assert pair.terminated() and pair.h.attempts == 0


@pytest.mark.parametrize(
    "path, headers, limits, status",
    [
        (b"/", [(b"x-%d" % i, b"v") for i in range(11)], HeadLimits(header_count=10), 431),
        (b"/", [(b"x-long", b"v" * 100)], HeadLimits(header_line=100), 431),
        (b"/" + b"p" * 100, [], HeadLimits(request_line=100), 414),
    ],
)
def test_heads_over_the_http_1_1_limits_are_refused_alone(
    path: bytes, headers: list[tuple[bytes, bytes]], limits: HeadLimits, status: int
) -> None:
    """The HTTP/1.1 head limits on header count, line length and request line hold for a stream too: 431 or 414
    on it alone, its body dropped, the connection kept."""
    pair = H2Pair(client=ClientConfig(head=limits))
    stream = pair.request(b"POST", path, headers, b"a body, dropped")
    assert pair.status(stream) == status and pair.h.attempts == 0 and not pair.terminated()


def test_head_rejection_counts_as_rfc_9113_and_http_1_1_do() -> None:
    """The size counts 32 bytes a field, pseudo-headers included; the field count and length leave pseudo-headers
    out (a field's length is its HTTP/1.1 line's, "name: value"); :method and :path make the request line."""
    pseudo = [(b":method", b"GET"), (b":path", b"/abc")]
    fields = [*pseudo, (b"a", b"12345")]
    size = 7 + 3 + 5 + 4 + 1 + 5 + 3 * 32
    assert head_rejection(fields, HeadLimits(header_section=size)) is None
    assert head_rejection(fields, HeadLimits(header_section=size - 1)) == Rejection(
        431, f"header list of {size} bytes over the limit of {size - 1}"
    )
    assert head_rejection(fields, HeadLimits(header_count=1)) is None
    assert head_rejection([*fields, (b"b", b"")], HeadLimits(header_count=1)) == Rejection(
        431, "2 header fields, over the limit of 1"
    )
    assert head_rejection(fields, HeadLimits(header_line=8)) is None  # "a: 12345"
    assert head_rejection(fields, HeadLimits(header_line=7)) == Rejection(431, "header field over the limit of 7 bytes")
    assert head_rejection(fields, HeadLimits(request_line=17)) is None  # "GET /abc HTTP/1.1"
    assert head_rejection(fields, HeadLimits(request_line=16)) == Rejection(414, "request line too long")


def open_at_once(pair: H2Pair, count: int) -> list[int]:
    """
    Open ``count`` bodiless streams in one write, before the client has read the server's SETTINGS (so that it does
    not hold itself to the announced limit).
    """
    streams = []
    for _ in range(count):
        streams.append(pair.client.get_next_available_stream_id())
        pseudo = [(b":method", b"GET"), (b":authority", b"e"), (b":scheme", b"https"), (b":path", b"/")]
        pair.client.send_headers(streams[-1], pseudo, end_stream=True)
    pair.send()
    return streams


def test_too_many_streams() -> None:
    """A stream over the announced limit is refused alone (REFUSED_STREAM); the connection and its streams go on."""
    pair = H2Pair()  # a limit of 5
    streams = open_at_once(pair, 6)
    assert pair.h.attempts == 5
    [reset] = pair.of(h2.events.StreamReset, streams[5])
    assert reset.error_code == h2.errors.ErrorCodes.REFUSED_STREAM  # type: ignore[attr-defined]
    assert not [e for e in pair.events if isinstance(e, h2.events.ConnectionTerminated)]
    up = pair.h.upstream(0).accept()
    up.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    pair.pump()
    assert pair.status(streams[0]) == 200
    again = pair.open(b"GET", b"/again", end=True)  # a stream ended: room for another
    assert b"GET /again HTTP/1.1\r\n" in up.received()  # on the connection the first stream gave back
    assert not pair.of(h2.events.StreamReset, again)


def test_far_too_many_streams() -> None:
    """A client opening more than twice the limit at once still loses its connection."""
    pair = H2Pair()
    open_at_once(pair, 11)
    assert [e for e in pair.events if isinstance(e, h2.events.ConnectionTerminated)]
    assert pair.h.attempts == 0


def test_early_413_then_reset_with_no_error() -> None:
    """A body refused with 413 before it ended: the whole 413, then RST_STREAM NO_ERROR (RFC 9113 section 8.1)."""
    pair = H2Pair(client=ClientConfig(max_body=10))
    stream = pair.client.get_next_available_stream_id()
    pseudo = [(b":method", b"POST"), (b":authority", b"e"), (b":scheme", b"https"), (b":path", b"/")]
    pair.client.send_headers(stream, [*pseudo, (b"content-length", b"30")])
    pair.client.send_data(stream, b"x" * 10)
    pair.send()
    assert pair.status(stream) == 413
    body = b"".join(e.data for e in pair.of(h2.events.DataReceived, stream))  # type: ignore[attr-defined]
    assert body == error_body(413)
    assert pair.kinds(stream)[-2:] == [h2.events.StreamEnded, h2.events.StreamReset]  # the reset after the end
    [reset] = pair.of(h2.events.StreamReset, stream)
    assert reset.error_code == h2.errors.ErrorCodes.NO_ERROR  # type: ignore[attr-defined]


def test_body_after_413_is_dropped() -> None:
    """DATA the client sent before it read the 413 and the reset is dropped without harm: the connection goes on."""
    pair = H2Pair(client=ClientConfig(max_body=10))
    stream = pair.open(b"POST", b"/", [(b"content-length", b"30")])
    assert pair.status(stream) == 413 and pair.of(h2.events.StreamReset, stream)
    pair.in_flight(DataFrame(stream, data=b"y" * 30, flags=["END_STREAM"]))
    assert not pair.terminated()
    following = pair.request(b"GET", b"/next")
    assert pair.h.upstream().accept().received().startswith(b"GET /next HTTP/1.1")
    assert not pair.of(h2.events.StreamReset, following)


def test_upload_streams_as_it_arrives() -> None:
    """The relay starts with the headers: the upstream gets the head, then each DATA as it comes, before END_STREAM."""
    pair = H2Pair()
    stream = pair.open(b"POST", b"/up", [(b"content-length", b"10")])
    up = pair.h.upstream().accept()
    assert up.received().startswith(b"POST /up HTTP/1.1\r\n") and up.received().endswith(b"Content-Length: 10\r\n\r\n")
    pair.data(stream, b"12345")
    assert up.received().endswith(b"\r\n\r\n12345")
    pair.data(stream, b"67890", end=True)
    assert up.received().endswith(b"\r\n\r\n1234567890")
    up.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    pair.pump()
    assert pair.status(stream) == 200 and pair.of(h2.events.StreamEnded, stream)
    pair.request(b"GET", b"/next")
    assert pair.h.attempts == 1  # the upstream connection went back to the pool and was reused
    assert up.received().endswith(b"\r\n\r\n")


@pytest.mark.parametrize(
    "headers, body, framing",
    [
        ([(b"content-length", b"6")], [b"abc", b"def"], b"Content-Length: 6\r\n"),
        ([], [b"abc", b"def"], b"Transfer-Encoding: chunked\r\n"),
        ([(b"content-length", b"0")], [b""], None),
        ([], None, None),
    ],
    ids=["declared length", "unknown length", "declared empty", "END_STREAM with the headers"],
)
def test_upstream_framing(headers: list[tuple[bytes, bytes]], body: list[bytes] | None, framing: bytes | None) -> None:
    """The upstream request is framed by what the client declared: its length, chunked when unknown, or no body."""
    pair = H2Pair()
    stream = pair.open(b"POST", b"/", headers, end=body is None)
    up = pair.h.upstream().accept()
    for index, piece in enumerate(body or []):
        pair.data(stream, piece, end=index == len(body) - 1)
    head, _, sent = up.received().partition(b"\r\n\r\n")
    lines = [line + b"\r\n" for line in head.split(b"\r\n")]
    if framing is None:
        assert not [line for line in lines if line.lower().startswith((b"content-length", b"transfer-encoding"))]
        assert sent == b""
    else:
        assert framing in lines
        assert (dechunk(sent) if b"chunked" in framing else sent) == b"".join(body or [])


def test_request_trailers_end_the_body_and_are_dropped() -> None:
    """Trailers (HEADERS with END_STREAM after DATA) end the upstream body, whole; they are not relayed, as chunk
    trailers from an HTTP/1.1 client are not (RFC 9110 section 6.5.1 lets an intermediary discard them)."""
    pair = H2Pair()
    stream = pair.open(b"POST", b"/", [(b"te", b"trailers")])
    up = pair.h.upstream().accept()
    pair.data(stream, b"abc")
    pair.client.send_headers(stream, [(b"x-checksum", b"1234")], end_stream=True)
    pair.send()
    sent = up.received()
    assert sent.endswith(b"\r\n\r\n3\r\nabc\r\n0\r\n\r\n") and b"1234" not in sent
    up.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    pair.pump()
    assert pair.status(stream) == 200 and pair.of(h2.events.StreamEnded, stream)


def test_upload_to_an_upstream_that_reads_nothing() -> None:
    """Uploading 32 MiB to an upstream that reads nothing: the stream's window shuts and the proxy holds little."""
    pair = H2Pair()
    stream = pair.open(b"POST", b"/up")
    up = stalled_upstream(pair)
    sent = pair.upload_until_shut(stream, 32 << 20)
    assert sent < 512 << 10, sent
    assert pair.client.local_flow_control_window(stream) == 0
    assert pair.held(stream, up) < 256 << 10
    assert up.transport.producer_paused
    more = 0
    for _ in range(10):  # the upstream reads again: the held bytes go out and the window opens
        up.resume_reading()
        pair.pump()
        more += pair.upload_until_shut(stream, 100_000 - more)
    pair.data(stream, b"", end=True)
    up.resume_reading()
    assert more == 100_000
    assert dechunk(up.received().partition(b"\r\n\r\n")[2]) == b"u" * (sent + more)


def test_stalled_upload_does_not_hold_up_other_streams() -> None:
    """A stream stalled by its upstream keeps its DATA unacknowledged without shutting the connection's window."""
    pair = H2Pair()
    stalled = pair.open(b"POST", b"/stalled")
    stalled_upstream(pair)
    pair.upload_until_shut(stalled, 1 << 20)
    other = pair.open(b"POST", b"/other", [(b"content-length", b"300000")])
    up = pair.h.upstream().accept()
    assert pair.upload_until_shut(other, 300_000) == 300_000
    assert up.received().endswith(b"u" * 300_000)


def test_undeclared_body_over_the_limit_aborts_the_upstream() -> None:
    """A body of unknown length over max_body: the upstream request is aborted, never ended; the stream gets 413."""
    pair = H2Pair(client=ClientConfig(max_body=10))
    stream = pair.open(b"POST", b"/")
    up = pair.h.upstream().accept()
    pair.data(stream, b"x" * 8)
    with CapturedLog() as captured:
        pair.data(stream, b"y" * 8)
    assert up.transport.aborted
    assert not up.received().endswith(b"0\r\n\r\n")  # the chunked body was never ended
    assert pair.status(stream) == 413
    assert "413 request body over the limit of 10 bytes" in captured.text()
    pair.in_flight(DataFrame(stream, data=b"z" * 100, flags=["END_STREAM"]))  # the rest is dropped
    following = pair.request(b"GET", b"/next")
    assert pair.h.upstream().accept().received().startswith(b"GET /next HTTP/1.1")
    assert not pair.of(h2.events.StreamReset, following)


def test_body_over_the_limit_after_the_response_began_resets_the_stream() -> None:
    """Once response bytes have gone out, a body going over max_body resets the stream and aborts the upstream."""
    pair = H2Pair(client=ClientConfig(max_body=10))
    stream = pair.open(b"POST", b"/")
    up = pair.h.upstream().accept()
    pair.data(stream, b"x" * 8)
    up.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab")
    pair.pump()
    assert pair.status(stream) == 200
    pair.data(stream, b"y" * 8)
    assert pair.of(h2.events.StreamReset, stream) and not pair.of(h2.events.StreamEnded, stream)
    assert up.transport.aborted


def test_over_the_limit_while_connecting() -> None:
    """A body going over max_body before the upstream connection is made: 413, and the connection attempt dropped."""
    pair = H2Pair(client=ClientConfig(max_body=10))
    stream = pair.open(b"POST", b"/")
    pair.data(stream, b"x" * 16)
    assert pair.status(stream) == 413
    assert pair.h.upstream().connector.stoppedConnecting


def test_client_reset_aborts_the_upstream() -> None:
    """A client resetting its stream mid-upload aborts the upstream request; the connection is not pooled."""
    pair = H2Pair()
    stream = pair.open(b"POST", b"/", [(b"content-length", b"100")])
    up = pair.h.upstream().accept()
    pair.data(stream, b"x" * 10)
    pair.client.reset_stream(stream)
    pair.send()
    assert up.transport.aborted
    pair.request(b"GET", b"/next")
    assert pair.h.attempts == 2


def test_client_reset_of_paused_uploads() -> None:
    """Reset streams whose DATA was held unacknowledged give that room back: the connection's window is not lost."""
    pair = H2Pair()  # 5 streams, and a connection window of 5 streams' windows
    stalled = []
    for _ in range(4):
        stream = pair.open(b"POST", b"/")
        stalled.append(stalled_upstream(pair))
        pair.upload_until_shut(stream, 1 << 20)
        pair.client.reset_stream(stream)
        pair.send()
    assert all(up.transport.aborted for up in stalled)
    stream = pair.open(b"POST", b"/", [(b"content-length", b"1000000")])
    up = pair.h.upstream().accept()
    assert pair.upload_until_shut(stream, 1_000_000) == 1_000_000
    assert up.received().endswith(b"u" * 1_000_000)


def test_early_response_then_reset_with_no_error() -> None:
    """An upstream's complete response before the body ended: the stream ends, then RST_STREAM NO_ERROR; the upstream
    connection, whose request the relay stopped, is not pooled."""
    pair = H2Pair()
    stream = pair.open(b"POST", b"/", [(b"content-length", b"100")])
    up = pair.h.upstream().accept()
    pair.data(stream, b"x" * 10)
    up.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    pair.pump()
    assert pair.kinds(stream)[-2:] == [h2.events.StreamEnded, h2.events.StreamReset]
    [reset] = pair.of(h2.events.StreamReset, stream)
    assert reset.error_code == h2.errors.ErrorCodes.NO_ERROR  # type: ignore[attr-defined]
    pair.in_flight(DataFrame(stream, data=b"y" * 90, flags=["END_STREAM"]))
    assert not pair.terminated()


def test_no_reset_after_a_whole_body() -> None:
    """A response to a request whose body had ended is not followed by a reset."""
    pair = H2Pair()
    stream = pair.open(b"POST", b"/", [(b"content-length", b"2")])
    pair.data(stream, b"ab", end=True)
    pair.h.upstream().accept().respond(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    pair.pump()
    assert pair.kinds(stream)[-1] is h2.events.StreamEnded and not pair.of(h2.events.StreamReset, stream)


def test_reset_after_the_response_is_harmless() -> None:
    """A client reset crossing the proxy's own (a stream already answered and reset) keeps its connection."""
    pair = H2Pair()
    stream = pair.open(b"POST", b"/", [(b"content-length", b"100")])
    up = pair.h.upstream().accept()
    up.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    pair.pump()
    assert pair.of(h2.events.StreamEnded, stream)
    pair.in_flight(RstStreamFrame(stream, error_code=h2.errors.ErrorCodes.CANCEL))
    assert not pair.terminated()
    pair.request(b"GET", b"/next")
    assert pair.h.upstream().accept().received().startswith(b"GET /next HTTP/1.1")


def test_body_not_matching_its_length_aborts_the_upstream() -> None:
    """A body shorter than its content-length ends the connection, and the upstream request already begun is aborted."""
    pair = H2Pair()
    stream = pair.open(b"POST", b"/", [(b"content-length", b"10")])
    up = pair.h.upstream().accept()
    pair.protocol.dataReceived(DataFrame(stream, data=b"12345", flags=["END_STREAM"]).serialize())
    pair.pump()
    assert [e for e in pair.events if isinstance(e, h2.events.ConnectionTerminated)]
    assert up.transport.aborted


def test_addresses_asked_of_the_transport_once_per_connection() -> None:
    """Every stream's request knows both ends of the connection; the transport is asked once per connection (its
    getHost is a system call), not once per stream."""
    pair = H2Pair()
    host, peer = pair.transport.getHost(), pair.transport.getPeer()
    asked = []
    pair.transport.getHost = lambda: asked.append("host") or host  # type: ignore[method-assign]
    pair.transport.getPeer = lambda: asked.append("peer") or peer  # type: ignore[method-assign]
    for _ in range(3):
        pair.request(b"GET", b"/")
    requests = [stream._request for stream in pair.protocol._channel.streams.values()]
    assert len(requests) == 3
    assert all(r.getHost() == host and r.getClientAddress() == peer for r in requests)
    assert sorted(asked) == ["host", "peer"]


def body_deadlines(pair: H2Pair) -> list[object]:
    """
    The DelayedCalls of the streams' body deadlines.
    """
    calls = pair.h.reactor.getDelayedCalls()
    return [call for call in calls if call.func.__name__ == "_checkBodyDeadline"]  # type: ignore[attr-defined]


def test_stalled_body_gets_408_and_upstream_aborted() -> None:
    """A body that makes no progress for body_timeout: 408 on the stream, the upstream request aborted, a log line."""
    pair = H2Pair(client=ClientConfig(body_timeout=30))
    stream = pair.open(b"POST", b"/", [(b"content-length", b"10")])
    up = pair.h.upstream().accept()
    pair.data(stream, b"12345")
    pair.h.advance(29)
    assert not pair.of(h2.events.ResponseReceived, stream)
    with CapturedLog() as captured:
        pair.h.advance(1)
        pair.pump()
    assert pair.status(stream) == 408 and pair.of(h2.events.StreamEnded, stream)
    assert up.transport.aborted  # aborted: never completed as if whole, never pooled
    assert up.received().endswith(b"\r\n\r\n12345")
    assert "rejected HTTP/2 request from 10.0.0.2: 408 request body made no progress for 30s" in captured.text()
    assert not body_deadlines(pair)
    pair.request(b"GET", b"/next")
    assert pair.h.attempts == 2


def test_stalled_body_after_the_response_head_resets_the_stream() -> None:
    """A stalled body whose response has begun: the stream is reset, never ended, and the upstream request aborted."""
    pair = H2Pair(client=ClientConfig(body_timeout=30))
    stream = pair.open(b"POST", b"/", [(b"content-length", b"10")])
    up = pair.h.upstream().accept()
    up.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab")
    pair.pump()
    assert pair.status(stream) == 200
    with CapturedLog() as captured:
        pair.h.advance(30)
        pair.pump()
    assert pair.of(h2.events.StreamReset, stream) and not pair.of(h2.events.StreamEnded, stream)
    assert up.transport.aborted
    assert "reset HTTP/2 request from 10.0.0.2: 408 request body made no progress for 30s" in captured.text()


def test_progress_rearms_the_deadline() -> None:
    """Each DATA frame moves the deadline, on the same single DelayedCall (no timer per frame)."""
    pair = H2Pair(client=ClientConfig(body_timeout=30))
    stream = pair.open(b"POST", b"/")
    pair.h.upstream().accept()
    [timer] = body_deadlines(pair)
    for _ in range(2):
        pair.h.advance(10)
        pair.data(stream, b"x")
        assert body_deadlines(pair) == [timer] and timer.getTime() == 30  # type: ignore[attr-defined]
    pair.h.advance(10)  # the timer fires before the deadline (50): re-armed once, for the rest
    [timer] = body_deadlines(pair)
    assert timer.getTime() == 50 and not pair.of(h2.events.ResponseReceived, stream)  # type: ignore[attr-defined]
    pair.h.advance(19)
    pair.pump()
    assert not pair.of(h2.events.ResponseReceived, stream)
    pair.h.advance(1)
    pair.pump()
    assert pair.status(stream) == 408


def test_held_by_a_slow_upstream_does_not_time_out() -> None:
    """Time the proxy holds the body back (the upstream reads nothing) does not count; the deadline restarts after."""
    pair = H2Pair(client=ClientConfig(body_timeout=20))  # (all within the connection's idle timeout of 60 s)
    stream = pair.open(b"POST", b"/")
    up = stalled_upstream(pair)
    pair.upload_until_shut(stream, 1 << 20)
    assert up.transport.producer_paused
    pair.h.advance(30)  # past the body timeout, below the upstream's send timeout
    pair.pump()
    assert not pair.of(h2.events.ResponseReceived, stream) and not pair.of(h2.events.StreamReset, stream)
    while up.transport.producer_paused:  # the upstream reads again: what the proxy held goes out, the stream is let go
        up.resume_reading()
        pair.pump()
    pair.h.advance(19)
    pair.pump()
    assert not pair.of(h2.events.ResponseReceived, stream)
    pair.h.advance(1)
    pair.pump()
    assert pair.status(stream) == 408 and up.transport.aborted


def test_stalled_stream_leaves_the_others_alone() -> None:
    """One stream timing out does not touch the others: a body still progressing is relayed whole and answered."""
    pair = H2Pair(client=ClientConfig(body_timeout=30))
    stalled = pair.open(b"POST", b"/stalled")
    pair.h.upstream().accept()
    moving = pair.open(b"POST", b"/moving", [(b"content-length", b"4")])
    up = pair.h.upstream().accept()
    for piece in b"abc":
        pair.h.advance(15)
        pair.data(moving, bytes([piece]))
    pair.pump()
    assert pair.status(stalled) == 408 and not pair.of(h2.events.ResponseReceived, moving)
    pair.data(moving, b"d", end=True)
    assert up.received().endswith(b"\r\n\r\nabcd")
    up.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    pair.pump()
    assert pair.status(moving) == 200 and pair.of(h2.events.StreamEnded, moving)
    assert not pair.terminated() and not pair.of(h2.events.StreamReset, moving)


def test_no_deadline_once_the_body_ended() -> None:
    """A body that ended (or none at all) has no deadline: a slow upstream answer is waited for."""
    pair = H2Pair(client=ClientConfig(body_timeout=30))
    stream = pair.open(b"POST", b"/", [(b"content-length", b"2")])
    pair.data(stream, b"ab", end=True)
    bodiless = pair.open(b"GET", b"/", end=True)
    ups = [pair.h.upstream(0).accept(), pair.h.upstream(1).accept()]
    assert not body_deadlines(pair)
    pair.h.advance(29)  # (below the upstream's response timeout)
    for up in ups:
        up.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    pair.pump()
    assert pair.status(stream) == 200 and pair.status(bodiless) == 200


def test_a_resource_that_raises_answers_500_on_its_stream() -> None:
    """A resource that raises while rendering an HTTP/2 request gets the stream Twisted's 500 (processingFailed)."""
    from twisted.web.resource import Resource

    class Failing(Resource):
        isLeaf = True

        def render(self, request: object) -> bytes:
            raise RuntimeError("render failed")

    pair = H2Pair()
    pair.site.resource = Failing()
    stream = pair.request(b"GET", b"/")
    assert pair.status(stream) == 500
    assert pair.of(h2.events.StreamEnded, stream)
