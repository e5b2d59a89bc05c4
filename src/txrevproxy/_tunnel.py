"""
A byte tunnel between a client and an upstream connection, after a ``101 Switching Protocols`` (WebSocket and
other upgrades).

Bytes from each side are written to the other as they arrive (at once when nothing is waiting, see
:mod:`txrevproxy._sending`). Backpressure runs both ways and is the tunnel's own:
it registers a streaming producer on each transport, so when one side's send buffer is full, reading from the other
side pauses until it drains, and nothing is buffered beyond the transports' own buffers (on plain TCP and TLS
transports alike). When either side closes, the producers are unregistered and the other side is closed after what
is buffered for it has been sent (a transport with a paused producer registered would otherwise never close). No
bytes in either direction for ``idle_timeout`` seconds abort both (one lazy timer per tunnel, not one per write);
:meth:`Tunnel.shutdown` closes both when the proxy stops.

The two ends are plain transports; the owners of the connections feed :meth:`Tunnel.fromClient` /
:meth:`Tunnel.fromUpstream` and report their losses, so this module knows nothing of HTTP.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IDelayedCall, IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

from ._sending import send

log = Logger(namespace="txrevproxy")

#: A deadline DelayedCall that fires this close to its deadline counts as expired.
TIMER_SLACK = 0.001


@implementer(IPushProducer)
class _PausesReading:
    """
    Registered on one side's transport: that side's send buffer full pauses reading from ``source``, the other side.
    """

    def __init__(self, tunnel: Tunnel, source: Any) -> None:
        self.tunnel = tunnel
        self.source = source

    def pauseProducing(self) -> None:
        if not self.tunnel.closed:
            self.source.pauseProducing()

    def resumeProducing(self) -> None:
        if not self.tunnel.closed:
            self.source.resumeProducing()

    def stopProducing(self) -> None:
        pass  # the transport's loss is reported through clientLost / upstreamLost


class Tunnel:
    """
    Joins the ``client`` and ``upstream`` transports; neither may have a producer registered.

    :ivar sent_up: bytes relayed from the client to the upstream.
    :ivar sent_down: bytes relayed from the upstream to the client.
    """

    def __init__(self, client: Any, upstream: Any, reactor: Any, idle_timeout: float, name: str = "") -> None:
        self.client = client
        self.upstream = upstream
        self.reactor = reactor
        self.idle_timeout = idle_timeout
        self.name = name
        self.sent_up = 0
        self.sent_down = 0
        self.closed = False
        self._last = reactor.seconds()
        self._timer: IDelayedCall | None = None
        upstream.registerProducer(_PausesReading(self, client), True)
        client.registerProducer(_PausesReading(self, upstream), True)
        if idle_timeout:
            self._timer = reactor.callLater(idle_timeout, self._checkIdle)

    # -- bytes ---------------------------------------------------------------------------------------------

    def fromClient(self, data: bytes) -> None:
        if self.closed or not data:
            return
        self._last = self.reactor.seconds()
        self.sent_up += len(data)
        send(self.upstream, data)

    def fromUpstream(self, data: bytes) -> None:
        if self.closed or not data:
            return
        self._last = self.reactor.seconds()
        self.sent_down += len(data)
        send(self.client, data)

    # -- ends ----------------------------------------------------------------------------------------------

    def clientLost(self) -> None:
        self._close("the client closed the connection", (self.upstream,))

    def upstreamLost(self) -> None:
        self._close("the upstream closed the connection", (self.client,))

    def shutdown(self) -> None:
        """
        The proxy is stopping: close both sides once what is buffered for each is sent.
        """
        self._close("the proxy is shutting down", (self.client, self.upstream))

    def _close(self, why: str, others: tuple[Any, ...]) -> None:
        if self.closed:
            return
        self._end()
        for other in others:
            other.loseConnection()  # after what is buffered for it is sent
        log.info(
            "tunnel {name} closed: {why}; {up} bytes up, {down} bytes down",
            name=self.name,
            why=why,
            up=self.sent_up,
            down=self.sent_down,
        )

    def _end(self) -> None:
        self.closed = True
        self._stopTimer()
        # Both, so that neither transport waits on a paused producer before it closes.
        self.upstream.unregisterProducer()
        self.client.unregisterProducer()

    # -- the idle deadline ------------------------------------------------------------------------------------

    def _checkIdle(self) -> None:
        self._timer = None
        if self.closed:
            return
        remaining = self._last + self.idle_timeout - self.reactor.seconds()
        if remaining > TIMER_SLACK:
            self._timer = self.reactor.callLater(remaining, self._checkIdle)
            return
        self._end()
        log.info(
            "tunnel {name} idle for {timeout:g}s: closed; {up} bytes up, {down} bytes down",
            name=self.name,
            timeout=self.idle_timeout,
            up=self.sent_up,
            down=self.sent_down,
        )
        self.client.abortConnection()
        self.upstream.abortConnection()

    def _stopTimer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()
