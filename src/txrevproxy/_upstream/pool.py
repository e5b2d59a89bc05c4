"""
The keep-alive connection pool: idle connections per upstream, bounded in number and in idle time, handed out only
when known to be clean; connecting under the connect timeout (TLS handshake included).
"""

from __future__ import annotations

from typing import cast

from twisted.internet import defer
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    wrapClientTLS,
)
from twisted.internet.interfaces import IAddress, IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.python.failure import Failure

from txrevproxy._net.deadline import Deadline
from txrevproxy._net.reactor import IProxyReactor
from txrevproxy._tls.client import ClientTLS
from txrevproxy._upstream.config import PoolConfig, UpstreamAddress
from txrevproxy._upstream.protocol import UpstreamProtocol

# The two values live in _upstream.config, where the protocol takes them from too; they may still be imported from here.
__all__ = ["ConnectTimeout", "PoolConfig", "UpstreamAddress", "UpstreamPool"]


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

    def buildProtocol(self, addr: IAddress | None) -> UpstreamProtocol:
        return self._proto


def _endpoint(
    reactor: IProxyReactor, address: UpstreamAddress, timeout: float, tls: ClientTLS
) -> IStreamClientEndpoint:
    host = address.host
    endpoint: IStreamClientEndpoint
    if isIPAddress(host):
        endpoint = TCP4ClientEndpoint(reactor, host, address.port, timeout=timeout)
    elif isIPv6Address(host):
        endpoint = TCP6ClientEndpoint(reactor, host, address.port, timeout=timeout)
    else:
        endpoint = HostnameEndpoint(reactor, host.encode("idna"), address.port, timeout=timeout)
    if address.scheme == "https":
        return wrapClientTLS(tls.creator(host), endpoint, clock=reactor)  # (TLS flushes small writes on this clock)
    return endpoint


_DEFAULT_CONFIG = PoolConfig()


class UpstreamPool:
    """
    Keep-alive connections per upstream address.

    A connection enters the pool only after a complete response, with the whole request sent, no stray bytes and
    no ``Connection: close``; the most recently used idle connection is handed out first. For tests and metrics,
    ``opened`` counts connection attempts, ``connected`` the connections made and ``open`` those still open.
    """

    def __init__(self, reactor: IProxyReactor, config: PoolConfig = _DEFAULT_CONFIG) -> None:
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
        connecting = _endpoint(self.reactor, address, timeout + 1, self.tls).connect(_OneShot(proto))
        # _OneShot hands out ``proto`` and nothing else: the endpoint fires with it (a TLS one with what it wraps).
        d = cast("defer.Deferred[UpstreamProtocol]", connecting)
        handshake = proto.handshake
        if handshake is not None:
            d.addCallback(lambda _: handshake)  # connected means the TLS handshake is done
        d.addTimeout(timeout, self.reactor, onTimeoutCancel=_connect_timed_out)
        return d

    # -- what the connections tell their pool (ConnectionOwner) --------------------------------------------

    def connectionOpened(self, proto: UpstreamProtocol) -> None:
        """
        A connection attempt succeeded.
        """
        self.connected += 1
        self.open += 1

    def tunnelOpened(self, proto: UpstreamProtocol) -> None:
        """
        A connection now carries a tunnel: never pooled, closed by :meth:`close`.
        """
        self.tunnelled.add(proto)

    def connectionClosed(self, proto: UpstreamProtocol) -> None:
        """
        A connection is gone, whatever it carried.
        """
        self.open -= 1
        self.forget(proto)
        self.tunnelled.discard(proto)

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
            deadline = proto.idle_deadline = Deadline(self.reactor, self._expire, proto)
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
            assert proto.tunnel is not None  # (a connection is tunnelled once its tunnel is made)
            proto.tunnel.shutdown()
        for idle in self._idle.values():
            for proto in list(idle):
                proto.discard()
        self._idle.clear()
