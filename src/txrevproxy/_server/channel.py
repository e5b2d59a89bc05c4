"""
The daemon's client side: a ``Site`` whose channel parses requests strictly and starts relaying at the end of the
head, with size limits and deadlines on every phase of a client connection.

:class:`ProxyChannel` keeps ``HTTPChannel``'s response half (``Request`` writes through it, producers, persistence)
and replaces its request parsing: heads are parsed by :mod:`txrevproxy._http.head` under :class:`ClientConfig`'s limits
and judged by :func:`~txrevproxy._http.validate.validate_request`; bodies are decoded by the proxy's own strict framing
code and streamed into the request as they arrive. Phases of a connection, each with its deadline::

    idle ──first byte──▶ head ──blank line──▶ body ──last byte──▶ waiting ──response done──▶ idle
    (idle timeout)       (head timeout → 408)  (no progress → 408)  (none)
                                                                       └──101──▶ tunnel (raw bytes, _tunnel.py)

(a whole head in one read goes from idle straight to body or waiting), plus, in any phase, a client that reads none
of our output for ``send_timeout`` is aborted. The phase moves only through one table of (phase, event) moves,
``_MOVES``: every phase but tunnel may close, and the connection's loss ends any. Requests are handled
one at a time in order: bytes of a pipelined request wait in a bounded buffer (reading pauses past it). A
response may end before its request body does: the request then stays first in the queue, draining and
discarding the rest of its body, so the next request is parsed from the right place.
"""

from __future__ import annotations

from twisted.internet.interfaces import IAddress, IProtocol, IPushProducer, IReactorTime, ITCPTransport
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.resource import IResource
from twisted.web.server import Request, Site
from zope.interface import implementer

from txrevproxy._http.framing import ChunkedDecoder, Framing, FramingError, Kind
from txrevproxy._http.head import RequestHead, incomplete_head_problem, parse_request_head
from txrevproxy._http.headers import upgrade_offer, values_of
from txrevproxy._http.responses import error_response
from txrevproxy._http.validate import Rejection, validate_request
from txrevproxy._net.addresses import AddressesOnce
from txrevproxy._net.deadline import Deadline
from txrevproxy._net.sending import send
from txrevproxy._net.states import IdentityEnum, Transitions
from txrevproxy._net.transports import ITCPStreamTransport
from txrevproxy._net.tunnel import Tunnel
from txrevproxy._net.twisted_private import (
    network_producer,
    request_producer,
    set_handling_request,
    set_waiting_for_transport,
)
from txrevproxy._server.accesslog import AccessLog, LoggedRequest
from txrevproxy._server.config import ClientConfig
from txrevproxy._server.gate import ConnectionGate, RefusedConnection
from txrevproxy._server.h2 import MAX_STREAMS, NegotiatedChannel
from txrevproxy._server.request import ProxyRequest, StreamedRequest

log = Logger(namespace="txrevproxy")

#: Default seconds a client connection may sit idle between requests (``Site``'s ``timeout``).
IDLE_TIMEOUT = 60.0
#: Bytes of pipelined requests held while the one before them is answered, before reading pauses.
PIPELINE_BUFFER = 16384


class Phase(IdentityEnum):
    """
    Where a client connection is (see the module docstring); it moves by a :class:`PhaseEvent`.
    """

    IDLE = "idle"  # between requests
    HEAD = "head"  # part of a request head is in
    BODY = "body"  # the request body is arriving
    WAITING = "waiting"  # the request is in; its response is on its way
    TUNNEL = "tunnel"  # after a 101: raw bytes
    CLOSED = "closed"  # closing or closed: nothing more is read


class PhaseEvent(IdentityEnum):
    """
    What moves a client connection's phase.
    """

    HEAD_BEGUN = "head begun"  # the first bytes of a request head, not all of it
    HEAD_WITH_BODY = "head with body"  # a valid head whose request has a body
    HEAD_WITHOUT_BODY = "head without body"  # a valid head whose request has none
    BODY_ENDED = "body ended"  # the last byte of the request body
    ANSWERED = "answered"  # the response is done and the connection persists
    SWITCHED = "switched"  # the upstream switched protocols (101)
    CLOSE = "close"  # the channel ends the connection: refused, timed out, not persistent, for HTTP/2
    LOST = "lost"  # the connection is gone


