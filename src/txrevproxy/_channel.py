"""
The daemon's client side: a ``Site`` whose channel parses requests strictly and starts relaying at the end of the
head, with size limits and deadlines on every phase of a client connection.

:class:`ProxyChannel` keeps ``HTTPChannel``'s response half (``Request`` writes through it, producers, persistence)
and replaces its request parsing: heads are parsed by :mod:`txrevproxy._head` under :class:`ClientConfig`'s limits
and judged by :func:`~txrevproxy._validate.validate_request`; bodies are decoded by the proxy's own strict framing
code and streamed into the request as they arrive. Phases of a connection, each with its deadline::

    idle ──first byte──▶ head ──blank line──▶ body ──last byte──▶ waiting ──response done──▶ idle
    (idle timeout)       (head timeout → 408)  (no progress → 408)  (none)

plus, in any phase, a client that reads none of our output for ``send_timeout`` is aborted. Requests are handled
one at a time in order: bytes of a pipelined request wait in a bounded buffer (reading pauses past it). A
response may end before its request body does: the request then stays first in the queue, draining and
discarding the rest of its body, so the next request is parsed from the right place.
"""

from __future__ import annotations

from collections.abc import Callable
from io import BytesIO

from attrs import field, frozen
from twisted.internet.interfaces import IDelayedCall, IPushProducer
from twisted.logger import Logger
from twisted.web.http import NO_BODY_CODES, RESPONSES, HTTPChannel, datetimeToString
from twisted.web.http_headers import Headers
from twisted.python.failure import Failure
from twisted.web import resource
from twisted.web.server import Request, Site, unquote
from twisted.web.server import version as twisted_web_version
from zope.interface import implementer

from ._accesslog import AccessLog
from ._body import StreamingBody
from ._framing import ChunkedDecoder, Framing, FramingError, Kind
from ._gate import ConnectionGate, RefusedConnection
from ._head import HeadLimits, RequestHead, incomplete_head_problem, parse_request_head
from ._headers import connection_tokens, values_of
from ._relay import error_body
from ._sending import send
from ._validate import Rejection, validate_request

log = Logger(namespace="txrevproxy")

#: Default seconds a client connection may sit idle between requests (``Site``'s ``timeout``).
IDLE_TIMEOUT = 60.0
#: Bytes of pipelined requests held while the one before them is answered, before reading pauses.
PIPELINE_BUFFER = 16384


@frozen
class ClientConfig:
    """
    Limits and deadlines for client connections (the keep-alive idle timeout is the ``Site``'s ``timeout``).

    :ivar head: size limits of a request head.
    :ivar max_body: largest request body accepted, in bytes; 0 for no limit.
    :ivar head_timeout: seconds from the first byte of a request until its head is complete (else 408).
    :ivar body_timeout: seconds the request body may make no progress (else 408, or an abort once answering).
    :ivar send_timeout: seconds a client may read none of the response while it waits to be sent (else abort).
    """

    head: HeadLimits = field(factory=HeadLimits)
    max_body: int = 1 << 30
    head_timeout: float = 10.0
    body_timeout: float = 30.0
    send_timeout: float = 60.0


def error_response(status: int, connection_close: bool = True) -> bytes:
    """
    A complete, short plain-text error response.
    """
    body = error_body(status)
    return b"".join(
        [
            b"HTTP/1.1 %d %s\r\n" % (status, RESPONSES.get(status, b"Error")),
            b"Content-Type: text/plain; charset=utf-8\r\n",
            b"Content-Length: %d\r\n" % (len(body),),
            b"Connection: close\r\n" if connection_close else b"",
            b"\r\n",
            body,
        ]
    )


