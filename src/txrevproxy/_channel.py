"""
The daemon's client side: a ``Site`` whose requests start relaying at the end of the headers.

Twisted's ``Site`` renders a request only after its whole body has arrived. :class:`ProxyChannel` validates each
request head (:func:`~txrevproxy._validate.validate_request`) and hands it to :class:`ProxyRequest`, which renders
at once with a :class:`~txrevproxy._body.StreamingBody` that later body bytes are fed into. A response may end
before its request body does (an early upstream answer): the request then stays first in the channel's queue,
draining and discarding the rest of the body, so the next pipelined request is parsed from the right place.
"""

from __future__ import annotations

from io import BytesIO

from twisted.logger import Logger
from twisted.web.http import RESPONSES, HTTPChannel
from twisted.web.server import Request, Site

from ._body import StreamingBody
from ._framing import Framing
from ._gate import ConnectionGate, RefusedConnection
from ._relay import error_body, request_header_list
from ._validate import Rejection, validate_request

log = Logger(namespace="txrevproxy")


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
    """

    proxy_body: StreamingBody | None = None
    _cleanup_pending = False

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
        self.proxy_body = StreamingBody(framing, self.channel.transport)
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

    def _cleanup(self) -> None:
        if self.proxy_body is not None and not self.proxy_body.complete:
            # Responded before the body finished: leave the channel's queue once the body has been drained.
            self._cleanup_pending = True
            return
        Request._cleanup(self)


class ProxyChannel(HTTPChannel):
    """
    ``HTTPChannel`` that refuses ambiguous request heads before anything is forwarded and starts the relay at
    the end of the head.
    """

    _rejected = False

    def allHeadersReceived(self) -> None:
        request = self.requests[-1]
        framing, rejection = validate_request(
            self._command, self._path, self._version, request_header_list(request)
        )
        if rejection is not None:
            self._reject(rejection)
            return
        super().allHeadersReceived()
        request.headersReceived(self._command, self._path, self._version, framing)

    def _reject(self, rejection: Rejection) -> None:
        peer = self.transport.getPeer()
        log.warn(
            "rejected request from {peer}: {status} {reason}",
            peer=getattr(peer, "host", peer),
            status=rejection.status,
            reason=rejection.reason,
        )
        self._rejected = True
        self.transport.write(error_response(rejection.status))
        self.loseConnection()

    def rawDataReceived(self, data: bytes) -> None:
        if not self._rejected:
            super().rawDataReceived(data)

    def allContentReceived(self) -> None:
        if not self._rejected:
            super().allContentReceived()


class ProxySite(Site):
    """
    A ``Site`` for proxying: request heads validated, bodies streamed to the upstream as they arrive.
    """

    protocol = ProxyChannel  # type: ignore[assignment]
    requestFactory = ProxyRequest
    noisy = False

    #: Decides which connections are served (access rules, connection cap); ``None`` serves every connection.
    gate: ConnectionGate | None = None
    #: Refuse with a protocol that closes at once instead of ``None`` (needed behind a TLS wrapping factory).
    refuse_by_closing = False

    def __init__(self, resource: object, *args: object, gate: ConnectionGate | None = None, **kwargs: object) -> None:
        super().__init__(resource, *args, **kwargs)
        self.gate = gate

    def buildProtocol(self, addr: object) -> object:
        """
        A channel for the connection from ``addr``, or ``None`` (Twisted then closes the socket unread) when the
        gate refuses it.
        """
        if self.gate is None:
            return super().buildProtocol(addr)
        if not self.gate.admit(addr):
            return RefusedConnection() if self.refuse_by_closing else None
        channel = super().buildProtocol(addr)
        self.gate.track(channel)
        return channel
