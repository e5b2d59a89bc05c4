"""
What the test helpers record: the requests a proxy (or a fake origin) saw, and the connections it served, so that a
test can look at them and so that stopping closes every one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import cast
from weakref import WeakKeyDictionary

from twisted.internet.interfaces import IAddress, IProtocol, IReactorTime, ITCPTransport
from twisted.web.resource import IResource
from twisted.web.server import Request, Site

from txrevproxy._server.accesslog import LoggedRequest
from txrevproxy._server.channel import ProxySite
from txrevproxy._server.config import ClientConfig
from txrevproxy._server.request import StreamedRequest
from txrevproxy._server.web import header_list
from txrevproxy.resource import ReverseProxyResource


@dataclass(frozen=True)
class SeenRequest:
    """
    One request as a server received it.

    :ivar method: ``"GET"``, ...
    :ivar target: the request target as sent (``"/path?query"``).
    :ivar headers: every header in order, as ``(name, value)`` text pairs (latin-1 decoded).
    :ivar client: the client's address, ``"host:port"``.
    :ivar status: the status of the response sent, once sent (``None`` before).
    :ivar body: the request body, at a fake origin (``None`` at the proxy, which streams bodies and keeps nothing).
    """

    method: str
    target: str
    headers: tuple[tuple[str, str], ...]
    client: str
    status: int | None = None
    body: bytes | None = None

    def header(self, name: str) -> str | None:
        """
        The last value of header ``name`` (any case), or ``None``.
        """
        values = self.header_values(name)
        return values[-1] if values else None

    def header_values(self, name: str) -> list[str]:
        """
        Every value of header ``name`` (any case), in order.
        """
        name = name.lower()
        return [value for key, value in self.headers if key.lower() == name]


def _headers_of(request: Request) -> list[tuple[bytes, bytes]]:
    # The proxy's own requests keep the list they received (reading requestHeaders would regroup it).
    return request.headerList() if isinstance(request, StreamedRequest) else header_list(request)


def _seen(request: Request, body: bytes | None) -> SeenRequest:
    peer = request.getClientAddress()
    return SeenRequest(
        method=request.method.decode("latin-1"),
        target=request.uri.decode("latin-1"),
        headers=tuple((name.decode("latin-1"), value.decode("latin-1")) for name, value in _headers_of(request)),
        client=f"{getattr(peer, 'host', peer)}:{getattr(peer, 'port', '')}",
        body=body,
    )


def transport_of(channel: IProtocol) -> ITCPTransport | None:
    """
    The transport of a served connection (``Site`` wraps its ``HTTPChannel`` in a protocol that picks HTTP/1.1 or
    HTTP/2); ``None`` before it is connected.
    """
    transport: ITCPTransport | None = getattr(getattr(channel, "_channel", channel), "transport", None)
    return transport


def _closed(channel: IProtocol) -> bool:
    transport = transport_of(channel)
    return transport is not None and bool(getattr(transport, "disconnected", False))


class _Recording(Site):
    """
    Mixed into a ``Site``: records each request that reaches its resource and the status answered, and keeps the
    connections it serves.
    """

    def start_recording(self) -> None:
        self.seen: list[SeenRequest] = []
        self.channels: list[IProtocol] = []
        self._seen_at: WeakKeyDictionary[LoggedRequest, int] = WeakKeyDictionary()

    def request_body(self, request: Request) -> bytes | None:
        return None

    def buildProtocol(self, addr: IAddress) -> IProtocol | None:  # type: ignore[override]  # as ProxySite's
        channel: IProtocol | None = super().buildProtocol(addr)
        if channel is not None:
            self.channels = self.open_channels()
            self.channels.append(channel)
        return channel

    def getResourceFor(self, request: Request) -> IResource:
        self._seen_at[request] = len(self.seen)
        self.seen.append(_seen(request, self.request_body(request)))
        found: IResource = super().getResourceFor(request)
        return found

    def log(self, request: LoggedRequest) -> None:
        index = self._seen_at.pop(request, None)
        if index is not None:
            self.seen[index] = replace(self.seen[index], status=request.code)
        super().log(cast(Request, request))  # (typed as ProxySite's: the requests of this very site)

    def open_channels(self) -> list[IProtocol]:
        """
        The connections served that are not closed yet (including those not yet connected).
        """
        return [channel for channel in self.channels if not _closed(channel)]

    def abort_all(self) -> None:
        """
        Abort every open connection (a test is over).
        """
        for channel in self.open_channels():
            transport = transport_of(channel)
            if transport is not None:
                transport.abortConnection()


class RecordingProxySite(_Recording, ProxySite):
    """
    A :class:`~txrevproxy.ProxySite` serving a proxy resource, that records what it serves.
    """

    resource: ReverseProxyResource

    def __init__(
        self, resource: ReverseProxyResource, *, reactor: IReactorTime, client: ClientConfig | None = None
    ) -> None:
        super().__init__(resource, reactor=reactor, client=client)
        self.start_recording()


class RecordingOriginSite(_Recording, Site):
    """
    A plain ``twisted.web`` ``Site`` serving a fake origin resource, recording the requests (with their bodies).
    """

    noisy = False

    def __init__(self, resource: IResource, *, reactor: IReactorTime) -> None:
        super().__init__(resource, reactor=reactor)
        self.start_recording()

    def request_body(self, request: Request) -> bytes | None:
        content = request.content
        if content is None:
            return b""
        position = content.tell()
        content.seek(0)
        body: bytes = content.read()
        content.seek(position)
        return body
