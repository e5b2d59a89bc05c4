"""
The request object of :class:`~txrevproxy._server.channel.ProxySite`: a ``twisted.web`` ``Request`` rendered at the
end of its head, whose body streams in afterwards, and whose relayed response head is written in one piece.

- :class:`StreamedRequest` is what HTTP/1.1 and HTTP/2 requests share: rendering when the head is complete with a
  :class:`~txrevproxy._server.body.StreamingBody` as ``proxy_body``, and ``whenLost``; no ``Server`` header (the
  proxy names no server of its own), and a status set without a reason phrase gets the standard one.

- Headers are kept as the parsed ``(name, value)`` list (:meth:`ProxyRequest.headerList`, what the relay forwards);
  Twisted's ``requestHeaders`` is built from it only on demand.
- :meth:`ProxyRequest.writeHead` prepares a relayed response head and holds it until the first body bytes, so that
  both go out in one write (:func:`~txrevproxy._net.sending.send`); ``Date`` is added when the upstream sent none.
- A response that ends before its request body does keeps the request first in the channel's queue until the rest
  of the body has been drained.
"""

from __future__ import annotations

from collections.abc import Callable
from io import BytesIO
from typing import AnyStr, Protocol, cast
from urllib.parse import unquote_to_bytes

from twisted.internet.interfaces import IPushProducer, IReactorTime, ITCPTransport
from twisted.python.failure import Failure
from twisted.web.http import NO_BODY_CODES, HTTPChannel, datetimeToString
from twisted.web.http_headers import Headers
from twisted.web.server import Request, Site

from txrevproxy._http.framing import Framing
from txrevproxy._http.responses import reason_phrase
from txrevproxy._net.sending import send
from txrevproxy._net.tunnel import Tunnel
from txrevproxy._net.twisted_private import (
    H2Stream,
    IEncodingResource,
    cleanup_request,
    handle_star,
    init_request_internals,
    request_disconnected,
    request_encoder,
    set_request_encoder,
)
from txrevproxy._server.body import StreamingBody
from txrevproxy._server.web import drop_response_head, header_list, respond_error, set_response_head


class StreamedRequest(Request):
    """
    A request rendered as soon as its head is complete and valid, whose body then streams in through
    :attr:`proxy_body` (what the relay sends upstream); shared by the HTTP/1.1 and HTTP/2 requests.
    """

    proxy_body: StreamingBody | None = None
    started: float | None = None  # when the head was complete (for the access log)
    sitepath: list[bytes]  # (set by the site when it finds the resource)
    #: The protocols the client asks to switch to (its ``Upgrade``, for a bodiless HTTP/1.1 request with
    #: ``Connection: upgrade``), or ``None``; the channel has paused reading until the answer.
    upgrade: bytes | None = None
    _when_lost: Callable[[object], object] | None = None

    # What the relay needs (txrevproxy._relay.interfaces.RelayedRequest), through Twisted's Request API; the HTTP/1.1
    # request writes its heads itself.

    def headerList(self) -> list[tuple[bytes, bytes]]:
        """
        The request headers as ``(name, value)`` pairs, in order.
        """
        return header_list(self)

    def bodySource(self) -> StreamingBody:
        """
        The body streaming in from the client (rendering starts once the head is complete: it is always set).
        """
        assert self.proxy_body is not None
        return self.proxy_body

    def writeHead(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], length: int | None) -> None:
        set_response_head(self, status, reason, headers, length)

    def flushHead(self) -> None:
        pass  # Twisted writes the head with the first body bytes

    def dropHead(self) -> bool:
        return drop_response_head(self)

    def respondError(self, status: int) -> None:
        respond_error(self, status)

    def abortClient(self) -> None:
        raise NotImplementedError  # the connection's transport (HTTP/1.1) or the stream (HTTP/2)

    def switchProtocols(
        self, head: bytes, upstream: ITCPTransport, idle_timeout: float, send_timeout: float
    ) -> Tunnel | None:
        return None

    def whenLost(self, callback: Callable[[object], object]) -> None:
        """
        Call ``callback(reason)`` if the client side is lost before the response is finished (a lighter
        ``notifyFinish().addErrback``).
        """
        self._when_lost = callback

    def connectionLost(self, reason: object) -> None:
        callback, self._when_lost = self._when_lost, None
        Request.connectionLost(self, reason)
        if callback is not None and not self.finished:
            callback(reason)

    def finish(self) -> None:
        # A finished request's loss is no news to anyone; and the callback (a relay's bound method, the relay holding
        # this request) would make a reference cycle that only the garbage collector could free.
        self._when_lost = None
        Request.finish(self)

    def setResponseCode(self, code: int, message: bytes | None = None) -> None:
        """
        Set the status, with its standard reason phrase (:func:`~txrevproxy._http.responses.reason_phrase`) when
        ``message`` is ``None``, instead of Twisted's ``RESPONSES`` (``Request-URI Too Long``, or ``Unknown Status``
        for 429 and 431).
        """
        self.code = code
        self.code_message = reason_phrase(code) if message is None else message

    _postpath: list[bytes] | None = None

    @property
    def postpath(self) -> list[bytes]:
        # Made when first asked for: a leaf root resource (the daemon's) never looks.
        if self._postpath is None:
            self._postpath = list(map(unquote_to_bytes, self.path[1:].split(b"/")))
        return self._postpath

    @postpath.setter
    def postpath(self, value: list[bytes]) -> None:
        self._postpath = value

    def process(self) -> None:
        # twisted.web.server.Request.process, less the Server and Date headers it sets on every response: the proxy
        # names no server of its own (a relayed response carries the upstream's Server, if any), and Date is added
        # where each kind of request writes its head (a relayed response keeps the upstream's).
        self.site = self.requestSite()
        self.prepath = []
        if self.path == b"*":
            handle_star(self)
            return
        try:
            resrc = self.site.getResourceFor(self)
            if IEncodingResource.providedBy(resrc):
                encoder = resrc.getEncoder(self)
                if encoder is not None:
                    set_request_encoder(self, encoder)
            Request.render(self, resrc)
        except BaseException:
            Request.processingFailed(self, Failure())

    def requestSite(self) -> Site:
        """
        The site serving this request: for Twisted's HTTP/2, the request's channel is its stream, which knows it.
        """
        site: Site = cast(H2Stream, self.channel).site
        return site

    def renderNow(self, command: bytes, target: bytes, version: bytes, body: StreamingBody, now: float) -> None:
        """
        The head is complete and valid: keep ``body`` as :attr:`proxy_body` and render now.
        """
        self.method, self.uri, self.clientproto = command, target, version
        self.path = target.split(b"?", 1)[0]
        self.args = {}
        self.proxy_body = body
        self.started = now
        self.process()


