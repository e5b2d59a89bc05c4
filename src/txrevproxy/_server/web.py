"""
What the relay needs from a request, done through ``twisted.web``'s own ``Request`` API.

Used where Twisted writes the response head: by the HTTP/2 request (Twisted's ``H2Stream`` frames its head), and by
:class:`WebRequest`, which adapts a stock ``twisted.web`` request (``ReverseProxyResource`` in anyone's ``Site``) to
:class:`~txrevproxy._relay.interfaces.RelayedRequest`. The proxy's own HTTP/1.1 request writes its heads itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from twisted.internet.interfaces import IAddress, IPushProducer, ITCPTransport
from twisted.web.http_headers import Headers
from twisted.web.server import Request

from txrevproxy._http.responses import error_body, reason_phrase
from txrevproxy._net.tunnel import Tunnel
from txrevproxy._net.twisted_private import H2Stream
from txrevproxy._server.body import BodySource, BufferedBody


def respond_error(request: Request, status: int) -> None:
    """
    Answer ``request`` with ``status``, its standard reason phrase and a short plain-text body, naming no server (in
    any ``Site``: the ``Server`` header Twisted's ``Site`` sets on every request is removed).
    """
    body = error_body(status)
    request.setResponseCode(status, reason_phrase(status))
    headers = request.responseHeaders
    headers.removeHeader(b"server")
    headers.setRawHeaders(b"Content-Type", [b"text/plain; charset=utf-8"])
    headers.setRawHeaders(b"Content-Length", [b"%d" % (len(body),)])
    request.write(body)
    request.finish()


def header_list(request: Request) -> list[tuple[bytes, bytes]]:
    """
    The request's headers as ``(name, value)`` pairs, in order.
    """
    return [(name, value) for name, values in request.requestHeaders.getAllRawHeaders() for value in values]


def set_response_head(
    request: Request, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], length: int | None
) -> None:
    """
    A relayed response head, set on ``request`` for Twisted to write with the first body bytes (repeated headers
    kept; ``length`` as ``Content-Length``; Twisted's own ``Server`` header removed: the upstream's, if any, is
    relayed).
    """
    request.defaultContentType = None  # the upstream's Content-Type, or none
    request.setResponseCode(status, reason or reason_phrase(status))
    grouped: dict[bytes, list[bytes]] = {}
    for name, value in headers:
        grouped.setdefault(name, []).append(value)
    if length is not None:
        grouped[b"Content-Length"] = [b"%d" % (length,)]
    response_headers = request.responseHeaders
    response_headers.removeHeader(b"server")
    for name, values in grouped.items():
        response_headers.setRawHeaders(name, values)


def drop_response_head(request: Request) -> bool:
    """
    Forget the response head set on ``request`` if none of it has been written: ``True`` if so (an error can still
    be answered), ``False`` once Twisted has written it.
    """
    if request.startedWriting:
        return False
    request.responseHeaders = Headers()
    return True


class WebRequest:
    """
    A stock ``twisted.web`` request as the relay sees it (:class:`~txrevproxy._relay.interfaces.RelayedRequest`):
    its body already stored by the ``Site``, its loss heard through ``notifyFinish``, its head written by Twisted.
    """

    #: A stock request never offers the relay a protocol upgrade.
    upgrade: bytes | None = None

    def __init__(self, request: Request) -> None:
        self.request = request
        self.method: bytes = request.method
        self.uri: bytes = request.uri
        self.clientproto: bytes = request.clientproto

    def headerList(self) -> list[tuple[bytes, bytes]]:
        return header_list(self.request)

    def getClientAddress(self) -> IAddress:
        address: IAddress = self.request.getClientAddress()
        return address

    def isSecure(self) -> bool:
        return bool(self.request.isSecure())

    def bodySource(self) -> BodySource:
        return BufferedBody(self.request.content)

    def whenLost(self, callback: Callable[[object], object]) -> None:
        self.request.notifyFinish().addErrback(callback)

    def writeHead(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], length: int | None) -> None:
        set_response_head(self.request, status, reason, headers, length)

    def flushHead(self) -> None:
        pass  # Twisted writes the head with the first body bytes

    def dropHead(self) -> bool:
        return drop_response_head(self.request)

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:
        self.request.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self.request.unregisterProducer()

    def write(self, data: bytes) -> None:
        self.request.write(data)

    def finish(self) -> None:
        self.request.finish()

    def respondError(self, status: int) -> None:
        respond_error(self.request, status)

    def abortClient(self) -> None:
        transport = self.request.transport
        if transport is not None:  # HTTP/1.x: the connection's own transport (TCP, or TLS over it)
            cast(ITCPTransport, transport).abortConnection()
        else:  # Twisted's HTTP/2: the request has no transport; its channel is its stream, which resets itself
            cast(H2Stream, self.request.channel).abortConnection()

    def switchProtocols(
        self, head: bytes, upstream: ITCPTransport, idle_timeout: float, send_timeout: float
    ) -> Tunnel | None:
        return None  # never asked: no upgrade is offered
