"""
``--workers N``: N proxy processes serving the same listening sockets, under a supervisor.

The supervisor (the process started by the user) binds every ``--listen`` endpoint itself, never accepts on them,
and starts N workers with :meth:`reactor.spawnProcess`, handing each its listening sockets as inherited file
descriptors (``--inherit FD:FAMILY:DESCRIPTION``); a worker adopts them with ``reactor.adoptStreamPort``.

A TCP endpoint gets one socket per worker, all bound to the same address with ``SO_REUSEPORT``
(:func:`reuseport_sockets`), so that the kernel spreads new connections evenly over the workers. (With one shared
socket, the worker that wakes first accepts every pending connection at once: all 50 connections of a benchmark
went to one worker.) The supervisor keeps every socket open, so connections that arrive for a worker being
restarted wait in its socket's backlog. Other endpoints (``unix:``) share one socket. The supervisor:

- restarts a worker that exits while it runs (at once if the worker had run for :data:`STABLE_AFTER` seconds,
  else after a delay doubling from :data:`FIRST_RESTART_DELAY` to :data:`MAX_RESTART_DELAY`, so that a worker
  that cannot start does not spin);
- on stop (SIGTERM, SIGINT) sends SIGTERM to every worker and waits for them, sending SIGKILL to those still
  running after :data:`STOP_TIMEOUT` seconds.

Each worker's standard input is a pipe from the supervisor: if the supervisor dies without stopping them, the pipe
closes and the workers stop themselves (:class:`ParentWatch`).
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from collections.abc import Callable

from attrs import frozen
from twisted.application import service
from twisted.internet import defer, error
from twisted.internet.interfaces import IDelayedCall, IListeningPort, IProtocolFactory
from twisted.internet.protocol import ProcessProtocol, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from txrevproxy._net.reactor import IProxyReactor

log = Logger(namespace="txrevproxy")

#: A worker that has run this long is restarted at once when it exits.
STABLE_AFTER = 5.0
FIRST_RESTART_DELAY = 0.5
MAX_RESTART_DELAY = 10.0
#: Seconds workers get to stop after SIGTERM before they are killed.
STOP_TIMEOUT = 10.0

TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile="]


def reactor_options(reactor: object) -> list[str]:
    """
    twistd's options for a worker to run on the supervisor's kind of reactor: ``--reactor=txrevproxy`` when that
    is :class:`~txrevproxy._daemon.reactor.ProxyReactor`, else none (twistd's default).
    """
    try:
        from txrevproxy._daemon.reactor import NAME, ProxyReactor
    except ImportError:  # (no epoll on this platform)
        return []
    return [f"--reactor={NAME}"] if isinstance(reactor, ProxyReactor) else []


_FAMILIES: dict[str, socket.AddressFamily] = {
    "AF_INET": socket.AF_INET,
    "AF_INET6": socket.AF_INET6,
    "AF_UNIX": socket.AF_UNIX,
}


@frozen
class Inherited:
    """
    A listening socket a worker inherits: its descriptor number in the worker, address family and the
    ``--listen`` description it came from.
    """

    fd: int
    family: str
    description: str

    @classmethod
    def parse(cls, text: str) -> Inherited:
        """
        Parse ``FD:FAMILY:DESCRIPTION``; raises ``ValueError`` with a one-line reason.
        """
        fd, _, rest = text.partition(":")
        family, _, description = rest.partition(":")
        if not fd.isdigit() or family not in _FAMILIES or not description:
            raise ValueError(f"not FD:AF_INET|AF_INET6|AF_UNIX:DESCRIPTION: {text!r}")
        return cls(int(fd), family, description)

    def __str__(self) -> str:
        return f"{self.fd}:{self.family}:{self.description}"

    @property
    def address_family(self) -> socket.AddressFamily:
        return _FAMILIES[self.family]


def family_name(family: int) -> str | None:
    """
    The name :class:`Inherited` uses for a socket address family, or ``None`` for one a worker cannot adopt.
    """
    for name, value in _FAMILIES.items():
        if value == family:
            return name
    return None


def reuseport_sockets(family: int, host: str, port: int, backlog: int, count: int) -> list[socket.socket]:
    """
    ``count`` listening TCP sockets on the same ``(host, port)`` with ``SO_REUSEPORT`` (port 0: the port the first
    one gets). Raises ``OSError`` as ``bind`` does.
    """
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            port = sock.getsockname()[1]
            sock.listen(backlog)
            sock.setblocking(False)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def restart_delay(previous: float, ran_for: float) -> float:
    """
    How long to wait before restarting a worker that ran ``ran_for`` seconds, the previous delay being
    ``previous`` (0 for none).
    """
    if ran_for >= STABLE_AFTER:
        return 0.0
    return min(max(previous * 2, FIRST_RESTART_DELAY), MAX_RESTART_DELAY)


class _Worker(ProcessProtocol):
    def __init__(self, supervisor: Supervisor, index: int) -> None:
        self.supervisor = supervisor
        self.index = index
        self.started = supervisor.reactor.seconds()
        self.pid: int | None = None

    def connectionMade(self) -> None:
        if self.transport is not None:  # (set by spawnProcess before it calls this)
            self.pid = self.transport.pid

    def processEnded(self, reason: Failure) -> None:
        self.supervisor._ended(self, reason)


class Supervisor(service.Service):
    """
    Runs ``count`` worker processes, each started as ``argv(index)`` with the descriptors ``fds(index)`` (worker
    fd → supervisor fd) inherited, and keeps them running until stopped.
    """

    def __init__(
        self,
        count: int,
        argv: Callable[[int], list[str]],
        fds: Callable[[int], dict[int, int]],
        reactor: IProxyReactor,
    ) -> None:
        self.count = count
        self.argv = argv
        self.fds = fds
        self.reactor = reactor
        self.workers: dict[int, _Worker] = {}
        self._delays: dict[int, float] = {}
        self._restarts: dict[int, IDelayedCall] = {}
        self._stopping = False
        self._stopped: defer.Deferred[None] | None = None
        self._kill_call: IDelayedCall | None = None

    def startService(self) -> None:
        service.Service.startService(self)
        for index in range(1, self.count + 1):
            self._spawn(index)

    def _spawn(self, index: int) -> None:
        self._restarts.pop(index, None)
        worker = _Worker(self, index)
        child_fds: dict[int, int | str] = {0: "w", 1: 1, 2: 2}
        child_fds.update(self.fds(index))
        self.reactor.spawnProcess(worker, sys.executable, self.argv(index), env=os.environ, childFDs=child_fds)
        self.workers[index] = worker
        log.info("worker {index} started (pid {pid})", index=index, pid=worker.pid)

    def _ended(self, worker: _Worker, reason: Failure) -> None:
        if self.workers.get(worker.index) is worker:
            del self.workers[worker.index]
        status = _status_text(reason)
        if self._stopping:
            log.info("worker {index} (pid {pid}) stopped: {status}", index=worker.index, pid=worker.pid, status=status)
            if not self.workers and self._stopped is not None:
                self._finishStopping()
            return
        ran_for = self.reactor.seconds() - worker.started
        delay = restart_delay(self._delays.get(worker.index, 0.0), ran_for)
        self._delays[worker.index] = delay
        log.warn(
            "worker {index} (pid {pid}) exited after {ran:.1f}s: {status}; restarting in {delay:g}s",
            index=worker.index,
            pid=worker.pid,
            ran=ran_for,
            status=status,
            delay=delay,
        )
        self._restarts[worker.index] = self.reactor.callLater(delay, self._spawn, worker.index)

    def stopService(self) -> defer.Deferred[None]:
        service.Service.stopService(self)
        self._stopping = True
        for call in self._restarts.values():
            call.cancel()
        self._restarts.clear()
        stopped = self._stopped = defer.Deferred()
        if not self.workers:
            self._finishStopping()
            return stopped
        for worker in list(self.workers.values()):
            _signal(worker, "TERM")
        self._kill_call = self.reactor.callLater(STOP_TIMEOUT, self._kill)
        return stopped

    def _kill(self) -> None:
        self._kill_call = None
        for worker in list(self.workers.values()):
            log.warn("worker {index} (pid {pid}) did not stop; killing it", index=worker.index, pid=worker.pid)
            _signal(worker, "KILL")

    def _finishStopping(self) -> None:
        if self._kill_call is not None:
            self._kill_call.cancel()
            self._kill_call = None
        stopped, self._stopped = self._stopped, None
        if stopped is not None:
            stopped.callback(None)


def _signal(worker: _Worker, name: str) -> None:
    if worker.transport is None:  # (not started: there is nothing to signal)
        return
    try:
        worker.transport.signalProcess(name)
    except error.ProcessExitedAlready:
        pass


def _status_text(reason: Failure) -> str:
    value = reason.value
    signal_number = getattr(value, "signal", None)
    if signal_number:
        return f"killed by {signal.Signals(signal_number).name}"
    return f"exit status {getattr(value, 'exitCode', '?')}"


def adopt_listener(
    reactor: IProxyReactor, fd: int, family: socket.AddressFamily, factory: IProtocolFactory
) -> IListeningPort:
    """
    A worker's port for the listening socket ``fd`` inherited from the supervisor, as ``reactor.adoptStreamPort``
    makes it, except that a UNIX socket's path stays when the port stops (see
    :class:`~txrevproxy._daemon.sharedunix.SharedUNIXPort`).
    """
    if family != socket.AF_UNIX:
        # Twisted annotates the factory as a ServerFactory, though any factory serves: TLS's is a ClientFactory.
        return reactor.adoptStreamPort(fd, family, factory)  # type: ignore[arg-type]
    from txrevproxy._daemon.sharedunix import SharedUNIXPort  # (UNIX sockets only: not importable everywhere)

    return SharedUNIXPort.adopt(reactor, fd, factory)


class ParentWatch(Protocol):
    """
    A worker's standard input, a pipe from the supervisor: when it closes, the supervisor is gone, so stop.
    """

    def __init__(self, stop: Callable[[], object]) -> None:
        self._stop = stop

    def connectionLost(self, reason: object = None) -> None:
        self._stop()
