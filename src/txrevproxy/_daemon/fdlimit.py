"""
File descriptors: making the connection cap fit the open-file limit, and not spinning when descriptors run out.

Two layers:

1. At start the daemon raises its soft ``RLIMIT_NOFILE`` to the hard limit (:func:`raise_open_file_limit`) and
   lowers ``--max-connections`` to what fits in it (:func:`fit_connection_cap`): each client connection may hold an
   upstream connection, plus the pool's idle ones and a fixed headroom. Past the cap, connections are refused by
   the gate (:mod:`txrevproxy._server.gate`) before the process runs out of descriptors.

2. A backstop, :class:`AcceptBackoff`, for when descriptors run out anyway (other code's files, ``ENFILE`` when the
   whole system is out, a limit lowered at run time). Twisted's ``tcp.Port.doRead`` logs ``Could not accept new
   connection (EMFILE)`` and returns; the listening socket is still readable, so the reactor calls ``doRead`` again
   at once: a busy loop at 100 % CPU. (Twisted keeps one reserve descriptor to accept-and-close a client on
   ``EMFILE``, but that reserve is lost for good the first time it cannot be re-opened, and never covers ``ENFILE``,
   ``ENOBUFS`` or ``ENOMEM``.) On such an error the back-off stops reading the listening socket for a short delay
   and then starts again: pending clients wait in the listen backlog instead of the process spinning.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Callable

from twisted.internet import tcp
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

log = Logger(namespace="txrevproxy")

#: Seconds the listening socket is not read after ``accept`` failed for lack of descriptors or memory.
DEFAULT_ACCEPT_BACKOFF = 0.5

#: Descriptors kept free for everything but client and upstream connections: listening sockets, Twisted's EMFILE
#: reserve, name resolution, log files.
FD_HEADROOM = 32

#: ``accept(2)`` errors that mean the process or the system is out of a resource, not that one client went away.
EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

#: The soft limit to aim for when the hard limit is unlimited.
_UNLIMITED_TARGET = 1 << 20


def connection_budget(open_files: int, in_use: int, pool_size: int) -> int:
    """
    The most concurrent client connections that fit in ``open_files`` descriptors, ``in_use`` being open already:
    each client connection may hold one upstream connection, the pool keeps up to ``pool_size`` idle ones, and
    :data:`FD_HEADROOM` stay free. At least 1.
    """
    return max(1, (open_files - in_use - pool_size - FD_HEADROOM) // 2)


def fit_connection_cap(requested: int, open_files: int | None, in_use: int, pool_size: int) -> int:
    """
    ``requested`` lowered to :func:`connection_budget` when there is a known limit (``open_files`` not ``None``).
    """
    if open_files is None:
        return requested
    return min(requested, connection_budget(open_files, in_use, pool_size))


def raise_open_file_limit() -> int | None:
    """
    Raise the soft ``RLIMIT_NOFILE`` to the hard limit, as far as the system allows; the soft limit now in force,
    or ``None`` when there is none (or no ``resource`` module, as on Windows).
    """
    try:
        import resource
    except ImportError:
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = _UNLIMITED_TARGET if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as e:
            log.info("could not raise the open-file limit from {soft} to {target}: {e}", soft=soft, target=target, e=e)
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return None if soft == resource.RLIM_INFINITY else soft


def descriptors_in_use() -> int:
    """
    How many file descriptors this process has open (from ``/proc/self/fd`` or ``/dev/fd``; 3 if neither lists).
    """
    for listing in ("/proc/self/fd", "/dev/fd"):
        try:
            return len(os.listdir(listing))
        except OSError:
            continue
    return 3


class _WatchedSocket:
    """
    A listening socket that reports ``accept`` failing with one of :data:`EXHAUSTED`, then re-raises so that Twisted
    handles the error as before. Everything else is the socket's own.
    """

    def __init__(self, sock: socket.socket, exhausted: Callable[[int], None]) -> None:
        self._socket = sock
        self._exhausted = exhausted

    def accept(self) -> tuple[socket.socket, object]:
        try:
            return self._socket.accept()
        except OSError as e:
            if e.errno in EXHAUSTED:
                self._exhausted(e.errno)
            raise

    def __getattr__(self, name: str) -> object:
        return getattr(self._socket, name)


class AcceptBackoff:
    """
    Stops reading a listening port for ``delay`` seconds whenever ``accept`` fails for lack of descriptors or
    memory, then reads it again.

    Hooked in by :func:`guard_accepts` on the port object that ``endpoint.listen`` returned, so that it works with
    every endpoint string a user passes to ``--listen`` (``tcp:``, ``tcp6:``, ``ssl:``, ``unix:``: their ports are
    all ``twisted.internet.tcp.Port``\\s). The port's ``socket`` attribute is replaced by a thin wrapper whose
    ``accept`` reports the error and re-raises it: Twisted's ``doRead`` swallows accept errors after logging them,
    so the socket is the one place that sees the ``errno``, and wrapping it leaves ``doRead`` itself and Twisted's
    own EMFILE recovery untouched. (A ``Port`` subclass would need its own endpoint type and ``--listen`` parser.)

    :param port: a listening ``tcp.Port`` (a UNIX one too: it is a subclass).
    :param clock: what the delay is timed with.
    :param delay: seconds not to accept after a failure.
    """

    def __init__(self, port: tcp.Port, clock: IReactorTime, delay: float = DEFAULT_ACCEPT_BACKOFF) -> None:
        self.port = port
        self.clock = clock
        self.delay = delay
        self.pauses = 0
        self._resume_call: IDelayedCall | None = None
        port.socket = _WatchedSocket(port.socket, self.exhausted)

    @property
    def paused(self) -> bool:
        return self._resume_call is not None

    def exhausted(self, code: int) -> None:
        """
        ``accept`` failed with ``code``: stop reading the port (once per back-off) and read it again later.
        """
        if self.paused:
            return
        self.pauses += 1
        self.port.stopReading()
        self._resume_call = self.clock.callLater(self.delay, self._resume)
        log.warn(
            "cannot accept connections on {address}: {error}; not accepting for {delay:g} s",
            address=_address_of(self.port),
            error=f"{errno.errorcode.get(code, code)} ({os.strerror(code)})",
            delay=self.delay,
        )

    def _resume(self) -> None:
        self._resume_call = None
        if getattr(self.port, "connected", False) and not getattr(self.port, "disconnecting", False):
            self.port.startReading()

    def stop(self) -> None:
        """
        Cancel a pending resume (the port is being closed).
        """
        if self._resume_call is not None:
            self._resume_call.cancel()
            self._resume_call = None


def guard_accepts(port: object, clock: IReactorTime, delay: float = DEFAULT_ACCEPT_BACKOFF) -> AcceptBackoff | None:
    """
    An :class:`AcceptBackoff` on ``port`` when it is a listening socket port; ``None`` for anything else (ports of
    test reactors, endpoints that are not socket based).
    """
    if not isinstance(port, tcp.Port) or not isinstance(getattr(port, "socket", None), socket.socket):
        return None
    return AcceptBackoff(port, clock, delay)


def _address_of(port: tcp.Port) -> object:
    try:
        address = port.getHost()
    except (AttributeError, OSError):
        return port
    host, number = getattr(address, "host", None), getattr(address, "port", None)
    if host is None:
        return getattr(address, "name", address)
    return f"[{host}]:{number}" if ":" in host else f"{host}:{number}"
