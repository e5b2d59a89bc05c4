"""
A byte tunnel between a client and an upstream connection, after a ``101 Switching Protocols`` (WebSocket and
other upgrades).

Bytes from each side are written to the other as they arrive (at once when nothing is waiting, see
:mod:`txrevproxy._net.sending`). Backpressure runs both ways and is the tunnel's own:
it registers a streaming producer on each transport, so when one side's send buffer is full, reading from the other
side pauses until it drains, and nothing is buffered beyond the transports' own buffers (on plain TCP and TLS
transports alike). When either side closes, the producers are unregistered and the other side is closed after what
is buffered for it has been sent (a transport with a paused producer registered would otherwise never close). No
bytes in either direction for ``idle_timeout`` seconds abort both (one lazy timer per tunnel, not one per write);
:meth:`Tunnel.shutdown` closes both when the proxy stops.

Send deadlines: a side whose send buffer stays full (it reads nothing of what waits for it) for its send timeout
(``send_timeouts``: the client's, the upstream's) aborts both, even while bytes flow the other way (which keeps
the idle deadline from firing). A side being closed after the other has gone gets that long, counted from the
close, to take what is buffered for it; then it is aborted (at shutdown both get the longer of the two).

The two ends are plain transports; the owners of the connections feed :meth:`Tunnel.fromClient` /
:meth:`Tunnel.fromUpstream` and report their losses, so this module knows nothing of HTTP.
"""

from __future__ import annotations

from typing import cast

from twisted.internet.interfaces import IPushProducer, IReactorTime, ITCPTransport
from twisted.logger import Logger
from zope.interface import implementer

from txrevproxy._net.deadline import TIMER_SLACK, Deadline
from txrevproxy._net.sending import send
from txrevproxy._net.states import IdentityEnum
from txrevproxy._net.transports import ITCPStreamTransport

log = Logger(namespace="txrevproxy")


class Side(IdentityEnum):
    """
    The tunnel's two sides (their names, in log lines, are the values).
    """

    CLIENT = "client"
    UPSTREAM = "upstream"


CLIENT, UPSTREAM = Side.CLIENT, Side.UPSTREAM


@implementer(IPushProducer)
class _PausesReading:
    """
    Registered on one side's transport: that side's send buffer full pauses reading from ``source``, the other side.
    """

    def __init__(self, tunnel: Tunnel, source: IPushProducer, side: Side) -> None:
        self.tunnel = tunnel
        self.source = source
        self.side = side  # the side whose buffer this is

    def pauseProducing(self) -> None:
        if not self.tunnel.closed:
            self.tunnel._stalled(self.side)
            self.source.pauseProducing()

    def resumeProducing(self) -> None:
        if not self.tunnel.closed:
            self.tunnel._drained(self.side)
            self.source.resumeProducing()

    def stopProducing(self) -> None:
        pass  # the transport's loss is reported through clientLost / upstreamLost


