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
"""

from __future__ import annotations

import errno

from twisted.internet.epollreactor import EPollReactor
from twisted.internet.main import installReactor
from twisted.python import log

#: The name given to twistd's ``--reactor``.
NAME = "txrevproxy"


class ProxyReactor(EPollReactor):
    """
    ``EPollReactor`` whose ``doPoll`` calls each ready descriptor's handler directly.
    """

    def doPoll(self, timeout: float | None) -> None:
        try:
            events = self._poller.poll(-1 if timeout is None else timeout, len(self._selectables))
        except OSError as err:
            if err.errno == errno.EINTR:
                return
            raise
        handle = self._doReadOrWrite
        selectables = self._selectables
        for fd, event in events:
            selectable = selectables.get(fd)
            if selectable is None:
                continue
            try:
                handle(selectable, fd, event)
            except BaseException:  # (what callWithLogger does with an exception _doReadOrWrite let through)
                log.err(system=_log_prefix(selectable))

    doIteration = doPoll


def _log_prefix(selectable: object) -> str:
    try:
        return str(selectable.logPrefix())  # type: ignore[attr-defined]
    except BaseException:
        return "(buggy logPrefix method)"


def install() -> None:
    """
    Install :class:`ProxyReactor` as the global reactor (what twistd's ``--reactor=txrevproxy`` calls).
    """
    installReactor(ProxyReactor())
