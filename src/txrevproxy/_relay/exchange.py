"""
One request's relay: from the moment the proxy decides where a request goes until its response is complete.

Owns the steps, in order: take a pooled upstream connection, send the head, stream the body (pausing the client
when the upstream is slow), wait for the response head (first-byte deadline), stream the response (pausing the
upstream when the client is slow), then finish or fail. Failures before the response head become 502/504 with a
short text body and a log line; failures after it abort the client connection so that a cut-short response is
never presented as complete.
"""

from __future__ import annotations

from attrs import field, frozen
from twisted.internet import defer, error
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from txrevproxy._http.framing import Framing, FramingError, Kind, parse_content_length
from txrevproxy._http.headers import ForwardingContext, TrustedNetworks, upstream_request_headers, values_of
from txrevproxy._http.validate import ResponseHead, relayed_headers
from txrevproxy._net.deadline import Deadline
from txrevproxy._net.producers import CallbackProducer
from txrevproxy._net.states import IdentityEnum, Transitions
from txrevproxy._net.tunnel import Tunnel
from txrevproxy._relay.interfaces import RelayedRequest
from txrevproxy._upstream.config import PoolConfig, UpstreamAddress
from txrevproxy._upstream.pool import ConnectTimeout, UpstreamPool
from txrevproxy._upstream.protocol import UpstreamProtocol, UpstreamTLSError

log = Logger(namespace="txrevproxy")


@frozen
class ProxyConfig:
    """
    Everything that shapes how requests are relayed; built once, shared by every request.

    :ivar response_timeout: seconds from the request being sent until the response head starts arriving.
    :ivar preserve_host: send the client's ``Host`` upstream instead of the upstream's own.
    :ivar trusted: client networks whose ``X-Forwarded-*``/``Forwarded`` headers are appended to.
    :ivar pool: the upstream connection pool's settings.
    :ivar upgrades: relay protocol upgrades (WebSocket, ...): an upstream's ``101`` turns the connection into a
        tunnel. Off, ``Upgrade`` is dropped like any hop-by-hop header.
    :ivar tunnel_idle_timeout: seconds a tunnel may carry no byte either way before both connections are closed.
    """

    response_timeout: float = 30.0
    preserve_host: bool = False
    trusted: TrustedNetworks = field(factory=TrustedNetworks)
    pool: PoolConfig = field(factory=PoolConfig)
    upgrades: bool = True
    tunnel_idle_timeout: float = 300.0


_VIA_VERSIONS = {b"HTTP/1.0": b"1.0", b"HTTP/2": b"2"}


def forwarding_context(
    request: RelayedRequest, headers: list[tuple[bytes, bytes]], trusted: TrustedNetworks
) -> ForwardingContext:
    peer = request.getClientAddress()
    ip = peer.host if isinstance(peer, (IPv4Address, IPv6Address)) else "unknown"
    hosts = values_of(headers, b"host")
    return ForwardingContext(
        client_ip=ip,
        proto=b"https" if request.isSecure() else b"http",
        host=hosts[0] if hosts else None,
        trusted=ip in trusted,
        version=_VIA_VERSIONS.get(request.clientproto, b"1.1"),
    )


class RelayState(IdentityEnum):
    """
    Where a :class:`Relay` is; it moves by a :class:`RelayEvent` (see ``_MOVES``).
    """

    CONNECTING = "connecting"  # waiting for an upstream connection
    SENDING = "sending"  # the request going out, no response yet
    STREAMING = "streaming"  # the response head relayed, its body on its way
    DONE = "done"  # over, whatever the outcome: nothing leaves it


class RelayEvent(IdentityEnum):
    """
    What moves a :class:`Relay`'s state.
    """

    CONNECTED = "connected"  # an upstream connection to send on
    RETRY = "retry"  # a reused connection was found closed: once more on a fresh one
    RESPONSE = "response"  # the response head is relayed
    SWITCHED = "switched"  # a 101: the connections became a tunnel
    COMPLETED = "completed"  # the response is complete
    FAILED = "failed"  # the upstream failed: an error answer, or the client connection aborted
    CANCELLED = "cancelled"  # the client side ended the request, or the proxy is stopping