IDLE, HEAD, BODY, WAITING, TUNNEL, CLOSED = (
    Phase.IDLE,
    Phase.HEAD,
    Phase.BODY,
    Phase.WAITING,
    Phase.TUNNEL,
    Phase.CLOSED,
)
HEAD_BEGUN, HEAD_WITH_BODY, HEAD_WITHOUT_BODY, BODY_ENDED, ANSWERED, SWITCHED, CLOSE, LOST = (
    PhaseEvent.HEAD_BEGUN,
    PhaseEvent.HEAD_WITH_BODY,
    PhaseEvent.HEAD_WITHOUT_BODY,
    PhaseEvent.BODY_ENDED,
    PhaseEvent.ANSWERED,
    PhaseEvent.SWITCHED,
    PhaseEvent.CLOSE,
    PhaseEvent.LOST,
)

#: Every move of a client connection's phase; any other (phase, event) is a programming error.
_MOVES = Transitions[Phase, PhaseEvent](
    "ProxyChannel",
    {
        (IDLE, HEAD_BEGUN): HEAD,
        (IDLE, HEAD_WITH_BODY): BODY,
        (HEAD, HEAD_WITH_BODY): BODY,
        (IDLE, HEAD_WITHOUT_BODY): WAITING,
        (HEAD, HEAD_WITHOUT_BODY): WAITING,
        (BODY, BODY_ENDED): WAITING,
        (WAITING, ANSWERED): IDLE,
        (WAITING, SWITCHED): TUNNEL,
        **{(phase, CLOSE): CLOSED for phase in (IDLE, HEAD, BODY, WAITING, CLOSED)},
        **{(phase, LOST): CLOSED for phase in Phase},
    },
)


class ReadPause(IdentityEnum):
    """
    Why a client connection's reading is paused (it resumes when no reason is left).
    """

    UPLOAD = "upload"  # the upstream is slow to take the request body
    PIPELINE = "pipeline"  # pipelined requests are waiting, past PIPELINE_BUFFER
    UPGRADE = "upgrade"  # an upgrade offer waits for its answer (what follows may be another protocol's bytes)
    SEND = "send"  # the client reads none of our output


UPLOAD, PIPELINE, UPGRADE, SEND = ReadPause.UPLOAD, ReadPause.PIPELINE, ReadPause.UPGRADE, ReadPause.SEND


@implementer(IPushProducer)
class _UploadReading:
    """
    What a request body pauses when the upstream is slow: the channel's reading, for the reason :data:`UPLOAD`.
    """

    def __init__(self, channel: ProxyChannel) -> None:
        self._channel = channel

    def pauseProducing(self) -> None:
        self._channel._pauseReading(UPLOAD)

    def resumeProducing(self) -> None:
        self._channel._resumeReading(UPLOAD)

    def stopProducing(self) -> None:
        pass


