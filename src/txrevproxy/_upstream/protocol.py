"""
The upstream side's wire protocol: a lean HTTP/1.1 client.

:class:`UpstreamProtocol` sends one request at a time and parses the response strictly, handing the head and
body pieces to a receiver (the relay) as they arrive. It knows its pool only as a :class:`ConnectionOwner`: the
clock and settings it runs on, and whom it tells that it opened, went idle, became a tunnel or closed (the pool,
:class:`~txrevproxy._upstream.pool.UpstreamPool`, keeps the idle ones and hands out only clean ones).

Responses are parsed strictly; anything invalid fails the request (502 if nothing was sent to the client yet,
otherwise the client connection is aborted) and the connection is discarded, never pooled:

- :data:`MAX_RESPONSE_HEAD` (64 KiB): the most bytes a response head may take, status line to blank line;
- :data:`MAX_RESPONSE_HEADERS` (100): the most header lines in one response head;
- syntax and framing: see :func:`~txrevproxy._http.validate.parse_response_head` (CRLF only, no obs-fold, ...) and
  :func:`~txrevproxy._http.framing.response_framing` (no Content-Length with Transfer-Encoding, one length, only
  ``chunked`` as transfer coding), then the chunked decoder.

Deadlines (:class:`PoolConfig`): ``connect_timeout``, ``idle_timeout`` for pooled connections, ``read_timeout``
for an upstream silent mid-body (the relay owns ``send_timeout`` for a stalled upload and the response timeout).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol as TypingProtocol

from twisted.internet import defer
from twisted.internet.interfaces import IHandshakeListener, IReactorTime, ITCPTransport
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from txrevproxy._http.framing import (
    LAST_CHUNK,
    ChunkedDecoder,
    Framing,
    FramingError,
    Kind,
    encode_chunk,
    response_framing,
)
from txrevproxy._http.headers import upgrade_accepted
from txrevproxy._http.validate import InvalidResponse, ResponseHead, parse_response_head
from txrevproxy._net.deadline import Deadline
from txrevproxy._net.sending import send
from txrevproxy._net.states import IdentityEnum, Transitions
from txrevproxy._net.transports import ITCPStreamTransport
from txrevproxy._net.tunnel import Tunnel
from txrevproxy._tls.client import tls_failure
from txrevproxy._upstream.config import PoolConfig, UpstreamAddress

log = Logger(namespace="txrevproxy.upstream")

#: Bytes a response head may take, from the status line to the blank line that ends it (inclusive).
MAX_RESPONSE_HEAD = 65536
#: Header lines a response head may have.
MAX_RESPONSE_HEADERS = 100


class ConnectionState(IdentityEnum):
    """
    Where an :class:`UpstreamProtocol` is; it moves by a :class:`ConnectionEvent` (see ``_MOVES``).
    """

    IDLE = "idle"  # in the pool or just connected: ready for a request
    HEAD = "head"  # request sent, reading the response head
    BODY = "body"  # reading the response body
    TUNNEL = "tunnel"  # after a 101: raw bytes to a tunnel
    DEAD = "dead"  # never to be used again


class ConnectionEvent(IdentityEnum):
    """
    What moves an :class:`UpstreamProtocol`'s state.
    """

    SEND = "send"  # a request's head is written
    RESPONSE = "response"  # a final response head is in
    SWITCH = "switch"  # a 101 to a protocol the request offered is in
    REUSABLE = "reusable"  # the response is complete, the connection clean: back to the pool
    SPENT = "spent"  # the response is complete, the connection not reusable: closed
    DISCARD = "discard"  # the pool closes an idle connection it does not keep
    FAIL = "fail"  # the proxy drops the connection: invalid response, timeout, request abandoned, tunnel refused
    LOST = "lost"  # the transport is gone


IDLE, HEAD, BODY, TUNNEL, DEAD = (
    ConnectionState.IDLE,
    ConnectionState.HEAD,
    ConnectionState.BODY,
    ConnectionState.TUNNEL,
    ConnectionState.DEAD,
)
SEND, RESPONSE, SWITCH, REUSABLE, SPENT, DISCARD, FAIL, LOST = (
    ConnectionEvent.SEND,
    ConnectionEvent.RESPONSE,
    ConnectionEvent.SWITCH,
    ConnectionEvent.REUSABLE,
    ConnectionEvent.SPENT,
    ConnectionEvent.DISCARD,
    ConnectionEvent.FAIL,
    ConnectionEvent.LOST,
)

#: Every move of a connection's state; any other (state, event) is a programming error.
_MOVES = Transitions[ConnectionState, ConnectionEvent](
    "UpstreamProtocol",
    {
        (IDLE, SEND): HEAD,
        (HEAD, RESPONSE): BODY,
        (HEAD, SWITCH): TUNNEL,
        (BODY, REUSABLE): IDLE,
        (BODY, SPENT): DEAD,
        (IDLE, DISCARD): DEAD,
        **{(state, FAIL): DEAD for state in (IDLE, HEAD, BODY, TUNNEL)},
        **{(state, LOST): DEAD for state in ConnectionState},
    },
)


class ResponseReceiver(TypingProtocol):
    """
    What an :class:`UpstreamProtocol` tells about the response to the request it is sending.
    """

    def responseHead(self, head: ResponseHead, framing: Framing) -> None: ...

    def responseWaiting(self) -> None:
        """
        The head (and any body bytes that came with it) has been delivered; more body bytes are awaited.
        """

    def responseData(self, data: bytes) -> None: ...

    def responseEnd(self) -> None: ...

    def upstreamFailed(self, reason: str, retryable: bool, status: int = 502) -> None:
        """
        The upstream failed; ``status`` is what to answer if nothing was sent to the client yet (504 for timeouts).
        """

    def responseSwitching(self, head: ResponseHead) -> Tunnel | None:
        """
        The upstream switched protocols (``101``): the tunnel its bytes go to from now on, or ``None`` to drop it.
        """

    def upstreamAbandoned(self, reason: str) -> None:
        """
        The connection was closed by the proxy itself (shutting down), not by the upstream.
        """


class ConnectionOwner(TypingProtocol):
    """
    What an :class:`UpstreamProtocol` needs of whoever made it (the pool): the clock and settings its deadlines run
    on, whether it is closed (the proxy is stopping), and word of each turn in the connection's life.
    """

    @property
    def reactor(self) -> IReactorTime: ...

    @property
    def config(self) -> PoolConfig: ...

    @property
    def closed(self) -> bool: ...

    def connectionOpened(self, proto: UpstreamProtocol) -> None:
        """The connection is made."""

    def release(self, proto: UpstreamProtocol) -> None:
        """The connection is idle and clean again: reuse it, or close it (:meth:`~UpstreamProtocol.discard`)."""

    def tunnelOpened(self, proto: UpstreamProtocol) -> None:
        """The connection carries a tunnel from now on (:attr:`~UpstreamProtocol.tunnel`); it is never reused."""

    def connectionClosed(self, proto: UpstreamProtocol) -> None:
        """The connection is gone."""


@implementer(IHandshakeListener)
class UpstreamProtocol(Protocol):
    """
    One HTTP/1.1 connection to an upstream, carrying one request at a time.

    Its :attr:`state` (a :class:`ConnectionState`) moves only by its own events, through ``_MOVES``: ``idle``
    ─send─▶ ``head`` ─response─▶ ``body`` ─reusable─▶ ``idle`` (or ─spent─▶ ``dead``); ``head`` ─switch─▶
    ``tunnel``; ``idle`` ─discard─▶ ``dead`` (the pool's doing, through :meth:`discard`); any ─fail or lost─▶ ``dead``.
    """

    transport: ITCPStreamTransport  # (set by makeConnection)
    idle_deadline: Deadline | None = None  # the pool's: when it closes this connection, idle in it
    tunnel: Tunnel | None = None  # after a 101: where the upstream's bytes go
    _toTunnel: Callable[[bytes], None]  # after a 101: the tunnel's fromUpstream
    _upgrade: bytes | None = None

    def __init__(self, owner: ConnectionOwner, address: UpstreamAddress) -> None:
        self.owner = owner
        self.address = address
        self._state = IDLE
        self.requests_sent = 0
        self._receiver: ResponseReceiver | None = None
        self._method = b""
        self._buffer = b""
        self._body_kind = Kind.NONE  # how the response body being read is framed
        self._remaining = 0
        self._decoder: ChunkedDecoder | None = None
        self._chunked_upload = False
        self._request_done = False
        self._keep_alive = True
        self._got_bytes = False
        self._paused = False
        reactor = owner.reactor
        self._read_timeout = owner.config.read_timeout
        self._head_deadline = Deadline(reactor, self._checkHeadDeadline)
        self._read_deadline = Deadline(reactor, self._checkReadDeadline)
        #: Over TLS, until the handshake is done: fires with this protocol then, or fails with
        #: :class:`UpstreamTLSError` (the pool's ``connect`` waits for it, under the connect timeout).
        self.handshake: defer.Deferred[UpstreamProtocol] | None = None
        if address.scheme == "https":
            self.handshake = defer.Deferred(self._cancelHandshake)

    def _cancelHandshake(self, handshake: defer.Deferred[UpstreamProtocol]) -> None:
        self.handshake = None
        if self.transport is not None:
            self.transport.abortConnection()

    def handshakeCompleted(self) -> None:
        # A certificate that fails the name check aborts the connection during the handshake, which still completes:
        # connectionLost says why.
        if self.handshake is None or self.transport.disconnecting:
            return
        handshake, self.handshake = self.handshake, None
        handshake.callback(self)

    @property
    def state(self) -> ConnectionState:
        return self._state

    @property
    def ready(self) -> bool:
        """
        Whether the connection is idle and clean: a request may be sent on it.
        """
        return self._state is IDLE

    def discard(self) -> None:
        """
        Close this idle connection (the pool does not keep it): it is never used again.
        """
        self._state = _MOVES[DISCARD][self._state]
        self.transport.loseConnection()

    def connectionMade(self) -> None:
        self.owner.connectionOpened(self)
        if ITCPTransport.providedBy(self.transport):
            self.transport.setTcpNoDelay(True)

    # -- sending -------------------------------------------------------------------------------------------

    def sendRequest(
        self,
        method: bytes,
        target: bytes,
        headers: Sequence[tuple[bytes, bytes]],
        body: Framing,
        receiver: ResponseReceiver,
        upgrade: bytes | None = None,
    ) -> None:
        """
        Write the request head; the body (if ``body`` says there is one) follows through :meth:`writeBody`.
        ``upgrade``: the protocols offered in the request's ``Upgrade`` header, to which a ``101`` may switch.
        """
        self._state = _MOVES[SEND][self._state]
        self._upgrade = upgrade
        self.requests_sent += 1
        self._receiver = receiver
        self._method = method
        self._got_bytes = False
        self._keep_alive = True
        self._chunked_upload = body.kind is Kind.CHUNKED
        self._request_done = body.kind is Kind.NONE
        out = [b"%s %s HTTP/1.1" % (method, target), *map(b": ".join, headers)]
        if body.kind is Kind.LENGTH:
            assert body.length is not None  # (a length framing has its length)
            out.append(b"Content-Length: %d" % (body.length,))
        elif self._chunked_upload:
            out.append(b"Transfer-Encoding: chunked")
        out.append(b"\r\n")
        send(self.transport, b"\r\n".join(out))

    def writeBody(self, data: bytes) -> None:
        if self._state is DEAD or not data:
            return
        if self._chunked_upload:
            send(self.transport, b"".join(encode_chunk(data)))
        else:
            send(self.transport, data)

    def endBody(self) -> None:
        if self._state is DEAD:
            return
        if self._chunked_upload:
            send(self.transport, LAST_CHUNK)
        self._request_done = True

    # -- flow control --------------------------------------------------------------------------------------

    def pauseReading(self) -> None:
        if not self._paused and self._state is not DEAD:
            self._paused = True
            self.transport.pauseProducing()

    def resumeReading(self) -> None:
        if self._paused and self._state is not DEAD:
            self._paused = False
            if self._state is BODY:
                # The paused time was the client's; the upstream's silence is counted from now.
                self._read_deadline.set(self._read_timeout)
            self.transport.resumeProducing()

    # -- the response deadline (request sent, no response head yet) ------------------------------------------
    #
    # Like the read deadline, one Deadline per connection, never cancelled while the connection lives: stopping it
    # only forgets what to call (the deadline, when due, finds nothing expected), so that a connection that answers
    # every request in time costs no timer, nor any call, per request.

    _head_expired: Callable[[], object] | None = None

    def expectResponseWithin(self, seconds: float | None, expired: Callable[[], object] | None = None) -> None:
        """
        Call ``expired()`` unless the response head is complete within ``seconds``; ``None`` to stop expecting.
        """
        if seconds is None:
            self._head_expired = None
            return
        self._head_expired = expired
        self._head_deadline.set(seconds)

    def _checkHeadDeadline(self) -> None:
        if self._head_expired is None or self._state is not HEAD:
            return
        expired, self._head_expired = self._head_expired, None
        expired()

    # -- the mid-body read deadline --------------------------------------------------------------------------
    #
    # Cheap on the hot path: each body read only moves the deadline (a stored time); its one DelayedCall re-arms
    # itself for the remainder when it fires. While reading is paused it lapses, and resumeReading sets it again.

    def _checkReadDeadline(self) -> None:
        if self._state is not BODY or self._paused:
            return
        self._fail(f"upstream sent nothing for {self._read_timeout:g}s mid-body (read timeout)", status=504)

    def _stopReadDeadline(self) -> None:
        self._read_deadline.cancel()

    def abort(self) -> None:
        """
        Drop the connection now: the request is abandoned and the connection is never reused.
        """
        self._receiver = None
        self._head_expired = None
        self._stopReadDeadline()
        if self._state is not DEAD:
            self._state = _MOVES[FAIL][self._state]
            self.transport.abortConnection()

    # -- receiving -----------------------------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        self._got_bytes = True
        state = self._state
        if state is BODY:
            self._read_deadline.set(self._read_timeout)
            self._bodyReceived(data)
        elif state is HEAD:
            self._headReceived(data)
        elif state is TUNNEL:
            self._toTunnel(data)
        elif state is IDLE:
            self._fail("upstream sent data while idle")

    def _headReceived(self, data: bytes) -> None:
        buffer = self._buffer + data if self._buffer else data
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end + 4 > MAX_RESPONSE_HEAD or (end < 0 and len(buffer) >= MAX_RESPONSE_HEAD):
                self._fail("response head too large")
                return
            if end < 0:
                if buffer.count(b"\n") != buffer.count(b"\r\n"):
                    self._fail("bare LF in response head")
                else:
                    self._buffer = buffer
                return
            try:
                head = parse_response_head(buffer[:end], max_headers=MAX_RESPONSE_HEADERS)
            except InvalidResponse as e:
                self._fail(str(e))
                return
            buffer = buffer[end + 4 :]
            if head.status == 101:
                self._switch(head, buffer)
                return
            if head.status >= 200:
                break
            # Interim 1xx responses are not relayed; the final response follows.
        self._buffer = b""
        self._head_expired = None
        try:
            framing = response_framing(
                self._method, head.status, head.headers, head.transfer_encoding, head.content_length
            )
        except FramingError as e:
            self._fail(e.reason)
            return
        tokens = head.connection
        # A connection that carried an upgrade offer is not reused, whatever the answer.
        self._keep_alive = (
            head.version == b"HTTP/1.1"
            and b"close" not in tokens
            and framing.kind is not Kind.CLOSE
            and self._upgrade is None
        )
        self._body_kind = framing.kind
        self._state = _MOVES[RESPONSE][self._state]
        assert self._receiver is not None
        self._receiver.responseHead(head, framing)
        if self._state is not BODY:
            return  # the receiver abandoned the request
        if framing.kind is Kind.NONE:
            self._complete(buffer)
        elif framing.kind is Kind.LENGTH:
            self._remaining = framing.length or 0
            if buffer:
                self._bodyReceived(buffer)
        elif framing.kind is Kind.CHUNKED:
            self._decoder = ChunkedDecoder(self._deliver, status=502)
            if buffer:
                self._bodyReceived(buffer)
        elif buffer:
            self._deliver(buffer)
        if self._state is BODY:
            self._read_deadline.set(self._read_timeout)
        if self._state is BODY and self._receiver is not None:
            self._receiver.responseWaiting()

    def _switch(self, head: ResponseHead, rest: bytes) -> None:
        """
        ``101 Switching Protocols``: valid only to a protocol the request offered; the connection then carries the
        new protocol's bytes, through the tunnel the receiver makes, and never returns to the pool.
        """
        if self._upgrade is None:
            self._fail("unexpected 101 Switching Protocols")
            return
        if not upgrade_accepted(self._upgrade, head.headers):
            self._fail("101 Switching Protocols to a protocol the client did not offer")
            return
        self._state = _MOVES[SWITCH][self._state]
        self._buffer = b""
        self._head_expired = None
        self._stopReadDeadline()
        receiver, self._receiver = self._receiver, None
        assert receiver is not None
        tunnel = self.tunnel = receiver.responseSwitching(head)
        if tunnel is None:
            self._state = _MOVES[FAIL][self._state]
            self.transport.abortConnection()
            return
        self._toTunnel = tunnel.fromUpstream
        self.owner.tunnelOpened(self)
        if rest:
            tunnel.fromUpstream(rest)
        if self.owner.closed:
            tunnel.shutdown()

    def _deliver(self, data: bytes) -> None:
        if self._receiver is not None:
            self._receiver.responseData(data)

    def _bodyReceived(self, data: bytes) -> None:
        kind = self._body_kind
        if kind is Kind.LENGTH:
            if len(data) < self._remaining:
                self._remaining -= len(data)
                self._deliver(data)
                return
            piece, rest = data[: self._remaining], data[self._remaining :]
            self._remaining = 0
            if piece:
                self._deliver(piece)
            if self._state is BODY:
                self._complete(rest)
        elif kind is Kind.CHUNKED:
            assert self._decoder is not None
            try:
                after = self._decoder.feed(data)  # what follows the last chunk, once it is in
            except FramingError as e:
                self._fail(e.reason)
                return
            if after is not None and self._state is BODY:
                self._complete(after)
        else:
            self._deliver(data)

    def _complete(self, extra: bytes) -> None:
        """
        The response is complete: tell the receiver, then pool or close the connection.
        """
        receiver, self._receiver = self._receiver, None
        self._decoder = None
        self._stopReadDeadline()
        reusable = self._keep_alive and self._request_done and not extra
        if reusable:
            self._state = _MOVES[REUSABLE][self._state]
            if self._paused:
                self._paused = False
                self.transport.resumeProducing()
            self.owner.release(self)
        else:
            self._state = _MOVES[SPENT][self._state]
            self.transport.loseConnection()
        if receiver is not None:
            receiver.responseEnd()

    def _fail(self, reason: str, status: int = 502) -> None:
        receiver, self._receiver = self._receiver, None
        self._head_expired = None
        self._stopReadDeadline()
        if self._state is not DEAD:
            self._state = _MOVES[FAIL][self._state]
            self.transport.abortConnection()
        if receiver is not None:
            receiver.upstreamFailed(reason, retryable=False, status=status)

    def connectionLost(self, reason: Failure | None = None) -> None:
        state = self._state
        self._state = _MOVES[LOST][state]
        if self.handshake is not None:
            handshake, self.handshake = self.handshake, None
            why = self._tlsProblem(reason) or (reason.getErrorMessage() if reason is not None else "closed")
            handshake.errback(UpstreamTLSError(why))
        self._head_expired = None
        self._head_deadline.cancel()
        self._stopReadDeadline()
        self.owner.connectionClosed(self)
        if state is TUNNEL and self.tunnel is not None:
            self.tunnel.upstreamLost()
        receiver, self._receiver = self._receiver, None
        if receiver is None:
            return
        if self.owner.closed:
            # The pool was closed (the proxy is stopping): this connection was dropped by us, not the upstream.
            receiver.upstreamAbandoned("the proxy is shutting down")
        elif state is BODY and self._body_kind is Kind.CLOSE:
            receiver.responseEnd()
        elif state is HEAD and not self._got_bytes and (problem := self._tlsProblem(reason)):
            receiver.upstreamFailed(f"TLS with upstream failed: {problem}", retryable=False)
        elif state is HEAD:
            # A kept-alive connection closed by the upstream just as it was reused: safe to retry elsewhere.
            retryable = self.requests_sent > 1 and not self._got_bytes
            receiver.upstreamFailed("upstream closed the connection before responding", retryable)
        elif state is BODY:
            receiver.upstreamFailed("upstream closed the connection mid-body", retryable=False)

    def _tlsProblem(self, reason: Failure | None) -> str | None:
        if self.address.scheme != "https" or reason is None:
            return None
        return tls_failure(reason, self.transport, self.address.host)


class UpstreamTLSError(Exception):
    """
    The TLS handshake with an upstream failed; the message says why in one line.
    """