CONNECTING, SENDING, STREAMING, DONE = RelayState.CONNECTING, RelayState.SENDING, RelayState.STREAMING, RelayState.DONE
CONNECTED, RETRY, RESPONSE, SWITCHED, COMPLETED, FAILED, CANCELLED = (
    RelayEvent.CONNECTED,
    RelayEvent.RETRY,
    RelayEvent.RESPONSE,
    RelayEvent.SWITCHED,
    RelayEvent.COMPLETED,
    RelayEvent.FAILED,
    RelayEvent.CANCELLED,
)

#: Every move of a relay's state; any other (state, event) is a programming error.
_MOVES = Transitions[RelayState, RelayEvent](
    "Relay",
    {
        (CONNECTING, CONNECTED): SENDING,
        (SENDING, RETRY): CONNECTING,
        (SENDING, RESPONSE): STREAMING,
        (SENDING, SWITCHED): DONE,
        (STREAMING, COMPLETED): DONE,
        **{(state, FAILED): DONE for state in (CONNECTING, SENDING, STREAMING)},
        **{(state, CANCELLED): DONE for state in (CONNECTING, SENDING, STREAMING)},
    },
)


class Relay:
    """
    Relays one request to ``address`` and its response back.

    Its :attr:`state` (a :class:`RelayState`) moves through ``_MOVES``: ``connecting`` ─connected─▶ ``sending``
    ─response─▶ ``streaming`` ─completed─▶ ``done``; ``sending`` ─retry─▶ ``connecting`` (once), ─switched─▶
    ``done``; any but ``done`` ─failed or cancelled─▶ ``done``; nothing leaves ``done``.
    """

    def __init__(
        self,
        request: RelayedRequest,
        pool: UpstreamPool,
        address: UpstreamAddress,
        target: bytes,
        host: bytes,
        config: ProxyConfig,
        reactor: IReactorTime,
    ) -> None:
        self.request = request
        self.pool = pool
        self.address = address
        self.target = target
        self.body = request.bodySource()
        self.config = config
        self.reactor = reactor
        self._state = CONNECTING
        self.method = request.method
        incoming = request.headerList()
        if config.preserve_host:
            host = (values_of(incoming, b"host") or [host])[0]
        self.headers = upstream_request_headers(incoming, forwarding_context(request, incoming, config.trusted), host)
        self.upgrade = request.upgrade if config.upgrades else None
        if self.upgrade is not None:
            self.headers += [(b"Connection", b"upgrade"), (b"Upgrade", self.upgrade)]
        self._proto: UpstreamProtocol | None = None
        self._connecting: defer.Deferred[UpstreamProtocol] | None = None
        self._retried = False
        self._send_deadline: Deadline | None = None  # made at the first stall of the upload
        self._downloading = False  # registered as the producer of the client's response

    @property
    def state(self) -> RelayState:
        return self._state

    # -- steps ---------------------------------------------------------------------------------------------

    def start(self) -> None:
        self.request.whenLost(self._clientGone)
        proto = self.pool.take(self.address)
        if proto is not None:
            self._connected(proto)
        else:
            self._connect(self.pool.connect(self.address))

    def _connect(self, d: defer.Deferred[UpstreamProtocol]) -> None:
        self._connecting = d
        d.addCallbacks(self._connected, self._connectFailed)

    def _connected(self, proto: UpstreamProtocol) -> None:
        self._connecting = None
        if self._state is DONE:
            self.pool.release(proto)
            return
        self._state = _MOVES[CONNECTED][self._state]
        self._proto = proto
        proto.sendRequest(self.method, self.target, self.headers, self.body.framing, self, self.upgrade)
        if self.body.framing.kind is Kind.NONE:
            self._requestSent()
        else:
            upload = CallbackProducer(self._uploadPaused, self._uploadResumed, self._uploadStopped)
            proto.transport.registerProducer(upload, True)
            self.body.start(self)

    def _connectFailed(self, failure: Failure) -> None:
        self._connecting = None
        if self._state is DONE:
            return
        if self.pool.closed:
            self.upstreamAbandoned("the proxy is shutting down")
            return
        if failure.check(ConnectTimeout, defer.TimeoutError, error.TimeoutError):
            self._respondError(504, f"connecting to upstream timed out after {self.config.pool.connect_timeout:g}s")
        elif failure.check(UpstreamTLSError):
            self._respondError(502, f"TLS with upstream failed: {failure.getErrorMessage()}")
        else:
            self._respondError(502, f"upstream unreachable: {failure.getErrorMessage()}")

    # BodySink: the request body on its way up.

    def bodyData(self, data: bytes) -> None:
        if self._proto is not None:
            self._proto.writeBody(data)

    def bodyEnd(self) -> None:
        proto = self._proto
        if proto is None:
            return
        proto.transport.unregisterProducer()
        self._stopSendDeadline()
        proto.endBody()
        if self._state is SENDING:
            self._requestSent()

    def bodyFailed(self, reason: str) -> None:
        """
        The client's body was refused part-way (the channel answers the client): abandon the upstream request, and
        stop relaying a response the client may now be answered an error in place of.
        """
        self._stopDownloading()
        self._abandon(f"request body refused ({reason})")

    def _requestSent(self) -> None:
        if self._proto is not None:
            self._proto.expectResponseWithin(self.config.response_timeout, self._responseTimedOut)

    def _uploadStopped(self) -> None:
        self.body.stop()

    # The upload deadline. The upstream transport pauses the upload when its write buffer is full and resumes it
    # once drained; a pause that lasts send_timeout means the upstream stopped reading. Like the read deadline,
    # set at each pause and cleared (left to lapse) at each resume: its one DelayedCall re-arms lazily, never per
    # chunk.

    def _uploadPaused(self) -> None:
        deadline = self._send_deadline
        if deadline is None:
            deadline = self._send_deadline = Deadline(self.reactor, self._checkSendDeadline)
        deadline.set(self.config.pool.send_timeout)
        self.body.pause()

    def _uploadResumed(self) -> None:
        if self._send_deadline is not None:
            self._send_deadline.clear()  # before resuming: the writes it causes may pause the upload again
        self.body.resume()

    def _checkSendDeadline(self) -> None:
        if self._proto is None or (self._state is not SENDING and self._state is not STREAMING):
            return
        timeout = self.config.pool.send_timeout
        self._abortUpstream()
        self.upstreamFailed(f"upstream stopped reading the request body for {timeout:g}s (send timeout)", False, 504)

    def _stopSendDeadline(self) -> None:
        if self._send_deadline is not None:
            self._send_deadline.cancel()

    def _responseTimedOut(self) -> None:
        if self._state is not SENDING:
            return
        self._abortUpstream()
        self._respondError(504, f"upstream sent no response within {self.config.response_timeout:g}s")

    # ResponseReceiver: the response on its way down.

    def responseHead(self, head: ResponseHead, framing: Framing) -> None:
        self._cancelTimer()
        if self._state is not SENDING:
            return
        self._state = _MOVES[RESPONSE][self._state]
        length = framing.length if framing.kind is Kind.LENGTH else _declared_length(head)
        self.request.writeHead(head.status, head.reason, relayed_headers(head), length)

    def responseSwitching(self, head: ResponseHead) -> Tunnel | None:
        """
        ``101`` to a protocol the client offered: the client gets the ``101`` head and both connections become a
        tunnel (the upstream protocol checked the offer).
        """
        self._cancelTimer()
        if self._state is not SENDING or self._proto is None:
            return None
        self._state = _MOVES[SWITCHED][self._state]
        lines = [b"HTTP/1.1 101 ", head.reason or b"Switching Protocols", b"\r\n"]
        for name, value in relayed_headers(head):
            lines += (name, b": ", value, b"\r\n")
        lines += (b"Connection: upgrade\r\nUpgrade: ", values_of(head.headers, b"upgrade")[0], b"\r\n\r\n")
        config = self.config
        return self.request.switchProtocols(
            b"".join(lines), self._proto.transport, config.tunnel_idle_timeout, config.pool.send_timeout
        )

    def responseWaiting(self) -> None:
        """
        The head (and any body bytes that came with it) is in and more body bytes are awaited: a head held back
        for them goes to the client now, and from now on a slow client pauses the upstream. (A response that
        arrives whole, the common small case, needs neither.)
        """
        if self._state is not STREAMING:
            return
        self.request.flushHead()
        if not self._downloading:
            self._downloading = True
            download = CallbackProducer(self._pauseResponse, self._resumeResponse, self._clientGone)
            self.request.registerProducer(download, True)

    def _stopDownloading(self) -> None:
        if self._downloading:
            self._downloading = False
            self.request.unregisterProducer()

    def responseData(self, data: bytes) -> None:
        if self._state is STREAMING:
            self.request.write(data)

    def responseEnd(self) -> None:
        if self._state is not STREAMING:
            return
        self._state = _MOVES[COMPLETED][self._state]
        self._proto = None
        self._stopSendDeadline()
        self.body.stop()
        self._stopDownloading()
        self.request.finish()

    def upstreamFailed(self, reason: str, retryable: bool, status: int = 502) -> None:
        self._cancelTimer()
        self._stopSendDeadline()
        self._proto = None
        if self._state is SENDING:
            if retryable and not self._retried and self.body.framing.kind is Kind.NONE:
                # A reused connection the upstream had already closed: try once more on a fresh one.
                self._retried = True
                self._state = _MOVES[RETRY][self._state]
                self._connect(self.pool.connect(self.address))
                return
            self._respondError(status, reason)
        elif self._state is STREAMING:
            if self.request.dropHead():
                # The head was held for the first body bytes: nothing of the upstream's response has reached the
                # client, so it can still get a proper error instead of an aborted connection.
                self._stopDownloading()
                self._respondError(status, reason)
                return
            self._state = _MOVES[FAILED][self._state]
            self.body.stop()
            log.warn(
                "{method} {target}: {reason} (upstream {upstream}); aborting the client connection",
                method=_text(self.method),
                target=_text(self.target),
                reason=reason,
                upstream=str(self.address),
            )
            self._stopDownloading()
            self.request.abortClient()

    def upstreamAbandoned(self, reason: str) -> None:
        """
        The proxy itself dropped the upstream connection (it is stopping): not an upstream failure, so no 502; the
        client connection is closed without an answer.
        """
        self._cancelTimer()
        self._stopSendDeadline()
        self._proto = None
        if self._state is DONE:
            return
        streaming = self._state is STREAMING
        self._state = _MOVES[CANCELLED][self._state]
        self.body.stop()
        log.info(
            "{method} {target}: {reason}; request abandoned (upstream {upstream})",
            method=_text(self.method),
            target=_text(self.target),
            reason=reason,
            upstream=str(self.address),
        )
        if streaming:
            self._stopDownloading()
        self.request.abortClient()

    # -- backpressure and cancellation -------------------------------------------------------------------

    def _pauseResponse(self) -> None:
        if self._proto is not None:
            self._proto.pauseReading()

    def _resumeResponse(self) -> None:
        if self._proto is not None:
            self._proto.resumeReading()

    def _clientGone(self, reason: object = None) -> None:
        self._abandon("client went away")

    def _abandon(self, why: str) -> None:
        """
        The client side ended the request: stop everything and drop the upstream request, whatever its step.
        """
        if self._state is DONE:
            return
        self._state = _MOVES[CANCELLED][self._state]
        self._cancelTimer()
        self._stopSendDeadline()
        self.body.stop()
        if self._connecting is not None:
            self._connecting.cancel()
        self._abortUpstream()
        log.info(
            "{method} {target}: {why}; upstream request aborted",
            method=_text(self.method),
            target=_text(self.target),
            why=why,
        )

    def _abortUpstream(self) -> None:
        proto, self._proto = self._proto, None
        if proto is not None:
            proto.abort()

    def _cancelTimer(self) -> None:
        if self._proto is not None:
            self._proto.expectResponseWithin(None)

    def _respondError(self, status: int, reason: str) -> None:
        self._state = _MOVES[FAILED][self._state]
        self._stopSendDeadline()
        self.body.stop()
        log.warn(
            "{method} {target}: {status} {reason} (upstream {upstream})",
            method=_text(self.method),
            target=_text(self.target),
            status=status,
            reason=reason,
            upstream=str(self.address),
        )
        self.request.respondError(status)


def _declared_length(head: ResponseHead) -> int | None:
    # HEAD and 304 responses may state the length of the body they do not carry; pass it on when valid.
    if head.status == 204 or head.status < 200:
        return None
    try:
        lengths = head.content_length
        return parse_content_length(values_of(head.headers, b"content-length") if lengths is None else lengths)
    except FramingError:
        return None


def _text(value: bytes) -> str:
    return value.decode("latin-1")