class ProxyChannel(AddressesOnce, HTTPChannel):
    """
    ``HTTPChannel`` with the proxy's own strict request parsing, limits and deadlines (see the module docstring).
    """

    config = ClientConfig()
    gate: ConnectionGate | None = None  # the site's connection gate, told when this connection ends
    # Set by Twisted (makeConnection, Site.buildProtocol), typed here as what they are for this channel.
    transport: ITCPStreamTransport
    site: ProxySite
    requestFactory: type[ProxyRequest]
    requests: list[ProxyRequest]
    # Set in connectionMade: what a request reaches its connection through (a ClientConnection), as attributes (a
    # request reads them several times).
    #: The clock of this connection's deadlines and ``Date`` headers (the site's reactor).
    clock: IReactorTime
    #: The connection's transport: TCP, or TLS over it.
    tcp: ITCPTransport

    def __init__(self) -> None:
        super().__init__()
        self.phase = IDLE
        self.upload_reading = _UploadReading(self)
        self._in = bytearray()  # received, not yet parsed: a partial head or pipelined requests
        self._checked = 0  # bytes of a partial head already checked by incomplete_head_problem
        self._busy = False  # inside _process: re-entrant calls only queue bytes
        self._read_pauses: set[ReadPause] = set()
        self._head: RequestHead | None = None
        self._remaining = 0  # body bytes still to come (Content-Length framing)
        self._decoder: ChunkedDecoder | None = None
        self._body_size = 0
        self._send_deadline: Deadline | None = None  # made when the client first stops reading
        self._idle_timeout: float | None = None
        self._tunnel: Tunnel | None = None

    # -- connection ----------------------------------------------------------------------------------------

    _secure: bool | None = None

    def isSecure(self) -> bool:
        # Asked for by every request (X-Forwarded-Proto); a connection does not change.
        if self._secure is None:
            self._secure = HTTPChannel.isSecure(self)
        return self._secure

    def connectionMade(self) -> None:
        self._idle_timeout = self.timeOut
        super().connectionMade()
        self.setTimeout(None)  # the phase deadlines below replace TimeoutMixin's idle timer (and clear timeOut)
        self.clock = self.site.reactor
        self.tcp = self.transport
        # The deadline of the current phase (idle, head, body), set on entering it, moved by the body's progress.
        self._phase_deadline = Deadline(self.clock, self._phaseTimedOut)
        if self._idle_timeout:
            self._phase_deadline.set(self._idle_timeout)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._tunnel is not None:
            self._tunnel.clientLost()
        gate, self.gate = self.gate, None
        if gate is not None:
            gate.closed()
        self._on(LOST)
        self._stopDeadlines()
        super().connectionLost(reason)

    def dataReceived(self, data: bytes) -> None:
        if self.phase is CLOSED:
            return
        if self.phase is TUNNEL:
            tunnel = self._tunnel
            assert tunnel is not None  # (set on entering the tunnel phase)
            tunnel.fromClient(data)
            return
        if self.phase is BODY and not self._in and not self._busy:
            # The common case of a body arriving: no copy through the buffer.
            self._busy = True
            try:
                data = self._readBody(data)
            finally:
                self._busy = False
        self._in += data
        if self._in and not self._busy:
            self._process()

    # -- parsing -------------------------------------------------------------------------------------------

    def _process(self) -> None:
        self._busy = True
        try:
            while self._in:
                phase = self.phase
                if phase is IDLE or phase is HEAD:
                    if not self._readHead():
                        break
                elif phase is BODY:
                    data = bytes(self._in)
                    self._in.clear()
                    self._in[:0] = self._readBody(data)
                else:
                    break
        finally:
            self._busy = False
        if self.phase is WAITING and len(self._in) > PIPELINE_BUFFER:
            self._pauseReading(PIPELINE)

    def _readHead(self) -> bool:
        """
        Parse a request head from the buffer; ``False`` when more bytes are needed or the connection is done.
        """
        buffer = self._in
        if self.phase is IDLE:
            # RFC 9112 section 2.2: empty lines before a request line are ignored.
            while buffer.startswith(b"\r\n"):
                del buffer[:2]
            if not buffer or buffer == b"\r":
                return False
        end = buffer.find(b"\r\n\r\n", max(self._checked - 3, 0))
        if end < 0:
            problem = incomplete_head_problem(buffer, self._checked, self.config.head)
            if problem is not None:
                self._reject(problem)
                return False
            self._checked = len(buffer)
            if self.phase is IDLE:
                self._on(HEAD_BEGUN)
            return False
        head = parse_request_head(bytes(buffer[:end]), self.config.head)
        del buffer[: end + 4]
        self._checked = 0
        if isinstance(head, Rejection):
            self._reject(head)
            return False
        self._headReceived(head)
        return self.phase is not CLOSED

    def _headReceived(self, head: RequestHead) -> None:
        framing, rejection = validate_request(head.method, head.target, head.version, head.headers)
        expect = values_of(head.headers, b"expect")
        if rejection is None:
            assert framing is not None
            rejection = self._checkBody(framing, expect)
        if rejection is not None:
            self._reject(rejection)
            return
        assert framing is not None
        request = self.requestFactory(self, len(self.requests))
        self.requests.append(request)
        request.setHeaderList(head.headers)
        self.persistent = head.version == b"HTTP/1.1" and b"close" not in head.connection
        if not self.persistent and head.version == b"HTTP/1.1":
            request.responseHeaders.setRawHeaders(b"Connection", [b"close"])
        request.gotLength(framing.length if framing.kind is Kind.LENGTH else None)
        self._head = head
        self._body_size = 0
        if framing.kind is Kind.NONE:
            self._on(HEAD_WITHOUT_BODY)
            request.upgrade = upgrade_offer(head.version, head.connection, head.headers)
            if request.upgrade is not None:
                # What follows may be the new protocol's bytes: nothing more is read until the answer says.
                self._pauseReading(UPGRADE)
            request.headersReceived(head.method, head.target, head.version, framing)
            self._bodyComplete(request)
            return
        if framing.kind is Kind.LENGTH:
            self._remaining = framing.length or 0
            self._decoder = None
        else:
            self._decoder = ChunkedDecoder(self._bodyData, status=400)
        if head.version == b"HTTP/1.1" and expect:
            send(self.transport, b"HTTP/1.1 100 Continue\r\n\r\n")
        self._on(HEAD_WITH_BODY)
        request.headersReceived(head.method, head.target, head.version, framing)

    def _checkBody(self, framing: Framing, expect: list[bytes]) -> Rejection | None:
        """
        The proxy's own rules on a request body, beyond framing: its size and ``Expect``.
        """
        if expect and (len(expect) > 1 or expect[0].lower() != b"100-continue"):
            return Rejection(417, "unsupported expectation")
        cap = self.config.max_body
        if cap and framing.kind is Kind.LENGTH and (framing.length or 0) > cap:
            return Rejection(413, f"request body of {framing.length} bytes is over the limit of {cap}")
        return None

    def _readBody(self, data: bytes) -> bytes:
        """
        Take body bytes from ``data``; return what follows the end of the body (the next request's bytes).
        """
        self._phase_deadline.set(self.config.body_timeout)
        request = self.requests[-1]
        decoder = self._decoder
        if decoder is None:
            if len(data) < self._remaining:
                self._remaining -= len(data)
                self._bodyData(data)
                return b""
            piece, rest = data[: self._remaining], data[self._remaining :]
            self._remaining = 0
            self._bodyData(piece)
        else:
            try:
                after = decoder.feed(data)
            except FramingError as e:
                self._bodyFailed(request, Rejection(e.status, e.reason))
                return b""
            if after is None:
                return b""
            rest, self._decoder = after, None
        if self.phase is BODY:
            self._on(BODY_ENDED)
            self._bodyComplete(request)
        return rest

    def _bodyData(self, data: bytes) -> None:
        self._body_size += len(data)
        cap = self.config.max_body
        if cap and self._body_size > cap:
            raise FramingError(413, f"request body over the limit of {cap} bytes")
        self.requests[-1].handleContentChunk(data)

    def _bodyComplete(self, request: ProxyRequest) -> None:
        set_handling_request(self, True)
        head, self._head = self._head, None
        assert head is not None
        request.requestReceived(head.method, head.target, head.version)

    def _bodyFailed(self, request: ProxyRequest, rejection: Rejection) -> None:
        """
        The request body broke its framing or a limit: stop the relay; answer if nothing was answered yet.
        """
        if request.proxy_body is not None:
            request.proxy_body.fail(rejection.reason)
        if not request.startedWriting:
            self._reject(rejection)
            return
        self._warn(rejection, "request body")
        self._on(CLOSE)
        self.persistent = False
        if request.finished:
            self.loseConnection()
        else:
            self.transport.abortConnection()

    def _reject(self, rejection: Rejection) -> None:
        self._warn(rejection, "rejected request")
        self._on(CLOSE)
        self.persistent = False
        self.transport.write(error_response(rejection.status))
        self.loseConnection()

    def _warn(self, rejection: Rejection, what: str) -> None:
        peer = self.transport.getPeer()
        log.warn(
            "{what} from {peer}: {status} {reason}",
            what=what,
            peer=getattr(peer, "host", peer),
            status=rejection.status,
            reason=rejection.reason,
        )

    def requestDone(self, request: Request) -> None:
        """
        The first request in the queue has been answered: go on with the next, or close.
        """
        if request is not self.requests[0]:
            raise TypeError(request)
        del self.requests[0]
        set_handling_request(self, False)
        if not self.persistent or self.phase is CLOSED:
            self._on(CLOSE)
            self.loseConnection()
            return
        self._on(ANSWERED)
        self._resumeReading(UPGRADE)
        self._resumeReading(PIPELINE)
        if self._in and not self._busy:
            self._process()

    def leaveForHTTP2(self) -> ConnectionGate | None:
        """
        ALPN chose HTTP/2 for this TLS connection, before any byte was read: stop serving it (another protocol takes
        the transport) and hand over the connection gate's slot.
        """
        network_producer(self).unregisterProducer()
        self._on(CLOSE)
        self._stopDeadlines()
        gate, self.gate = self.gate, None
        return gate

    def switchProtocols(
        self,
        request: ProxyRequest,
        head: bytes,
        upstream: ITCPTransport,
        idle_timeout: float,
        upstream_send_timeout: float,
    ) -> Tunnel:
        """
        The upstream answered ``request`` with ``101``: send the client ``head`` and join this connection to the
        ``upstream`` transport in a :class:`~txrevproxy._net.tunnel.Tunnel` (with the client's send timeout and
        ``upstream_send_timeout``); no more HTTP is parsed here.
        """
        send(self.transport, head)
        request.code, request.code_message = 101, b"Switching Protocols"
        self.site.log(request)
        self.requests.remove(request)
        set_handling_request(self, False)
        self.persistent = False
        self._on(SWITCHED)
        self._stopDeadlines()
        peer = self.transport.getPeer()
        name = f"{getattr(peer, 'host', peer)} {request.uri.decode('latin-1')}"
        # The tunnel pauses each side for the other's full buffer itself (on TLS transports too, where this channel
        # is no producer): this channel no longer hears of the client's buffer.
        network_producer(self).unregisterProducer()
        send_timeouts = (self.config.send_timeout, upstream_send_timeout)
        tunnel = self._tunnel = Tunnel(self.transport, upstream, self.clock, idle_timeout, name, send_timeouts)
        pending, self._in = bytes(self._in), bytearray()
        self._read_pauses.clear()
        self.transport.resumeProducing()
        tunnel.fromClient(pending)
        return tunnel

    # -- reading and writing pauses ------------------------------------------------------------------------

    def _pauseReading(self, reason: ReadPause) -> None:
        if not self._read_pauses and self.phase is not CLOSED:
            self.transport.pauseProducing()
        self._read_pauses.add(reason)

    def _resumeReading(self, reason: ReadPause) -> None:
        if reason not in self._read_pauses:
            return
        self._read_pauses.discard(reason)
        if reason is UPLOAD and self.phase is BODY:
            self._phase_deadline.set(self.config.body_timeout)  # the body deadline starts over
        if not self._read_pauses and self.phase is not CLOSED:
            self.transport.resumeProducing()

    def pauseProducing(self) -> None:
        """
        The client stopped reading (our send buffer is full): pause the response and reading more requests.
        """
        set_waiting_for_transport(self, True)
        producer = request_producer(self)
        if producer is not None:
            producer.pauseProducing()
        self._pauseReading(SEND)
        deadline = self._send_deadline
        if deadline is None:
            deadline = self._send_deadline = Deadline(self.clock, self._sendTimedOut)
        if not deadline.active:
            deadline.set(self.config.send_timeout)

    def resumeProducing(self) -> None:
        set_waiting_for_transport(self, False)
        if self._send_deadline is not None:
            self._send_deadline.clear()
        producer = request_producer(self)
        if producer is not None:
            producer.resumeProducing()
        self._resumeReading(SEND)

    # -- deadlines -----------------------------------------------------------------------------------------

    def _on(self, event: PhaseEvent) -> None:
        """
        Move the phase by ``event`` (the one place it changes, through ``_MOVES``) and set the new phase's deadline.
        """
        phase = self.phase = _MOVES[event][self.phase]
        deadline, config = self._phase_deadline, self.config
        if phase is HEAD:
            deadline.set(config.head_timeout)
        elif phase is BODY:
            deadline.set(config.body_timeout)
        elif phase is IDLE:
            if self._idle_timeout:
                deadline.set(self._idle_timeout)
            else:
                deadline.clear()
        # (Waiting or closed: no phase deadline, and none to clear: one still set finds nothing to time out.)

    def _phaseTimedOut(self) -> None:
        phase = self.phase  # (closed: only the send deadline applies)
        if phase is IDLE:
            self._idleTimedOut()
        elif phase is HEAD:
            self._headTimedOut()
        elif phase is BODY and UPLOAD not in self._read_pauses:
            self._bodyTimedOut()  # (held back by the proxy: set again when let go)

    def _stopDeadlines(self) -> None:
        self._phase_deadline.cancel()
        if self._send_deadline is not None:
            self._send_deadline.cancel()

    def _idleTimedOut(self) -> None:
        self._on(CLOSE)
        self.loseConnection()

    def _headTimedOut(self) -> None:
        self._reject(Rejection(408, f"request head not complete within {self.config.head_timeout:g}s"))

    def _bodyTimedOut(self) -> None:
        reason = f"request body made no progress for {self.config.body_timeout:g}s"
        self._bodyFailed(self.requests[-1], Rejection(408, reason))

    def _sendTimedOut(self) -> None:
        peer = self.transport.getPeer()
        log.warn(
            "client {peer} read nothing for {seconds:g}s; connection aborted",
            peer=getattr(peer, "host", peer),
            seconds=self.config.send_timeout,
        )
        self._on(CLOSE)
        self.transport.abortConnection()


