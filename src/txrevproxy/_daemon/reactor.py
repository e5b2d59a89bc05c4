"""
The daemon's reactor: Twisted's epoll reactor, less the log context it sets up around every I/O event.

``EPollReactor.doPoll`` runs each ready descriptor's handler through ``log.callWithLogger``, which asks the
descriptor for its ``logPrefix`` and pushes a legacy log context (``{"system": prefix}``) for the duration: about
1.5 µs per event in a warm loop, and a relayed request is two events (the client's head, the upstream's response)
on its critical path. Without it the proxy's added median latency at ``wrk -c1`` measured 7 µs lower (95 against
102 µs, everything on one core).

What is lost: legacy ``twisted.python.log`` events emitted while an event is handled carry ``system`` ``-``
instead of the connection's prefix (txrevproxy's own log events use ``twisted.logger`` namespaces, not
``system``). An exception escaping a handler is still logged, with the connection's prefix, as
``callWithLogger`` would.

The ``txrevproxy`` console script and ``--workers`` use it on Linux; under ``twistd`` choose it with
``--reactor=txrevproxy``.

Busy polling (``--busy-poll-us``, off by default): after an iteration that handled I/O, the loop keeps asking epoll
without blocking, for up to that long, before it blocks. A CPU that blocks in ``epoll_wait`` may halt, and on a
virtual machine waking it again costs tens of microseconds (about 25 µs a wake-up on the VM of the README's
figures); a relayed request waits for two such wake-ups in the proxy, one for the request and one for the response.
Polling through the gap keeps the CPU awake, at the cost of burning it: up to the busy-poll time after each burst of
traffic, and all of it while requests keep coming closer together than that. HAProxy's ``busy-polling`` makes the
same trade (it never blocks at all); this one stops once no I/O has come for that long, so an idle proxy sleeps.
A KVM guest whose kernel polls before halting (the haltpoll cpuidle driver, 200 µs by default; that VM has it at 0)
gets most of the gain without it.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable

from twisted.internet.epollreactor import EPollReactor
from twisted.internet.interfaces import ILoggingContext
from twisted.internet.main import installReactor
from twisted.python import log

from txrevproxy._net.twisted_private import reactor_poller, reactor_selectables, read_or_write

#: The name given to twistd's ``--reactor``.
NAME = "txrevproxy"


class ProxyReactor(EPollReactor):
    """
    ``EPollReactor`` whose ``doPoll`` calls each ready descriptor's handler directly, and which can busy-poll.
    """

    #: Seconds to keep polling without blocking after an iteration that handled I/O; 0 for never.
    busy_poll = 0.0
    #: Whether the last poll returned events (busy polling follows only those).
    _active = False
    #: The clock busy polling is timed with (seconds).
    _now: Callable[[], float] = staticmethod(time.monotonic)

    def __init__(self) -> None:
        EPollReactor.__init__(self)

    def doPoll(self, timeout: float | None) -> None:
        wait = -1 if timeout is None else timeout
        try:
            events: list[tuple[int, int]]
            if self.busy_poll and self._active and wait:  # (off by default: one test)
                events = self._spin(wait)
            else:
                events = reactor_poller(self).poll(wait, len(reactor_selectables(self)))
        except OSError as err:
            if err.errno == errno.EINTR:
                return
            raise
        self._active = bool(events)
        handle = read_or_write(self)
        selectables = reactor_selectables(self)
        for fd, event in events:
            selectable = selectables.get(fd)
            if selectable is None:
                continue
            try:
                handle(selectable, fd, event)
            except BaseException:  # (what callWithLogger does with an exception _doReadOrWrite let through)
                log.err(system=_log_prefix(selectable))

    doIteration = doPoll

    def _spin(self, wait: float) -> list[tuple[int, int]]:
        """
        The ready events: polled for without blocking until some come or ``busy_poll`` (at most ``wait``, when it
        is not -1) has passed; then blocking for the rest of ``wait``.
        """
        poll, size, now = reactor_poller(self).poll, len(reactor_selectables(self)), self._now
        limit = self.busy_poll if wait < 0 else min(self.busy_poll, wait)
        start = now()
        while True:
            events: list[tuple[int, int]] = poll(0, size)
            if events:
                return events
            spent = now() - start
            if spent >= limit:
                events = poll(wait if wait < 0 else max(wait - spent, 0.0), size)
                return events


def _log_prefix(selectable: ILoggingContext) -> str:
    try:
        return str(selectable.logPrefix())
    except BaseException:
        return "(buggy logPrefix method)"


def install() -> None:
    """
    Install :class:`ProxyReactor` as the global reactor (what twistd's ``--reactor=txrevproxy`` calls).
    """
    installReactor(ProxyReactor())