class ProxyRequest(Request):
    """
    A request that is rendered when its head is complete; its body streams through :attr:`proxy_body`.

    Its headers are kept as the list of ``(name, value)`` pairs that was received (:meth:`headerList`, which the
    relay forwards); Twisted's ``requestHeaders`` object is built from it only when something asks for it, and is
    from then on what :meth:`headerList` reports. Cookies are parsed on the first ``getCookie``.
    """

    proxy_body: StreamingBody | None = None
    _cleanup_pending = False
    _header_list: list[tuple[bytes, bytes]] | None = None
    _headers: Headers | None = None
    _cookies_parsed = False
    _when_lost: Callable[[object], object] | None = None

    @property  # type: ignore[override]
    def requestHeaders(self) -> Headers:
        headers = self._headers
        if headers is None:
            headers = self._headers = Headers()
            if self._header_list is not None:
                add = headers.addRawHeader
                for name, value in self._header_list:
                    add(name, value)
                self._header_list = None  # the Headers object is the truth from now on
        return headers

    @requestHeaders.setter
    def requestHeaders(self, headers: Headers) -> None:
        self._headers, self._header_list = headers, None

    def setHeaderList(self, headers: list[tuple[bytes, bytes]]) -> None:
        """
        The request's headers, as parsed by the channel.
        """
        self._headers, self._header_list = None, headers

    def headerList(self) -> list[tuple[bytes, bytes]]:
        """
        The request headers as ``(name, value)`` pairs in order: as received, unless changed through
        ``requestHeaders``.
        """
        if self._header_list is not None:
            return self._header_list
        return [(name, value) for name, values in self.requestHeaders.getAllRawHeaders() for value in values]

    def getHeader(self, key: bytes) -> bytes | None:  # type: ignore[override]
        if self._header_list is None or not isinstance(key, bytes):
            return Request.getHeader(self, key)
        key = key.lower()
        found = None
        for name, value in self._header_list:
            if name.lower() == key:
                found = value
        return found

    def getCookie(self, key: bytes) -> bytes | None:
        if not self._cookies_parsed:
            self._cookies_parsed = True
            self.parseCookies()
        return Request.getCookie(self, key)

    def whenLost(self, callback: Callable[[object], object]) -> None:
        """
        Call ``callback(reason)`` if the connection is lost before the response is finished (a lighter
        ``notifyFinish().addErrback``).
        """
        self._when_lost = callback

    def connectionLost(self, reason: object) -> None:
        callback, self._when_lost = self._when_lost, None
        Request.connectionLost(self, reason)
        if callback is not None and not self.finished:
            callback(reason)

    def gotLength(self, length: int | None) -> None:
        # Nothing of the body is stored: it is relayed as it arrives.
        self.content = BytesIO()

    def headersReceived(self, command: bytes, target: bytes, version: bytes, framing: Framing) -> None:
        """
        The head is complete and valid: render now.
        """
        self.method, self.uri, self.clientproto = command, target, version
        self.path = target.split(b"?", 1)[0]
        self.args = {}
        self.proxy_body = StreamingBody(framing, self.channel.upload_reading)
        self.started = self.channel._clock.seconds()
        self.process()

    def handleContentChunk(self, data: bytes) -> None:
        assert self.proxy_body is not None
        self.proxy_body.feed(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        # The whole body has arrived (rendering happened at the end of the head).
        assert self.proxy_body is not None
        self.proxy_body.end()
        if self._cleanup_pending:
            self._cleanup_pending = False
            Request._cleanup(self)

    started: float | None = None  # when the head was complete (for the access log)
    _head: bytes | None = None  # a response head written by writeHead and not yet sent
    _relaying = False  # writeHead was called: body writes are framed here

    def writeHead(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], length: int | None) -> None:
        """
        Prepare the response head in one piece, held until the first body bytes (so that both go out in one
        write) or :meth:`flushHead`: the relay's path, instead of ``responseHeaders`` and a first ``write``.
        ``length`` is the body's ``Content-Length``, or ``None`` to chunk the body (HTTP/1.1) or end it by closing
        the connection (HTTP/1.0). ``Date`` is added when the upstream sent none.
        """
        self.code, self.code_message = status, reason or RESPONSES.get(status, b"Unknown")
        channel = self.channel
        out = [b"HTTP/1.1 %d %s\r\n" % (status, self.code_message)]
        has_date = False
        for name, value in headers:
            out.append(b"%s: %s\r\n" % (name, value))
            if not has_date and len(name) == 4 and name.lower() == b"date":
                has_date = True
        if not has_date:
            out.append(b"Date: %s\r\n" % (http_date(channel._clock.seconds()),))
        if length is not None:
            out.append(b"Content-Length: %d\r\n" % (length,))
        elif self.method == b"HEAD" or status in NO_BODY_CODES:
            pass
        elif self.clientproto == b"HTTP/1.1":
            out.append(b"Transfer-Encoding: chunked\r\n")
            self.chunked = 1
        else:
            channel.persistent = False  # an HTTP/1.0 client: the body ends with the connection
        if not channel.persistent:
            out.append(b"Connection: close\r\n")
        out.append(b"\r\n")
        self._head = b"".join(out)
        self._relaying = True

    def flushHead(self) -> None:
        """
        Send a held response head now (no body bytes are at hand yet).
        """
        head, self._head = self._head, None
        if head is not None and not self._disconnected:
            self.startedWriting = 1
            send(self.channel.transport, head)

    def dropHead(self) -> None:
        """
        Forget a held response head (the response failed before any of it was sent).
        """
        self._head = None
        self._relaying = False
        self.chunked = 0

    def process(self) -> None:
        # twisted.web.server.Request.process, less the Server and Date headers it sets on every response (a
        # relayed response carries the upstream's, writeHead adding Date when missing; write() adds both to others).
        self.site = self.channel.site
        self.prepath = []
        self.postpath = list(map(unquote, self.path[1:].split(b"/")))
        if self.path == b"*":
            self._handleStar()
            return
        try:
            resrc = self.site.getResourceFor(self)
            if resource._IEncodingResource.providedBy(resrc):
                encoder = resrc.getEncoder(self)
                if encoder is not None:
                    self._encoder = encoder
            self.render(resrc)
        except BaseException:
            self.processingFailed(Failure())

    def write(self, data: bytes) -> None:
        if not self._relaying:
            if not self.startedWriting:
                headers = self.responseHeaders
                if not headers.hasHeader(b"server"):
                    headers.setRawHeaders(b"Server", [twisted_web_version])
                if not headers.hasHeader(b"date"):
                    headers.setRawHeaders(b"Date", [http_date(self.channel._clock.seconds())])
            Request.write(self, data)
            return
        head, self._head = self._head, None
        self.startedWriting = 1
        if self._disconnected:
            return
        if self.method == b"HEAD" or self.code in NO_BODY_CODES:
            data = b""
        elif data:
            self.sentLength += len(data)
            if self.chunked:
                data = b"%x\r\n%s\r\n" % (len(data), data)
        if head is not None:
            data = head + data
        if data:
            send(self.channel.transport, data)

    def finish(self) -> None:
        if self._relaying and not self._disconnected:
            last = b"0\r\n\r\n" if self.chunked else b""
            self.chunked = 0  # the last chunk is written here
            head, self._head = self._head, None
            if head is not None:
                self.startedWriting = 1
                last = head + last
            if last:
                send(self.channel.transport, last)
        Request.finish(self)

    def _cleanup(self) -> None:
        if self.proxy_body is not None and not self.proxy_body.complete:
            # Responded before the body finished: leave the channel's queue once the body has been drained.
            self._cleanup_pending = True
            return
        Request._cleanup(self)


