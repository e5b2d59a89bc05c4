"""
HTTP/2 to clients over TLS (ALPN ``h2``), relayed to HTTP/1.1 upstreams by the same :class:`~txrevproxy._relay.Relay`.

Twisted's ``H2Connection`` speaks the protocol: framing, HPACK, flow control, priorities, and the h2 library's checks
on what a client sends (pseudo-headers present, single and first, none unknown; no connection-specific header such
as ``Connection``, ``Transfer-Encoding`` or ``TE`` other than ``trailers``; lowercase names; ``content-length``
agreeing with the DATA received). A client breaking one of those loses its connection (GOAWAY). This module adds
what the proxy needs on top:

- :class:`NegotiatedChannel`: per TLS connection, HTTP/2 when ALPN chose ``h2``, else the proxy's own HTTP/1.1
  channel, unchanged;
- :class:`ProxyH2Connection`: limits announced in SETTINGS and enforced (concurrent streams, header list size), the
  connection gate's slot released when the connection ends, and the body of a stream already answered (a 413)
  dropped instead of failing the connection;
- :class:`H2ProxyRequest`: each stream's request validated like an HTTP/1.1 one (``Host`` from ``:authority``,
  target, ``Host`` syntax, the ``_``-alias rule), its body kept up to ``max_body`` (``413`` past it) and relayed once
  complete. The response streams with per-stream backpressure (a stream whose flow-control window is exhausted
  pauses its upstream); a response the upstream cut short resets the stream (RST_STREAM) instead of ending it.
"""

from __future__ import annotations

from h2.settings import SettingCodes, Settings
from twisted.logger import Logger
from twisted.python.components import proxyForInterface
from twisted.internet.interfaces import IProtocol
from twisted.web._http2 import H2Connection
from twisted.web.server import Request

from ._relay import respond_error
from ._validate import validate_request

log = Logger(namespace="txrevproxy")

#: Default for ``SETTINGS_MAX_CONCURRENT_STREAMS``: streams one client connection may have open at once.
MAX_STREAMS = 100


class H2ProxyRequest(Request):
    """
    A request on an HTTP/2 stream: validated when complete, its body kept (up to the client limit) and relayed.
    """

    _refused = False
    _too_large: str | None = None  # a declared length over the limit: refused once the stream is set up
    _size = 0

    def _cap(self) -> int:
        return self.channel.site.client.max_body  # type: ignore[attr-defined, no-any-return]

    def gotLength(self, length: int | None) -> None:
        Request.gotLength(self, length)
        cap = self._cap()
        if cap and length is not None and length > cap:
            # Called while the stream is being made, before it can carry an answer.
            self._too_large = f"request body of {length} bytes is over the limit of {cap}"

    def handleContentChunk(self, data: bytes) -> None:
        if self._too_large is not None and not self._refused:
            self._refuse(413, self._too_large)
        if self._refused:
            return
        self._size += len(data)
        cap = self._cap()
        if cap and self._size > cap:
            self._refuse(413, f"request body over the limit of {cap} bytes")
            return
        Request.handleContentChunk(self, data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self._too_large is not None and not self._refused:
            self._refuse(413, self._too_large)
        if self._refused:
            return
        headers = [(name, value) for name, values in self.requestHeaders.getAllRawHeaders() for value in values]
        _, rejection = validate_request(command, path, b"HTTP/1.1", headers)
        if rejection is not None:
            self.method, self.uri, self.clientproto = command, path, version
            self._refuse(rejection.status, rejection.reason)
            return
        Request.requestReceived(self, command, path, version)

    def _refuse(self, status: int, reason: str) -> None:
        self._refused = True
        peer = self.getClientAddress()
        log.warn(
            "rejected HTTP/2 request from {peer}: {status} {reason}",
            peer=getattr(peer, "host", peer),
            status=status,
            reason=reason,
        )
        respond_error(self, status)


class ProxyH2Connection(H2Connection):
    """
    Twisted's HTTP/2 connection with the proxy's limits and bookkeeping.
    """

    max_streams = MAX_STREAMS
    max_header_list = 32768
    gate: object = None

    def connectionMade(self) -> None:
        # The settings announced in the connection preface (initiate_connection, in super) and enforced from then on.
        self.conn.local_settings = Settings(
            client=False,
            initial_values={
                SettingCodes.MAX_CONCURRENT_STREAMS: self.max_streams,
                SettingCodes.MAX_HEADER_LIST_SIZE: self.max_header_list,
            },
        )
        self.conn.decoder.max_header_list_size = self.max_header_list
        super().connectionMade()

    def connectionLost(self, reason: object, _cancelTimeouts: bool = True) -> None:
        gate, self.gate = self.gate, None
        if gate is not None:
            gate.closed()  # type: ignore[attr-defined]
        super().connectionLost(reason, _cancelTimeouts)

    def _requestDataReceived(self, event: object) -> None:
        if event.stream_id not in self.streams:  # type: ignore[attr-defined]
            # The rest of a body whose request was answered already (413): dropped, the connection's window
            # reopened so that other streams go on.
            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)  # type: ignore[attr-defined]
            return
        super()._requestDataReceived(event)

    def _requestEnded(self, event: object) -> None:
        if event.stream_id in self.streams:  # type: ignore[attr-defined]
            super()._requestEnded(event)


class NegotiatedChannel(proxyForInterface(IProtocol, "_channel")):  # type: ignore[misc]
    """
    The protocol of a TLS connection: the proxy's HTTP/1.1 channel, replaced by a :class:`ProxyH2Connection` at the
    first bytes if ALPN chose ``h2``.
    """

    def __init__(self, channel: object, site: object) -> None:
        super().__init__(channel)
        self._site = site
        self._chosen = False

    @property
    def transport(self) -> object:
        return self._channel.transport

    def dataReceived(self, data: bytes) -> None:
        if not self._chosen:
            self._chosen = True
            if getattr(self._channel.transport, "negotiatedProtocol", None) == b"h2":
                self._channel = self._http2(self._channel)
        self._channel.dataReceived(data)

    def _http2(self, channel: object) -> ProxyH2Connection:
        site = self._site
        transport = channel.transport  # type: ignore[attr-defined]
        gate = channel.leaveForHTTP2()  # type: ignore[attr-defined]
        connection = ProxyH2Connection(site.reactor)  # type: ignore[attr-defined]
        connection.gate = gate
        connection.max_streams = site.max_streams  # type: ignore[attr-defined]
        connection.max_header_list = site.client.head.header_section  # type: ignore[attr-defined]
        connection.requestFactory = H2ProxyRequest
        connection.site = site
        connection.factory = site
        connection.timeOut = site.timeOut  # type: ignore[attr-defined]
        connection.callLater = site.reactor.callLater  # type: ignore[attr-defined]
        connection.makeConnection(transport)
        transport.registerProducer(connection, True)
        return connection