class Tunnel:
    """
    Joins the ``client`` and ``upstream`` transports; neither may have a producer registered.

    :ivar sent_up: bytes relayed from the client to the upstream.
    :ivar sent_down: bytes relayed from the upstream to the client.
    """

    def __init__(
        self,
        client: ITCPTransport,
        upstream: ITCPTransport,
        reactor: IReactorTime,
        idle_timeout: float,
        name: str = "",
        send_timeouts: tuple[float, float] = (0.0, 0.0),
    ) -> None:
        # Every TCP transport Twisted makes (and the memory network's) is a consumer and a push producer too; the
        # tunnel registers a producer on each and pauses each (ITCPStreamTransport says so, ITCPTransport does not).
        self.client = cast(ITCPStreamTransport, client)
        self.upstream = cast(ITCPStreamTransport, upstream)
        self.reactor = reactor
        self.idle_timeout = idle_timeout
        self.name = name
        self.sent_up = 0
        self.sent_down = 0
        self.closed = False
        # No byte either way for idle_timeout (moved by every byte); none at all when it is 0.
        self._idle = Deadline(reactor, self._idleTimedOut) if idle_timeout else None
        self._send_timeouts = {CLIENT: send_timeouts[0], UPSTREAM: send_timeouts[1]}
        self._stalled_since: dict[Side, float] = {}  # side -> since when its send buffer has been full
        self._send = Deadline(reactor, self._checkSend)  # the soonest send deadline of the stalled sides
        self._closing: set[Side] = set()  # after close: the sides still taking what is buffered for them
        self._closing_deadline: Deadline | None = None  # after close: when those still closing are aborted
        self.upstream.registerProducer(_PausesReading(self, self.client, UPSTREAM), True)
        self.client.registerProducer(_PausesReading(self, self.upstream, CLIENT), True)
        if self._idle is not None:
            self._idle.set(idle_timeout)

    # -- bytes ---------------------------------------------------------------------------------------------

    def fromClient(self, data: bytes) -> None:
        if self.closed or not data:
            return
        if self._idle is not None:
            self._idle.set(self.idle_timeout)
        self.sent_up += len(data)
        send(self.upstream, data)

    def fromUpstream(self, data: bytes) -> None:
        if self.closed or not data:
            return
        if self._idle is not None:
            self._idle.set(self.idle_timeout)
        self.sent_down += len(data)
        send(self.client, data)

    # -- ends ----------------------------------------------------------------------------------------------

    def clientLost(self) -> None:
        self._gone(CLIENT)
        self._close("the client closed the connection", (UPSTREAM,))

    def upstreamLost(self) -> None:
        self._gone(UPSTREAM)
        self._close("the upstream closed the connection", (CLIENT,))

    def shutdown(self) -> None:
        """
        The proxy is stopping: close both sides once what is buffered for each is sent.
        """
        self._close("the proxy is shutting down", (CLIENT, UPSTREAM))

    def _transport(self, side: Side) -> ITCPStreamTransport:
        return self.client if side is CLIENT else self.upstream

    def _close(self, why: str, others: tuple[Side, ...]) -> None:
        if self.closed:
            return
        self._end()
        for side in others:
            self._transport(side).loseConnection()  # after what is buffered for it is sent
            if self._send_timeouts[side]:
                self._closing.add(side)
        if self._closing:  # bounded by each one's send timeout
            self._closing_deadline = Deadline(self.reactor, self._abortClosing)
            self._closing_deadline.set(max(self._send_timeouts[side] for side in self._closing))
        log.info(
            "tunnel {name} closed: {why}; {up} bytes up, {down} bytes down",
            name=self.name,
            why=why,
            up=self.sent_up,
            down=self.sent_down,
        )

    def _end(self) -> None:
        self.closed = True
        if self._idle is not None:
            self._idle.cancel()
        self._send.cancel()
        self._stalled_since.clear()
        # Both, so that neither transport waits on a paused producer before it closes.
        self.upstream.unregisterProducer()
        self.client.unregisterProducer()

    def _abort(self, why: str) -> None:
        self._end()
        log.info(
            "tunnel {name} {why}: closed; {up} bytes up, {down} bytes down",
            name=self.name,
            why=why,
            up=self.sent_up,
            down=self.sent_down,
        )
        self.client.abortConnection()
        self.upstream.abortConnection()

    # -- the send deadlines -----------------------------------------------------------------------------------

    def _stalled(self, side: Side) -> None:
        if side in self._stalled_since:
            return
        now = self._stalled_since[side] = self.reactor.seconds()
        timeout = self._send_timeouts[side]
        if not timeout:
            return
        due, send = now + timeout, self._send
        if send.due is None or due < send.due:  # (none yet, or one for a later deadline)
            send.set_at(due)

    def _drained(self, side: Side) -> None:
        self._stalled_since.pop(side, None)  # (the deadline, if set, finds no stall when it is due)

    def _checkSend(self) -> None:
        """
        The soonest send deadline is due: abort if a side is still stalled past its own, else set the next one.
        """
        now = self.reactor.seconds()
        soonest = None
        for side, since in self._stalled_since.items():
            timeout = self._send_timeouts[side]
            if not timeout:
                continue
            due = since + timeout
            if due - now <= TIMER_SLACK:
                self._abort(f"{side.value} read nothing for {timeout:g}s")
                return
            soonest = due if soonest is None else min(soonest, due)
        if soonest is not None:
            self._send.set_at(soonest)

    def _gone(self, side: Side) -> None:
        self._closing.discard(side)
        if self.closed and not self._closing and self._closing_deadline is not None:
            self._closing_deadline.cancel()  # every side closed in time

    def _abortClosing(self) -> None:
        closing, self._closing = self._closing, set()
        for side in (CLIENT, UPSTREAM):
            if side not in closing:
                continue
            log.info(
                "tunnel {name}: the {side} did not take its last bytes within {timeout:g}s: aborted",
                name=self.name,
                side=side.value,
                timeout=self._send_timeouts[side],
            )
            self._transport(side).abortConnection()

    # -- the idle deadline ------------------------------------------------------------------------------------

    def _idleTimedOut(self) -> None:
        if not self.closed:
            self._abort(f"idle for {self.idle_timeout:g}s")