_date_cache: list[object] = [None, b""]


def http_date(seconds: float) -> bytes:
    """
    The IMF-fixdate for ``seconds`` since the epoch (RFC 9110 section 5.6.7), computed once per second.
    """
    whole = int(seconds)
    if _date_cache[0] != whole:
        _date_cache[:] = [whole, datetimeToString(whole)]
    return _date_cache[1]  # type: ignore[return-value]


@implementer(IPushProducer)
class _UploadReading:
    """
    What a request body pauses when the upstream is slow: the channel's reading, for the reason "upload".
    """

    def __init__(self, channel: ProxyChannel) -> None:
        self._channel = channel

    def pauseProducing(self) -> None:
        self._channel._pauseReading("upload")

    def resumeProducing(self) -> None:
        self._channel._resumeReading("upload")

    def stopProducing(self) -> None:
        pass


IDLE, HEAD, BODY, WAITING, CLOSED = "idle", "head", "body", "waiting", "closed"


class ProxyChannel(HTTPChannel):
    """
    ``HTTPChannel`` with the proxy's own strict request parsing, limits and deadlines (see the module docstring).
    """

    config = ClientConfig()

    def __init__(self) -> None:
        super().__init__()
        self.phase = IDLE
        self.upload_reading = _UploadReading(self)
        self._in = bytearray()  # received, not yet parsed: a partial head or pipelined requests
        self._checked = 0  # bytes of a partial head already checked by incomplete_head_problem
        self._busy = False  # inside _process: re-entrant calls only queue bytes
        self._read_pauses: set[str] = set()
        self._head: RequestHead | None = None
        self._remaining = 0  # body bytes still to come (Content-Length framing)
        self._decoder: ChunkedDecoder | None = None
        self._body_size = 0
        self._since = 0.0  # when the current phase began, or the body last made progress
        self._send_paused_since: float | None = None
        self._timer: IDelayedCall | None = None
        self._idle_timeout: float | None = None

    # -- connection ----------------------------------------------------------------------------------------

    _host: object = None
    _secure: bool | None = None

    def isSecure(self) -> bool:
        # Asked for by every request (X-Forwarded-Proto); a connection does not change.
        if self._secure is None:
            self._secure = HTTPChannel.isSecure(self)
        return self._secure

    def getHost(self) -> object:
        # Asked for by every Request; the socket's own address does not change, so ask the system once.
        if self._host is None:
            self._host = self.transport.getHost()
        return self._host

    def connectionMade(self) -> None:
        self._idle_timeout = self.timeOut
        super().connectionMade()
        self.setTimeout(None)  # the phase deadlines below replace TimeoutMixin's idle timer (and clear timeOut)
        self._clock = self.site.reactor
        self._since = self._clock.seconds()
        self._arm()

    def connectionLost(self, reason: object) -> None:
        self.phase = CLOSED
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        super().connectionLost(reason)

    def dataReceived(self, data: bytes) -> None:
        if self.phase is CLOSED:
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
            self._pauseReading("pipeline")

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
                self._enter(HEAD)
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
        if rejection is None:
            assert framing is not None
            rejection = self._checkBody(head, framing)
        if rejection is not None:
            self._reject(rejection)
            return
        assert framing is not None
        request = self.requestFactory(self, len(self.requests))
        self.requests.append(request)
        request.setHeaderList(head.headers)
        self.persistent = head.version == b"HTTP/1.1" and b"close" not in connection_tokens(head.headers)
        if not self.persistent and head.version == b"HTTP/1.1":
            request.responseHeaders.setRawHeaders(b"Connection", [b"close"])
        request.gotLength(framing.length if framing.kind is Kind.LENGTH else None)
        self._head = head
        self._body_size = 0
        if framing.kind is Kind.NONE:
            self._enter(WAITING)
            request.headersReceived(head.method, head.target, head.version, framing)
            self._bodyComplete(request)
            return
        if framing.kind is Kind.LENGTH:
            self._remaining = framing.length or 0
            self._decoder = None
        else:
            self._decoder = ChunkedDecoder(self._bodyData, status=400)
        if head.version == b"HTTP/1.1" and values_of(head.headers, b"expect"):
            send(self.transport, b"HTTP/1.1 100 Continue\r\n\r\n")
        self._enter(BODY)
        request.headersReceived(head.method, head.target, head.version, framing)

    def _checkBody(self, head: RequestHead, framing: Framing) -> Rejection | None:
        """
        The proxy's own rules on a request body, beyond framing: its size and ``Expect``.
        """
        expect = values_of(head.headers, b"expect")
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
        self._since = self._clock.seconds()
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
            self._enter(WAITING)
            self._bodyComplete(request)
        return rest

    def _bodyData(self, data: bytes) -> None:
        self._body_size += len(data)
        cap = self.config.max_body
        if cap and self._body_size > cap:
            raise FramingError(413, f"request body over the limit of {cap} bytes")
        self.requests[-1].handleContentChunk(data)

    def _bodyComplete(self, request: ProxyRequest) -> None:
        self._handlingRequest = True
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
        self._log(rejection, "request body")
        self.phase = CLOSED
        self.persistent = False
        if request.finished:
            self.loseConnection()
        else:
            self.transport.abortConnection()

    def _reject(self, rejection: Rejection) -> None:
        self._log(rejection, "rejected request")
        self.phase = CLOSED
        self.persistent = False
        self.transport.write(error_response(rejection.status))
        self.loseConnection()

    def _log(self, rejection: Rejection, what: str) -> None:
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
        self._handlingRequest = False
        if not self.persistent or self.phase is CLOSED:
            self.phase = CLOSED
            self.loseConnection()
            return
        self._enter(IDLE)
        self._resumeReading("pipeline")
        if self._in and not self._busy:
            self._process()

    # -- reading and writing pauses ------------------------------------------------------------------------

    def _pauseReading(self, reason: str) -> None:
        if not self._read_pauses and self.phase is not CLOSED:
            self.transport.pauseProducing()
        self._read_pauses.add(reason)

    def _resumeReading(self, reason: str) -> None:
        if reason not in self._read_pauses:
            return
        self._read_pauses.discard(reason)
        if reason == "upload":
            self._since = self._clock.seconds()  # the body deadline starts over
            self._arm()
        if not self._read_pauses and self.phase is not CLOSED:
            self.transport.resumeProducing()

    def pauseProducing(self) -> None:
        """
        The client stopped reading (our send buffer is full): pause the response and reading more requests.
        """
        self._waitingForTransport = True
        if self._requestProducer is not None:
            self._requestProducer.pauseProducing()
        self._pauseReading("send")
        if self._send_paused_since is None:
            self._send_paused_since = self._clock.seconds()
            self._arm()

    def resumeProducing(self) -> None:
        self._waitingForTransport = False
        self._send_paused_since = None
        if self._requestProducer is not None:
            self._requestProducer.resumeProducing()
        self._resumeReading("send")

    # -- deadlines -----------------------------------------------------------------------------------------

    def _enter(self, phase: str) -> None:
        self.phase = phase
        self._since = self._clock.seconds()
        if phase is HEAD or phase is BODY:
            self._arm()

    def _deadline(self) -> tuple[float, Callable[[], None]] | None:
        """
        The earliest deadline that applies now, and what to do when it passes.
        """
        phase, config = self.phase, self.config  # CLOSED has no phase deadline, only the send deadline
        deadline: tuple[float, Callable[[], None]] | None = None
        if phase is IDLE and self._idle_timeout:
            deadline = (self._since + self._idle_timeout, self._idleTimedOut)
        elif phase is HEAD:
            deadline = (self._since + config.head_timeout, self._headTimedOut)
        elif phase is BODY and "upload" not in self._read_pauses:
            deadline = (self._since + config.body_timeout, self._bodyTimedOut)
        if self._send_paused_since is not None:
            send = (self._send_paused_since + config.send_timeout, self._sendTimedOut)
            if deadline is None or send[0] < deadline[0]:
                deadline = send
        return deadline

    def _arm(self) -> None:
        """
        Make sure the timer fires no later than the current deadline (it re-checks when it fires).
        """
        deadline = self._deadline()
        if deadline is None:
            return
        delay = max(deadline[0] - self._clock.seconds(), 0.0)
        if self._timer is None or not self._timer.active():
            self._timer = self._clock.callLater(delay, self._check)
        elif self._timer.getTime() > deadline[0]:
            self._timer.reset(delay)

    def _check(self) -> None:
        self._timer = None
        deadline = self._deadline()
        if deadline is None:
            return
        if self._clock.seconds() >= deadline[0]:
            deadline[1]()
        else:
            self._arm()

    def _idleTimedOut(self) -> None:
        self.phase = CLOSED
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
        self.phase = CLOSED
        self.transport.abortConnection()


