"""
HTTP/2 to clients over TLS (ALPN ``h2``), relayed to HTTP/1.1 upstreams by the same
:class:`~txrevproxy._relay.exchange.Relay`.

Twisted's ``H2Connection`` speaks the protocol: framing, HPACK, flow control, priorities, and the h2 library's checks
on what a client sends (pseudo-headers present, single and first, none unknown; no connection-specific header such
as ``Connection``, ``Transfer-Encoding`` or ``TE`` other than ``trailers``; lowercase names; ``content-length``
agreeing with the DATA received). A client breaking one of those loses its connection (GOAWAY). This module adds
what the proxy needs on top:

- :class:`NegotiatedChannel`: per TLS connection, HTTP/2 when ALPN chose ``h2``, else the proxy's own HTTP/1.1
  channel, unchanged;
- :class:`ProxyH2Connection`: limits announced in SETTINGS and enforced (concurrent streams, a stream over the
  limit refused alone with RST_STREAM ``REFUSED_STREAM``, RFC 9113 section 5.1.2; the header list size, and the
  HTTP/1.1 head limits on header count, field length and request line: a stream over one is answered ``431`` (or
  ``414``) alone, as an HTTP/1.1 request would be, up to :data:`HPACK_CEILING` times the announced size, past
  which the connection ends, since HPACK cannot go on from a header block decoded halfway), the connection gate's
  slot released when the connection ends, the connection's flow-control window opened to room for
  every stream's window (so that an upload held back does not stall the others), and a stream answered before its
  body ended (a 413, an early response) reset with ``NO_ERROR`` once its response is complete (END_STREAM sent), so
  that the client stops sending the rest (RFC 9113 section 8.1);
- :class:`H2ProxyRequest`: each stream's request validated like an HTTP/1.1 one (``Host`` from ``:authority``,
  target, ``Host`` syntax, the ``_``-alias rule) as soon as its headers are complete, and relayed from then on. Its
  body streams upstream as DATA arrives, through the same :class:`~txrevproxy._server.body.StreamingBody` as an HTTP/1.1
  upload: framed with ``Content-Length`` when the client sent ``content-length``, chunked when it did not, and with
  no body when END_STREAM came with the headers. The stream is the body's producer: while the upstream connection
  cannot take more, the stream is paused and Twisted stops acknowledging its DATA, so the client's window for that
  stream shuts: beyond the 64 KiB buffers of the streaming body and of the upstream connection, the proxy holds at
  most one window (64 KiB) of DATA for a stream whose upstream reads nothing. A body over
  ``max_body`` gets ``413`` (a declared one before anything is relayed); a body that makes no progress for
  ``body_timeout`` while the proxy is not holding it back gets ``408`` (one DelayedCall per stream, re-armed when it
  fires, never per DATA frame; time paused for a slow upstream does not count, as on HTTP/1.1). In both cases, once
  relaying, the upstream request is aborted (never completed as if whole), and the stream gets the status or, if
  response bytes went out already, RST_STREAM. A client resetting its stream aborts the upstream request. The
  response streams with per-stream backpressure (a stream whose flow-control window is exhausted pauses its
  upstream); a response the upstream cut short resets the stream (RST_STREAM) instead of ending it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from h2.errors import ErrorCodes
from h2.events import RequestReceived, StreamEnded, StreamReset
from h2.settings import SettingCodes, Settings
from h2.stream import StreamState
from twisted.internet.interfaces import IDelayedCall, IProtocol, IReactorTime, ITransport
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from zope.interface import implementer

from txrevproxy._http.framing import CHUNKED, Kind
from txrevproxy._http.head import HeadLimits
from txrevproxy._http.headers import values_of
from txrevproxy._http.validate import Rejection, validate_request
from txrevproxy._net.addresses import AddressesOnce
from txrevproxy._net.deadline import Deadline
from txrevproxy._net.producers import CallbackProducer
from txrevproxy._net.states import IdentityEnum, Transitions
from txrevproxy._net.transports import ITCPStreamTransport
from txrevproxy._net.twisted_private import (
    H2Connection,
    H2Stream,
    h2_producing,
    h2_reactor,
    h2_stream_request,
    h2_write_control_data,
    request_disconnected,
)
from txrevproxy._server.body import StreamingBody
from txrevproxy._server.config import ClientConfig
from txrevproxy._server.gate import ConnectionGate
from txrevproxy._server.request import StreamedRequest, http_date

log = Logger(namespace="txrevproxy")

#: Default for ``SETTINGS_MAX_CONCURRENT_STREAMS``: streams one client connection may have open at once.
MAX_STREAMS = 100
#: Header lists up to this many times the announced MAX_HEADER_LIST_SIZE are decoded and answered 431 on their
#: stream; a larger one ends the connection (the HPACK decoder stops midway, its table then unknown).
HPACK_CEILING = 4
#: The initial flow-control window of a stream and of the connection (RFC 9113 section 6.9.2), never changed here.
STREAM_WINDOW = 65535
MAX_WINDOW = 2**31 - 1


class BodyState(IdentityEnum):
    """
    Where a stream's request body is (:attr:`H2ProxyRequest._body`); it moves by a :class:`BodyEvent`.
    """

    STREAMING = "streaming"  # DATA fed to the relay; the body deadline runs
    HELD = "held"  # the proxy paused the stream, the upstream being slow; no deadline meanwhile
    ENDED = "ended"  # END_STREAM: the whole body is in
    DROPPED = "dropped"  # answered, refused or reset by the proxy, or the stream lost: the rest is dropped


class BodyEvent(IdentityEnum):
    """
    What moves a stream's request body.
    """

    HOLD = "hold"  # the upstream is slow: the stream is paused
    RELEASE = "release"  # the upstream takes more: the stream is let go
    END = "end"  # END_STREAM (with the headers, or after the last DATA)
    DROP = "drop"  # answered, refused, reset or lost


STREAMING, HELD, ENDED, DROPPED = BodyState.STREAMING, BodyState.HELD, BodyState.ENDED, BodyState.DROPPED
HOLD, RELEASE, END, DROP = BodyEvent.HOLD, BodyEvent.RELEASE, BodyEvent.END, BodyEvent.DROP

#: Every move of a stream's request body; any other (state, event) is a programming error.
_MOVES = Transitions[BodyState, BodyEvent](
    "H2ProxyRequest body",
    {
        (STREAMING, HOLD): HELD,
        (HELD, RELEASE): STREAMING,
        (STREAMING, END): ENDED,
        (STREAMING, DROP): DROPPED,
        (HELD, DROP): DROPPED,
    },
)


class SiteSettings(Protocol):
    """
    What the HTTP/2 side needs of its site (:class:`~txrevproxy._server.channel.ProxySite`).
    """

    reactor: IReactorTime
    client: ClientConfig
    max_streams: int
    timeOut: float | None


class Served(Protocol):
    """
    What serves a TLS connection behind :class:`NegotiatedChannel`: the proxy's HTTP/1.1 channel, or the
    :class:`ProxyH2Connection` that replaces it.
    """

    transport: ITCPStreamTransport

    def makeConnection(self, transport: ITransport) -> None: ...

    def connectionMade(self) -> None: ...

    def dataReceived(self, data: bytes) -> None: ...

    def connectionLost(self, reason: Failure = connectionDone) -> None: ...


class HTTP1Channel(Served, Protocol):
    """
    What :class:`NegotiatedChannel` needs of the HTTP/1.1 channel it stands for
    (:class:`~txrevproxy._server.channel.ProxyChannel`): also to hand its connection over to HTTP/2.
    """

    def leaveForHTTP2(self) -> ConnectionGate | None: ...


class H2ProxyRequest(StreamedRequest):
    """
    A request on an HTTP/2 stream: validated and rendered when its headers are complete, its body streamed to the
    upstream as DATA arrives (see the module docstring).

    States of its body (:class:`BodyState`, moved through ``_MOVES``): ``streaming`` (DATA fed to
    :attr:`proxy_body`; the body deadline runs) and ``held`` (the proxy paused the stream because the upstream is
    slow; no deadline meanwhile) go back and forth until ``ended`` (END_STREAM, from ``streaming``: Twisted holds
    END_STREAM back while the stream is paused) or ``dropped`` (answered, refused or reset by the proxy, or the
    stream lost: the rest of its DATA is dropped). Nothing leaves those two.
    """

    _body = STREAMING
    _length: int | None = None  # the declared length: held to the limit once the stream is set up
    _max_body = 0
    _body_timeout = 0.0
    _body_deadline: Deadline | None = None  # moved by progress, set again when the proxy lets the body go
    _clock: IReactorTime  # from headersComplete on
    # From headersComplete on: the stream, this request's channel (which Twisted's Request types as an HTTPChannel,
    # and forgets when the stream is lost).
    _stream: H2Stream

    def gotLength(self, length: int | None) -> None:
        # Called by Twisted from each content-length while it builds the stream (the h2 library has checked that
        # they agree), before the stream can carry an answer. Nothing of the body is stored: it streams through
        # proxy_body.
        self.content = None
        self._length = length

    def headersComplete(
        self, stream: H2Stream, ended: bool, clock: IReactorTime, too_large: Rejection | None = None
    ) -> None:
        """
        The headers of ``stream`` (this request's) are in (``ended``: with END_STREAM): refuse the request
        (``too_large``: its header list is over the head limits; or a declared length over ``max_body``), or start
        relaying it, its body deadline timed by ``clock``.
        """
        command = stream.command
        assert command is not None  # (the h2 library refuses a request without :method)
        path = stream.path or b""  # (a CONNECT has no :path: refused below, as a request with an empty target)
        self.method, self.uri, self.clientproto = command, path, b"HTTP/2"
        self._clock = clock
        self._stream = stream
        site: SiteSettings = stream.site  # (a ProxySite: NegotiatedChannel gives it; H2Stream is unannotated)
        client = site.client
        cap = self._max_body = client.max_body
        if too_large is not None:
            self._refuse(too_large.status, too_large.reason)
            return
        length = self._length
        if cap and length is not None and length > cap:
            self._refuse(413, f"request body of {length} bytes is over the limit of {cap}")
            return
        headers = [(name, value) for name, values in self.requestHeaders.getAllRawHeaders() for value in values]
        framing, rejection = validate_request(command, path, b"HTTP/1.1", headers)
        if rejection is not None:
            self._refuse(rejection.status, rejection.reason)
            return
        assert framing is not None
        if not ended and framing.kind is Kind.NONE and not values_of(headers, b"content-length"):
            framing = CHUNKED  # DATA is coming and its length is not known: chunked toward the upstream
        now = clock.seconds()
        if ended:
            self._body = _MOVES[END][self._body]
        else:
            self._body_timeout = client.body_timeout
            self._body_deadline = Deadline(clock, self._checkBodyDeadline)
            self._body_deadline.set(self._body_timeout)
        reading = CallbackProducer(self._holdBody, self._releaseBody, _nothing)
        self.renderNow(command, path, b"HTTP/2", StreamingBody(framing, reading), now)

    def process(self) -> None:
        # Every rendered stream's response has a Date (a relayed one the upstream's, if it sent one).
        self.responseHeaders.setRawHeaders(b"Date", [http_date(self._clock.seconds())])
        super().process()

    def handleContentChunk(self, data: bytes) -> None:
        body = self.proxy_body
        if self._body is DROPPED or body is None:
            return
        deadline = self._body_deadline
        if deadline is not None:
            deadline.set(self._body_timeout)
        cap = self._max_body
        if cap and body.received + len(data) > cap:
            self._bodyFailed(413, f"request body over the limit of {cap} bytes")
            return
        body.feed(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        # END_STREAM: the whole body has arrived (rendering happened when the headers were complete).
        if self._body is STREAMING and self.proxy_body is not None:
            self._stopBody(END)
            self.proxy_body.end()

    def finish(self) -> None:
        self._stopBody(DROP)  # answered: the rest of a body still coming is dropped (the stream is then reset)
        super().finish()

    def connectionLost(self, reason: object) -> None:
        self._stopBody(DROP)
        super().connectionLost(reason)

    # The stream as the body's producer: the streaming body pauses it while the upstream is slow. Time held back so
    # is not the client's: the deadline starts over when the stream is let go.

    def _holdBody(self) -> None:
        if self._body is STREAMING:
            self._body = _MOVES[HOLD][self._body]
        self._stream.pauseProducing()

    def _releaseBody(self) -> None:
        if self._body is HELD:
            self._body = _MOVES[RELEASE][self._body]
            if self._body_deadline is not None:
                self._body_deadline.set(self._body_timeout)
        self._stream.resumeProducing()  # always: a stopped body lets the stream drain what it holds, dropped

    # The body deadline: one Deadline per stream, set when the body starts or is let go and moved by progress (its
    # DelayedCall re-arms when it fires early, never per DATA frame).

    def _checkBodyDeadline(self) -> None:
        if self._body is not STREAMING:
            return  # held: set again when let go; ended or dropped: no deadline any more
        self._bodyFailed(408, f"request body made no progress for {self._body_timeout:g}s")

    def _stopBody(self, event: BodyEvent) -> None:
        """
        The body leaves ``streaming`` or ``held`` by ``event`` (:data:`END` or :data:`DROP`), if it is in one of them:
        no more deadline.
        """
        if self._body is STREAMING or self._body is HELD:
            self._body = _MOVES[event][self._body]
        if self._body_deadline is not None:
            self._body_deadline.cancel()

    def _bodyFailed(self, status: int, reason: str) -> None:
        """
        The body went over the limit or made no progress in time: the upstream request is aborted, never completed
        as if whole, and the client gets ``status`` if no response head has gone out yet, else a reset stream.
        """
        self._stopBody(DROP)
        assert self.proxy_body is not None
        self.proxy_body.fail(reason)  # a relay already sending the body aborts its upstream request
        callback, self._when_lost = self._when_lost, None
        if callback is not None and not self.finished:
            callback(reason)  # a relay still connecting gives up too
        if self.finished or request_disconnected(self):
            return  # answered already: the rest of the body is dropped
        if self.startedWriting:
            self._logRefusal(status, reason, "reset")
            self._stream.abortConnection()
            return
        self.responseHeaders = Headers()  # any the upstream's response head had set
        self._refuse(status, reason)

    def _refuse(self, status: int, reason: str) -> None:
        self._stopBody(DROP)
        self._logRefusal(status, reason, "rejected")
        self.respondError(status)

    def abortClient(self) -> None:
        self._stream.abortConnection()  # the request's channel is its stream: reset it

    def _logRefusal(self, status: int, reason: str, what: str) -> None:
        peer = self.getClientAddress()
        log.warn(
            "{what} HTTP/2 request from {peer}: {status} {reason}",
            what=what,
            peer=getattr(peer, "host", peer),
            status=status,
            reason=reason,
        )


def _nothing() -> None:
    pass


def head_rejection(headers: list[tuple[bytes, bytes]], limits: HeadLimits) -> Rejection | None:
    """
    A stream's header list (pseudo-headers included) against the HTTP/1.1 head ``limits``: 431 when its size as
    RFC 9113 counts it (name, value and 32 bytes a field) is over ``header_section`` (the MAX_HEADER_LIST_SIZE
    announced), when it has more fields than ``header_count``, or when a field is longer than ``header_line`` as
    the ``name: value`` line it would be in HTTP/1.1; 414 when ``:method`` and ``:path`` make a request line over
    ``request_line``. Else None.
    """
    size = count = longest = request_line = 0
    for name, value in headers:
        length = len(name) + len(value)
        size += length + 32
        if name[:1] == b":":
            if name == b":path" or name == b":method":
                request_line += len(value) + 1
        else:
            count += 1
            longest = max(longest, length + 2)
    if size > limits.header_section:
        return Rejection(431, f"header list of {size} bytes over the limit of {limits.header_section}")
    if request_line + len(b"HTTP/1.1") > limits.request_line:
        return Rejection(414, "request line too long")
    if count > limits.header_count:
        return Rejection(431, f"{count} header fields, over the limit of {limits.header_count}")
    if longest > limits.header_line:
        return Rejection(431, f"header field over the limit of {limits.header_line} bytes")
    return None


class ProxyH2Connection(AddressesOnce, H2Connection):
    """
    Twisted's HTTP/2 connection with the proxy's limits and bookkeeping.
    """

    max_streams = MAX_STREAMS
    head_limits = HeadLimits()
    gate: ConnectionGate | None = None
    # Set by Twisted (H2Connection.__init__, makeConnection) or by NegotiatedChannel, typed here.
    transport: ITCPStreamTransport
    streams: dict[int, H2Stream]
    requestFactory: type[H2ProxyRequest]

    def callLater(self, period: float, func: Callable[[], object]) -> IDelayedCall:
        # TimeoutMixin's timers (the idle timeout, the abort after it) on the connection's reactor, the site's (as
        # HTTPFactory gives an HTTP/1.1 channel its reactor's callLater), instead of the global reactor.
        return h2_reactor(self).callLater(period, func)

    @property
    def max_header_list(self) -> int:
        """The MAX_HEADER_LIST_SIZE announced: the size of header section an HTTP/1.1 request may have."""
        return self.head_limits.header_section

    def _settings(self, max_streams: int) -> Settings:
        return Settings(
            client=False,
            initial_values={
                SettingCodes.MAX_CONCURRENT_STREAMS: max_streams,
                SettingCodes.MAX_HEADER_LIST_SIZE: self.max_header_list,
            },
        )

    def connectionMade(self) -> None:
        # The settings announced in the connection preface (initiate_connection, in super), in force at once.
        self.conn.local_settings = self._settings(self.max_streams)
        self.conn.decoder.max_header_list_size = HPACK_CEILING * self.max_header_list  # (below that: 431, see above)
        super().connectionMade()
        # Streams over the announced limit are refused one by one (_requestReceived); the h2 library, which would
        # end the connection for the first one, only holds a client to twice the limit (a client that far over it
        # within one read still loses its connection, as it would without this).
        self.conn.local_settings = self._settings(2 * self.max_streams)
        # A stream whose upstream is slow stops acknowledging its DATA, holding up to its window (65,535 bytes)
        # of the connection's window, which starts at that same size: opened to room for every stream's window,
        # so that one stalled upload never stalls the others.
        window = min(self.max_streams * STREAM_WINDOW, MAX_WINDOW)
        if window > STREAM_WINDOW:
            self.conn.increment_flow_control_window(window - STREAM_WINDOW)
            self.transport.write(self.conn.data_to_send())

    _secure: bool | None = None

    def _isSecure(self) -> bool:
        # Asked for by every stream's request; a connection does not change.
        if self._secure is None:
            self._secure = super()._isSecure()
        return self._secure

    def connectionLost(self, reason: Failure = connectionDone, _cancelTimeouts: bool = True) -> None:
        gate, self.gate = self.gate, None
        if gate is not None:
            gate.closed()
        super().connectionLost(reason, _cancelTimeouts)

    def _requestReceived(self, event: RequestReceived) -> None:
        if len(self.streams) >= self.max_streams:
            # RFC 9113 section 5.1.2: a stream over the announced limit is a stream error; REFUSED_STREAM tells the
            # client that nothing of it was processed, so that it may retry. The connection and its streams go on.
            self.conn.reset_stream(event.stream_id, ErrorCodes.REFUSED_STREAM)
            log.info(
                "refused HTTP/2 stream from {peer}: over the limit of {limit} streams",
                peer=getattr(self.getPeer(), "host", None),
                limit=self.max_streams,
            )
            return
        super()._requestReceived(event)
        stream = self.streams[event.stream_id]
        request: H2ProxyRequest = h2_stream_request(stream)
        ended = event.stream_ended is not None
        rejection = head_rejection(event.headers, self.head_limits)
        request.headersComplete(stream, ended, h2_reactor(self), rejection)

    def _requestEnded(self, event: StreamEnded) -> None:
        if event.stream_id in self.streams:
            super()._requestEnded(event)

    def _requestDone(self, streamID: int) -> None:
        # Twisted forgets a stream once its response is complete (END_STREAM sent), or reset, or the connection lost.
        # A response complete before the client ended its body: RST_STREAM with NO_ERROR asks the client to stop
        # sending the rest (RFC 9113 section 8.1). DATA already on its way is then dropped by the h2 library, which
        # gives its room in the connection's window back.
        stream = self.conn.streams.get(streamID)
        if h2_producing(self) and stream is not None and stream.state_machine.state is StreamState.HALF_CLOSED_LOCAL:
            self.conn.reset_stream(streamID, ErrorCodes.NO_ERROR)
            if not h2_write_control_data(self):
                return  # too much unread output: the connection was aborted, and has forgotten the stream
        super()._requestDone(streamID)

    def _requestAborted(self, event: StreamReset) -> None:
        # A client may reset a stream whose response has been sent already (its reset crossing the proxy's, see
        # _requestDone): Twisted has forgotten it, and would fail the connection looking it up.
        if event.stream_id in self.streams:
            super()._requestAborted(event)


@implementer(IProtocol)
class NegotiatedChannel:
    """
    The protocol of a TLS connection: the proxy's HTTP/1.1 channel, replaced by a :class:`ProxyH2Connection` at the
    first bytes if ALPN chose ``h2``; it passes the connection's events on to whichever serves it.
    """

    def __init__(self, channel: HTTP1Channel, site: SiteSettings) -> None:
        self._channel: Served = channel
        self._site = site
        self._http1: HTTP1Channel | None = channel  # until the first bytes, when ALPN's choice is known

    @property
    def transport(self) -> ITCPStreamTransport:
        return self._channel.transport

    def makeConnection(self, transport: ITransport) -> None:
        self._channel.makeConnection(transport)

    def connectionMade(self) -> None:
        self._channel.connectionMade()

    def dataReceived(self, data: bytes) -> None:
        channel = self._http1
        if channel is not None:
            self._http1 = None
            if getattr(channel.transport, "negotiatedProtocol", None) == b"h2":
                self._channel = self._http2(channel)
        self._channel.dataReceived(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._channel.connectionLost(reason)

    def _http2(self, channel: HTTP1Channel) -> ProxyH2Connection:
        site = self._site
        transport = channel.transport
        gate = channel.leaveForHTTP2()
        connection = ProxyH2Connection(site.reactor)
        connection.gate = gate
        connection.max_streams = site.max_streams
        connection.head_limits = site.client.head
        connection.requestFactory = H2ProxyRequest
        # The site of its streams, and the factory whose log their requests go to.
        connection.site = connection.factory = site  # type: ignore[assignment]  # H2Connection declares both None
        # The site's idle timeout, in float seconds (TimeoutMixin annotates timeOut as an int): stored by setTimeout,
        # which also starts the timer (connectionMade starts it over).
        connection.setTimeout(site.timeOut)
        connection.makeConnection(transport)
        transport.registerProducer(connection, True)
        return connection
