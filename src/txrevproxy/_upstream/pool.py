"""
The keep-alive connection pool: idle connections per upstream, bounded in number and in idle time, handed out only
when known to be clean; connecting under the connect timeout (TLS handshake included).
"""

from __future__ import annotations

from attrs import field, frozen
from twisted.internet import defer
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    wrapClientTLS,
)
from twisted.internet.protocol import Factory
from twisted.python.failure import Failure

from txrevproxy._net.deadline import Deadline
from txrevproxy._tls.client import ClientTLS, UpstreamTLS
from txrevproxy._upstream.protocol import UpstreamProtocol


@frozen
class UpstreamAddress:
    """
    Where an upstream listens; also the pool's key.
    """

    host: str
    port: int
    scheme: str = "http"

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@frozen
class PoolConfig:
    """
    :ivar max_idle: idle keep-alive connections kept per upstream; more are closed when released.
    :ivar idle_timeout: seconds an idle connection is kept before it is closed.
    :ivar connect_timeout: seconds allowed for the TCP connection to be established.
    :ivar read_timeout: seconds the upstream may send nothing while a response body is being read, before the
        connection is aborted (and the client's response with it). Time while the proxy has paused reading
        because the client is slow does not count.
    :ivar send_timeout: seconds the upstream may leave a request body upload stalled before the connection is
        aborted (504 if no response has started, else the client connection is aborted too). Measured from the
        moment the connection's write buffer is full and the upload is paused until it has drained; an upstream
        that reads, but slower than that buffer (64 KiB) per ``send_timeout``, counts as stalled.
    :ivar tls: how ``https://`` upstreams are verified (see :class:`~txrevproxy._tls.client.UpstreamTLS`).
    """

    max_idle: int = 128
    idle_timeout: float = 30.0
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    send_timeout: float = 60.0
    tls: UpstreamTLS = field(factory=UpstreamTLS)


class ConnectTimeout(Exception):
    """
    The upstream did not accept the connection within the connect timeout.
    """


def _connect_timed_out(result: object, timeout: float) -> Failure:
    return Failure(ConnectTimeout(f"no connection within {timeout:g}s"))


class _OneShot(Factory):
    """
    Hands out one prepared protocol; quiet, unlike ``connectProtocol``'s factory, which logs every connection.
    """

    noisy = False

    def __init__(self, proto: UpstreamProtocol) -> None:
        self._proto = proto

    def buildProtocol(self, addr: object) -> UpstreamProtocol:
        return self._proto


def _endpoint(reactor: object, address: UpstreamAddress, timeout: float, tls: ClientTLS) -> object:
    host = address.host
    if isIPAddress(host):
        endpoint = TCP4ClientEndpoint(reactor, host, address.port, timeout=timeout)
    elif isIPv6Address(host):
        endpoint = TCP6ClientEndpoint(reactor, host, address.port, timeout=timeout)
    else:
        endpoint = HostnameEndpoint(reactor, host.encode("idna"), address.port, timeout=timeout)
    if address.scheme == "https":
        return wrapClientTLS(tls.creator(host), endpoint, clock=reactor)  # (TLS flushes small writes on this clock)
    return endpoint


class UpstreamPool:
    """
    Keep-alive connections per upstream address.

    A connection enters the pool only after a complete response, with the whole request sent, no stray bytes and
    no ``Connection: close``; the most recently used idle connection is handed out first. For tests and metrics,
    ``opened`` counts connection attempts, ``connected`` the connections made and ``open`` those still open.
    """

    def __init__(self, reactor: object, config: PoolConfig = PoolConfig()) -> None:
        self.reactor = reactor
        self.config = config
        self.tls = ClientTLS(config.tls)
        self.opened = 0
        self.connected = 0
        self.open = 0
        self.closed = False
        self._idle: dict[UpstreamAddress, list[UpstreamProtocol]] = {}
        #: Connections carrying a tunnel (after a ``101``): never pooled, closed by :meth:`close`.
        self.tunnelled: set[UpstreamProtocol] = set()

    def acquire(self, address: UpstreamAddress) -> defer.Deferred[UpstreamProtocol]:
        """
        An idle connection to ``address``, or a new one; fails with the connection error.
        """
        proto = self.take(address)
        if proto is not None:
            return defer.succeed(proto)
        return self.connect(address)

    def take(self, address: UpstreamAddress) -> UpstreamProtocol | None:
        """
        An idle connection to ``address`` taken out of the pool, or ``None`` when there is none.
        """
        idle = self._idle.get(address)
        while idle:
            proto = idle.pop()  # (its idle deadline, if it comes due, finds it busy; the next release sets it again)
            if proto.ready:
                return proto
        return None

    def connect(self, address: UpstreamAddress) -> defer.Deferred[UpstreamProtocol]:
        """
        A new connection to ``address``, bypassing the idle ones.
        """
        self.opened += 1
        timeout = self.config.connect_timeout
        proto = UpstreamProtocol(self, address)
        # The endpoint's own timeout is a backstop; ours decides, and names itself.
        d = _endpoint(self.reactor, address, timeout + 1, self.tls).connect(_OneShot(proto))  # type: ignore[attr-defined]
        handshake = proto.handshake
        if handshake is not None:
            d.addCallback(lambda _: handshake)  # connected means the TLS handshake is done
        d.addTimeout(timeout, self.reactor, onTimeoutCancel=_connect_timed_out)
        return d

    def release(self, proto: UpstreamProtocol) -> None:
        """
        Take back a clean connection, or close it if the pool for its address is full or the pool is closed.
        """
        idle = self._idle.setdefault(proto.address, [])
        if self.closed or len(idle) >= self.config.max_idle:
            proto.discard()
            return
        idle.append(proto)
        # One deadline per connection, re-armed lazily: a connection reused at once costs no timer.
        deadline = proto.idle_deadline
        if deadline is None:
            deadline = proto.idle_deadline = Deadline(self.reactor, self._expire, proto)  # type: ignore[arg-type]
        deadline.set(self.config.idle_timeout)

    def _expire(self, proto: UpstreamProtocol) -> None:
        """
        An idle connection's time is up: take it out of the pool at once, then close it.

        ``loseConnection`` only starts the close; until ``connectionLost`` the connection must not be handed out, or
        a request would be sent on it and our own close reported as the upstream's.
        """
        if not proto.ready:
            return
        idle = self._idle.get(proto.address)
        if idle and proto in idle:
            idle.remove(proto)
        proto.discard()

    def forget(self, proto: UpstreamProtocol) -> None:
        """
        A connection was lost: drop it from the idle list.
        """
        if proto.idle_deadline is not None:
            proto.idle_deadline.cancel()
        idle = self._idle.get(proto.address)
        if idle and proto in idle:
            idle.remove(proto)

    def idle_count(self, address: UpstreamAddress) -> int:
        return len(self._idle.get(address, ()))

    def close(self) -> None:
        """
        Close every idle connection and every tunnel (at shutdown). Connections still carrying a request are left
        to finish or to be dropped with the reactor; their relays are then told the proxy is stopping, not that the
        upstream failed.
        """
        self.closed = True
        for proto in list(self.tunnelled):
            proto.tunnel.shutdown()  # type: ignore[union-attr]
        for idle in self._idle.values():
            for proto in list(idle):
                proto.discard()
        self._idle.clear()