class ProxySite(Site):
    """
    A ``Site`` for proxying: request heads validated, bodies streamed to the upstream as they arrive.

    :param client: limits and deadlines for client connections.
    :param access_log: where answered requests are logged (none when ``None``).
    :param timeout: seconds a connection may sit idle between requests (default :data:`IDLE_TIMEOUT`).
    """

    protocol = ProxyChannel  # type: ignore[assignment]
    requestFactory = ProxyRequest
    noisy = False

    #: Decides which connections are served (access rules, connection cap); ``None`` serves every connection.
    gate: ConnectionGate | None = None
    #: Refuse with a protocol that closes at once instead of ``None`` (needed behind a TLS wrapping factory).
    refuse_by_closing = False

    def __init__(
        self,
        resource: object,
        *args: object,
        client: ClientConfig | None = None,
        gate: ConnectionGate | None = None,
        access_log: AccessLog | None = None,
        **kwargs: object,
    ) -> None:
        kwargs.setdefault("timeout", IDLE_TIMEOUT)
        super().__init__(resource, *args, **kwargs)
        self.client = client or ClientConfig()
        self.gate = gate
        self.access_log = access_log

    def log(self, request: object) -> None:
        if self.access_log is not None:
            self.access_log.log(request)

    def stopFactory(self) -> None:
        if self.access_log is not None:
            self.access_log.flush()
        super().stopFactory()

    def buildProtocol(self, addr: object) -> object:
        """
        A channel for the connection from ``addr``, or ``None`` (Twisted then closes the socket unread) when the
        gate refuses it.
        """
        if self.gate is not None and not self.gate.admit(addr):
            return RefusedConnection() if self.refuse_by_closing else None
        channel = super().buildProtocol(addr)
        channel.config = self.client
        if self.gate is not None:
            self.gate.track(channel)
        return channel