class ProxySite(Site):
    """
    A ``Site`` for proxying: request heads validated, bodies streamed to the upstream as they arrive.

    :param client: limits and deadlines for client connections.
    :param access_log: where answered requests are logged (none when ``None``).
    :param http2: offer HTTP/2 over ALPN (for a site served on TLS listeners; see :mod:`txrevproxy._server.h2`).
    :param max_streams: HTTP/2 streams a connection may have open at once.
    :param timeout: seconds a connection may sit idle between requests (default :data:`IDLE_TIMEOUT`).
    """

    protocol = ProxyChannel  # type: ignore[assignment]  # Site declares its own HTTPChannel wrapper type
    # (Declared, since ProxyRequest takes the (channel, queued) Twisted passes, not Request's *args, **kwargs.)
    requestFactory: type[ProxyRequest] = ProxyRequest
    noisy = False

    #: Decides which connections are served (access rules, connection cap); ``None`` serves every connection.
    gate: ConnectionGate | None = None
    #: Refuse with a protocol that closes at once instead of ``None`` (needed behind a TLS wrapping factory).
    refuse_by_closing = False
    #: Serve HTTP/2 to clients that choose it over ALPN: for a site behind TLS listeners only (on plain TCP every
    #: connection is HTTP/1.1, without the per-connection protocol choice this costs).
    http2 = False
    #: HTTP/2 streams one connection may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS).
    max_streams = MAX_STREAMS

    def __init__(
        self,
        resource: object,
        *args: object,
        client: ClientConfig | None = None,
        gate: ConnectionGate | None = None,
        access_log: AccessLog | None = None,
        http2: bool = False,
        max_streams: int = MAX_STREAMS,
        **kwargs: object,
    ) -> None:
        kwargs.setdefault("timeout", IDLE_TIMEOUT)
        super().__init__(resource, *args, **kwargs)
        self.client = client or ClientConfig()
        self.gate = gate
        self.access_log = access_log
        self.http2 = http2
        self.max_streams = max_streams

    def acceptableProtocols(self) -> list[bytes]:
        """
        What TLS listeners offer over ALPN: ``h2`` then ``http/1.1`` when :attr:`http2` is on, else ``http/1.1``.
        """
        return [b"h2", b"http/1.1"] if self.http2 else [b"http/1.1"]

    def getResourceFor(self, request: StreamedRequest) -> IResource:
        root: IResource = self.resource
        if root.isLeaf:
            # The daemon's pass-through resource: no traversal (and no postpath made; ProxyRequest makes it on demand).
            request.site = self
            request.sitepath = []
            return root
        found: IResource = super().getResourceFor(request)
        return found

    def log(self, request: LoggedRequest) -> None:
        if self.access_log is not None:
            self.access_log.log(request)

    def stopFactory(self) -> None:
        if self.access_log is not None:
            self.access_log.flush()
        super().stopFactory()

    # (Twisted's is typed as returning its HTTP/1.1 wrapper: this returns the channel, a refusal or the wrapper that
    # lets ALPN choose HTTP/2.)
    def buildProtocol(self, addr: IAddress) -> IProtocol | None:  # type: ignore[override]  # see above
        """
        A channel for the connection from ``addr``, or ``None`` (Twisted then closes the socket unread) when the
        gate refuses it.
        """
        if self.gate is not None and not self.gate.admit(addr):
            return RefusedConnection() if self.refuse_by_closing else None
        channel: ProxyChannel = super().buildProtocol(addr)  # (Site's, untyped: a ProxyChannel, our protocol)
        channel.config = self.client
        if self.gate is not None:
            self.gate.opened()
            channel.gate = self.gate
        if self.http2:
            return NegotiatedChannel(channel, self)
        return channel