class ClientConnection(Protocol):
    """
    What the proxy's HTTP/1.1 request needs of its connection (:class:`~txrevproxy._server.channel.ProxyChannel`).
    """

    site: Site
    #: Whether the connection is kept after this response (the request clears it for a response that ends with it).
    persistent: bool
    #: The client's pausing of the request body (the channel pauses reading for it).
    upload_reading: IPushProducer

    @property
    def clock(self) -> IReactorTime:
        """The clock of the connection's deadlines and ``Date`` headers."""

    @property
    def tcp(self) -> ITCPTransport:
        """The client connection's transport (TCP, or TLS over it)."""

    def switchProtocols(
        self, request: ProxyRequest, head: bytes, upstream: ITCPTransport, idle_timeout: float, send_timeout: float
    ) -> Tunnel:
        """Send ``head`` (the ``101``) and join the client to ``upstream`` in a tunnel."""


class ProxyRequest(StreamedRequest):
    """
    A request that is rendered when its head is complete; its body streams through :attr:`proxy_body`.

    Its headers are kept as the list of ``(name, value)`` pairs that was received (:meth:`headerList`, which the
    relay forwards); Twisted's ``requestHeaders`` object is built from it only when something asks for it, and is
    from then on what :meth:`headerList` reports. Cookies are parsed on the first ``getCookie``.
    """

    _cleanup_pending = False
    _header_list: list[tuple[bytes, bytes]] | None = None
    _headers: Headers | None = None
    _cookies_parsed = False

    def __init__(self, channel: HTTPChannel, queued: object = None) -> None:
        # twisted.web.server.Request.__init__'s attributes, set directly: it runs for every request, and the
        # channel answers getPeer and getHost from what it asked once per connection. (No form parsing: the body
        # is relayed, never stored; request headers come with setHeaderList.)
        self.notifications = []
        self.channel = channel
        # Only the proxy's own channel makes these requests (its requestFactory): it is their ClientConnection.
        self.connection = connection = cast(ClientConnection, channel)
        self.client = channel.getPeer()
        self.host = channel.getHost()
        self.received_cookies = {}
        self.responseHeaders = Headers()
        self.cookies = []
        self.transport = connection.tcp
        self.queued = False
        init_request_internals(self)

    @property
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

    def getHeader(self, key: AnyStr) -> AnyStr | None:
        if self._header_list is None or not isinstance(key, bytes):
            return Request.getHeader(self, key)
        lower = key.lower()
        found = None
        for name, value in self._header_list:
            if name.lower() == lower:
                found = value
        return found

    def getCookie(self, key: bytes) -> bytes | None:
        if not self._cookies_parsed:
            self._cookies_parsed = True
            Request.parseCookies(self)
        cookie: bytes | None = Request.getCookie(self, key)
        return cookie

    def gotLength(self, length: int | None) -> None:
        # Nothing of the body is stored: it is relayed as it arrives.
        self.content = BytesIO()

    def headersReceived(self, command: bytes, target: bytes, version: bytes, framing: Framing) -> None:
        """
        The head is complete and valid: render now.
        """
        connection = self.connection
        self.renderNow(
            command, target, version, StreamingBody(framing, connection.upload_reading), connection.clock.seconds()
        )

    def handleContentChunk(self, data: bytes) -> None:
        assert self.proxy_body is not None
        self.proxy_body.feed(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        # The whole body has arrived (rendering happened at the end of the head).
        assert self.proxy_body is not None
        self.proxy_body.end()
        if self._cleanup_pending:
            self._cleanup_pending = False
            cleanup_request(self)

    _head: bytes | None = None  # a response head written by writeHead and not yet sent
    _relaying = False  # writeHead was called: body writes are framed here

    def writeHead(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], length: int | None) -> None:
        """
        Prepare the response head in one piece, held until the first body bytes (so that both go out in one
        write) or :meth:`flushHead`: the relay's path, instead of ``responseHeaders`` and a first ``write``.
        ``length`` is the body's ``Content-Length``, or ``None`` to chunk the body (HTTP/1.1) or end it by closing
        the connection (HTTP/1.0). ``Date`` is added when the upstream sent none; an empty ``reason`` becomes the
        standard phrase.
        """
        self.code, self.code_message = status, reason or reason_phrase(status)
        connection = self.connection
        # The status line and header lines joined in C; every header line follows a LF (no value holds one).
        head = b"\r\n".join([b"HTTP/1.1 %d %s" % (status, self.code_message), *map(b": ".join, headers)])
        out = [head, b"\r\n"]
        if b"\ndate:" not in head.lower():
            out.append(b"Date: %s\r\n" % (http_date(connection.clock.seconds()),))
        if length is not None:
            out.append(b"Content-Length: %d\r\n" % (length,))
        elif self.method == b"HEAD" or status in NO_BODY_CODES:
            pass
        elif self.clientproto == b"HTTP/1.1":
            out.append(b"Transfer-Encoding: chunked\r\n")
            self.chunked = 1
        else:
            connection.persistent = False  # an HTTP/1.0 client: the body ends with the connection
        if not connection.persistent:
            out.append(b"Connection: close\r\n")
        out.append(b"\r\n")
        self._head = b"".join(out)
        self._relaying = True

    def flushHead(self) -> None:
        """
        Send a held response head now (no body bytes are at hand yet).
        """
        head, self._head = self._head, None
        if head is not None and not request_disconnected(self):
            self.startedWriting = 1
            send(self.connection.tcp, head)

    def dropHead(self) -> bool:
        """
        Forget a held response head if none of it has been sent (the response failed before): ``True`` if so.
        """
        if self.startedWriting:
            return False
        self.responseHeaders = Headers()
        self._head = None
        self._relaying = False
        self.chunked = 0
        return True

    def requestSite(self) -> Site:
        return self.connection.site

    def abortClient(self) -> None:
        self.connection.tcp.abortConnection()

    def switchProtocols(self, head: bytes, upstream: ITCPTransport, idle_timeout: float, send_timeout: float) -> Tunnel:
        return self.connection.switchProtocols(self, head, upstream, idle_timeout, send_timeout)

    def write(self, data: bytes) -> None:
        if not self._relaying:
            if not self.startedWriting:
                headers = self.responseHeaders
                if not headers.hasHeader(b"date"):
                    headers.setRawHeaders(b"Date", [http_date(self.connection.clock.seconds())])
            Request.write(self, data)
            return
        head, self._head = self._head, None
        self.startedWriting = 1
        if request_disconnected(self):
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
            send(self.connection.tcp, data)

    def finish(self) -> None:
        if not self._relaying or request_disconnected(self) or self.finished or request_encoder(self):
            StreamedRequest.finish(self)  # (Request.finish raises or warns for the last two)
            return
        self._when_lost = None  # (as in StreamedRequest.finish)
        # Request.finish for a relayed response: the last chunk and a held head in one write, log, clean up.
        last = b"0\r\n\r\n" if self.chunked else b""
        self.chunked = 0
        head, self._head = self._head, None
        if head is not None:
            last = head + last
        self.startedWriting = 1
        if last:
            send(self.connection.tcp, last)
        self.connection.site.log(self)
        self.finished = 1
        if not self.queued:
            self._cleanup()

    def _cleanup(self) -> None:
        if self.proxy_body is not None and not self.proxy_body.complete:
            # Responded before the body finished: leave the channel's queue once the body has been drained.
            self._cleanup_pending = True
            return
        cleanup_request(self)


_date_cache: tuple[int, bytes] = (-1, b"")


def http_date(seconds: float) -> bytes:
    """
    The IMF-fixdate for ``seconds`` since the epoch (RFC 9110 section 5.6.7), computed once per second.
    """
    global _date_cache
    whole = int(seconds)
    cached = _date_cache
    if cached[0] != whole:
        date: bytes = datetimeToString(whole)
        cached = _date_cache = (whole, date)
    return cached[1]
