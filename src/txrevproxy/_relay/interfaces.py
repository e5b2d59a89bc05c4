"""
What the relay needs from the client's request: :class:`RelayedRequest`.

The proxy's own HTTP/1.1 request (:class:`~txrevproxy._server.request.ProxyRequest`) and HTTP/2 stream request
(:class:`~txrevproxy._server.h2.H2ProxyRequest`) implement it; a stock ``twisted.web`` request is adapted once, by
:class:`~txrevproxy._server.web.WebRequest`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from twisted.internet.interfaces import IAddress, IPushProducer, ITCPTransport

from txrevproxy._net.tunnel import Tunnel
from txrevproxy._server.body import BodySource


class RelayedRequest(Protocol):
    """
    One client request as the relay drives it: its head in, its response head and body out, with backpressure,
    loss notification, error answers, an abort, and a switch to a tunnel after ``101``.
    """

    method: bytes
    uri: bytes
    #: ``b"HTTP/1.1"``, ``b"HTTP/1.0"`` or ``b"HTTP/2"``.
    clientproto: bytes
    #: The protocols the client offers to switch to (``Upgrade``), when it may; else ``None``.
    upgrade: bytes | None

    def headerList(self) -> list[tuple[bytes, bytes]]:
        """The request headers as ``(name, value)`` pairs, in order."""

    def getClientAddress(self) -> IAddress:
        """The client's address."""

    def isSecure(self) -> bool:
        """Whether the client connection is TLS."""

    def bodySource(self) -> BodySource:
        """Where the request body sent upstream comes from."""

    def whenLost(self, callback: Callable[[object], object]) -> None:
        """Call ``callback(reason)`` if the client is lost before the response is finished."""

    def writeHead(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], length: int | None) -> None:
        """
        Set the relayed response head (end-to-end ``headers``; ``length`` its ``Content-Length``, ``None`` for a
        body of unknown length), written with the first body bytes or by :meth:`flushHead`.
        """

    def flushHead(self) -> None:
        """Send a response head held back for body bytes now (more are awaited)."""

    def dropHead(self) -> bool:
        """Forget the response head if none of it has been sent: ``True`` if so (an error can still be answered)."""

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:
        """Let ``producer`` be paused while the client is slow to read the response."""

    def unregisterProducer(self) -> None:
        """Forget the registered producer."""

    def write(self, data: bytes) -> None:
        """Write response body bytes."""

    def finish(self) -> None:
        """The response is complete."""

    def respondError(self, status: int) -> None:
        """Answer with the proxy's own short error response."""

    def abortClient(self) -> None:
        """End the client's side at once (abort its connection, or reset its HTTP/2 stream)."""

    def switchProtocols(
        self, head: bytes, upstream: ITCPTransport, idle_timeout: float, send_timeout: float
    ) -> Tunnel | None:
        """
        The upstream switched protocols: send the client ``head`` (the ``101``) and join it to ``upstream`` in a
        tunnel, returned; ``None`` if this request cannot.
        """
