"""
The connection gate: which accepted client connections the proxy serves, decided before any byte is read.

Owns the client access policy (``--allow``/``--deny``) and the per-process cap on concurrent client connections
(``--max-connections``), and counts open connections. :class:`~txrevproxy._server.channel.ProxySite` asks the gate in
``buildProtocol``; returning ``None`` there makes Twisted's ``tcp.Port.doRead`` close the just-accepted socket
at once (``skt.close()``), so a refused client sees the connection closed without a byte of HTTP, never a
connection hanging in the listen backlog. Behind a wrapping factory (TLS, ``ssl:`` endpoints), which would wrap
``None`` and fail, the site returns a :class:`RefusedConnection` instead, which aborts the connection unread.
"""

from __future__ import annotations

from typing import cast

from attrs import field, frozen
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IAddress, IReactorTime, ITCPTransport
from twisted.internet.protocol import Protocol
from twisted.logger import Logger

from txrevproxy._http.networks import AccessPolicy

log = Logger(namespace="txrevproxy")

#: Concurrent client connections per process when ``--max-connections`` is not given.
DEFAULT_MAX_CONNECTIONS = 10000

#: Seconds between two log lines about connections refused at the cap; refusals in between are counted.
CAP_LOG_INTERVAL = 10.0


@frozen
class GateConfig:
    """
    :ivar access: which client networks may connect.
    :ivar max_connections: concurrent client connections served; past it new ones are closed at once.
    """

    access: AccessPolicy = field(factory=AccessPolicy)
    max_connections: int = DEFAULT_MAX_CONNECTIONS


class RefusedConnection(Protocol):
    """
    Closes its connection as soon as it is made, reading nothing.

    For a site behind a wrapping factory (TLS: ``ssl:`` endpoints), where ``buildProtocol`` returning ``None`` is not
    allowed: Twisted's ``WrappingFactory`` wraps whatever the site returns.
    """

    def connectionMade(self) -> None:
        # Made, so it has a transport: TCP, or TLS over TCP (a listener's), both ITCPTransport providers.
        transport = cast(ITCPTransport, self.transport)
        transport.abortConnection()


def peer_host(address: IAddress) -> str | IAddress:
    """
    The host part of a peer address (``IPv4Address``/``IPv6Address``), else the address itself (UNIX sockets).
    """
    return address.host if isinstance(address, (IPv4Address, IPv6Address)) else address


class ConnectionGate:
    """
    Admits or refuses client connections and counts the admitted ones until they are lost.

    :param config: the access policy and the connection cap.
    :param clock: its ``seconds()`` spaces the cap's log lines.
    """

    def __init__(self, config: GateConfig, clock: IReactorTime) -> None:
        self.config = config
        self.clock = clock
        self.open = 0
        self.refused_at_cap = 0
        self._unlogged = 0
        self._last_cap_log: float | None = None

    def admit(self, address: IAddress) -> bool:
        """
        Whether to serve a client connection from ``address``; logs one line when refusing.
        """
        host = peer_host(address)
        decision = self.config.access.decide(host)
        if not decision.allowed:
            log.info("refused connection from {peer}: {rule}", peer=host, rule=decision.rule)
            return False
        if self.open >= self.config.max_connections:
            self._refuse_at_cap(host)
            return False
        return True

    def opened(self) -> None:
        """
        An admitted connection is being served (its channel calls :meth:`closed` once when it is lost).
        """
        self.open += 1

    def closed(self) -> None:
        self.open -= 1

    def _refuse_at_cap(self, host: str | IAddress) -> None:
        self.refused_at_cap += 1
        now = self.clock.seconds()
        if self._last_cap_log is not None and now - self._last_cap_log < CAP_LOG_INTERVAL:
            self._unlogged += 1
            return
        more = f" (and {self._unlogged} more since the last such line)" if self._unlogged else ""
        log.warn(
            "refused connection from {peer}: {open} connections open, at --max-connections {cap}{more}",
            peer=host,
            open=self.open,
            cap=self.config.max_connections,
            more=more,
        )
        self._last_cap_log = now
        self._unlogged = 0
