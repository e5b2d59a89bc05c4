"""
File descriptors: the connection cap fitted to the open-file limit, and the accept back-off on a real listening
``tcp.Port`` driven by a ``MemoryReactorClock`` (no reactor running, no sleeps).
"""

from __future__ import annotations

import errno
import resource
import socket

import pytest
from twisted.internet import protocol, tcp
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs, formatEvent

from txrevproxy._daemon import fdlimit as _fdlimit
from txrevproxy._daemon.fdlimit import (
    DEFAULT_ACCEPT_BACKOFF,
    FD_HEADROOM,
    AcceptBackoff,
    connection_budget,
    descriptors_in_use,
    fit_connection_cap,
    guard_accepts,
    raise_open_file_limit,
)


@pytest.mark.parametrize(
    "open_files, in_use, pool, expected",
    [
        (1024, 10, 32, (1024 - 10 - 32 - FD_HEADROOM) // 2),
        (20000, 10, 32, (20000 - 10 - 32 - FD_HEADROOM) // 2),
        (64, 10, 0, (64 - 10 - FD_HEADROOM) // 2),
        (40, 10, 32, 1),  # never below one connection
    ],
)
def test_connection_budget(open_files, in_use, pool, expected):
    """Each client may hold an upstream connection, plus the idle pool and a headroom; at least 1."""
    assert connection_budget(open_files, in_use, pool) == expected


@pytest.mark.parametrize(
    "requested, open_files, expected",
    [
        (10000, 1024, (1024 - 10 - 32 - FD_HEADROOM) // 2),
        (100, 1024, 100),
        (10000, None, 10000),
    ],
)
def test_fit_connection_cap(requested, open_files, expected):
    """The requested cap is lowered to the budget, never raised; no known limit leaves it alone."""
    assert fit_connection_cap(requested, open_files, 10, 32) == expected


class _Limits:
    def __init__(self, soft, hard, refuse=False):
        self.soft, self.hard, self.refuse = soft, hard, refuse

    def get(self, which):
        assert which == resource.RLIMIT_NOFILE
        return self.soft, self.hard

    def set(self, which, limits):
        if self.refuse:
            raise ValueError("not allowed")
        self.soft, self.hard = limits


@pytest.mark.parametrize(
    "soft, hard, refuse, expected",
    [
        (1024, 4096, False, 4096),
        (4096, 4096, False, 4096),
        (1024, resource.RLIM_INFINITY, False, 1 << 20),
        (1024, 4096, True, 1024),
        (resource.RLIM_INFINITY, resource.RLIM_INFINITY, False, None),
    ],
)
def test_raise_open_file_limit(monkeypatch, soft, hard, refuse, expected):
    """The soft limit is raised to the hard one (2**20 if unlimited); a refusal keeps the old one."""
    limits = _Limits(soft, hard, refuse)
    monkeypatch.setattr(resource, "getrlimit", limits.get)
    monkeypatch.setattr(resource, "setrlimit", limits.set)
    assert raise_open_file_limit() == expected
    assert limits.hard == hard


def test_descriptors_in_use_counts_open_files():
    """Opening a file raises the count by one."""
    before = descriptors_in_use()
    with open(__file__):
        assert descriptors_in_use() == before + 1


# -- the accept back-off on a real tcp.Port ---------------------------------------------------------------------------


class _Flaky:
    """
    The port's listening socket, whose ``accept`` fails with ``errno`` while ``failures`` is above 0.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.failures = 0
        self.code = errno.EMFILE

    def accept(self):
        if self.failures:
            self.failures -= 1
            raise OSError(self.code, "simulated")
        return self.sock.accept()

    def __getattr__(self, name):
        return getattr(self.sock, name)


class _Accepted(protocol.Protocol):
    def connectionMade(self):
        self.factory.connections.append(self)


@pytest.fixture
def listening():
    """A real loopback tcp.Port whose reactor is a MemoryReactorClock, with a flaky socket and a back-off."""
    reactor = MemoryReactorClock()
    factory = protocol.Factory.forProtocol(_Accepted)
    factory.connections = []
    port = tcp.Port(0, factory, interface="127.0.0.1", reactor=reactor)
    port.startListening()
    flaky = _Flaky(port.socket)
    port.socket = flaky
    backoff = AcceptBackoff(port, reactor, delay=0.5)
    clients: list[socket.socket] = []

    def connect() -> None:
        client = socket.create_connection(("127.0.0.1", port.getHost().port), timeout=5)
        clients.append(client)

    yield reactor, port, flaky, backoff, connect, factory.connections
    for client in clients:
        client.close()
    for connection in factory.connections:
        connection.transport.socket.close()
    backoff.stop()
    port.socket = flaky.sock
    port.connectionLost(None)


def _ours(events) -> list[str]:
    return [formatEvent(e) for e in events if e.get("log_namespace") == "txrevproxy"]


@pytest.mark.parametrize("code", [errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM])
def test_exhausted_accept_stops_reading_then_resumes(listening, code):
    """accept failing for lack of resources takes the port out of the reactor for the back-off, then back in."""
    reactor, port, flaky, backoff, connect, _ = listening
    assert port in reactor.readers
    connect()
    flaky.code, flaky.failures = code, 5
    with capturedLogs() as events:
        port.doRead()
    assert port not in reactor.readers and backoff.paused and backoff.pauses == 1
    (line,) = _ours(events)
    assert line.startswith(f"cannot accept connections on 127.0.0.1:{port.getHost().port}: {errno.errorcode[code]}")
    assert line.endswith("not accepting for 0.5 s")
    reactor.advance(0.4)
    assert port not in reactor.readers
    reactor.advance(0.1)
    assert port in reactor.readers and not backoff.paused


def test_after_the_backoff_the_pending_client_is_accepted(listening):
    """A client that waited in the backlog during the back-off is accepted once the port reads again."""
    reactor, port, flaky, _, connect, accepted = listening
    flaky.code, flaky.failures = errno.ENFILE, 1
    connect()
    port.doRead()
    assert accepted == [] and port not in reactor.readers
    reactor.advance(DEFAULT_ACCEPT_BACKOFF)
    port.doRead()
    assert len(accepted) == 1


def test_repeated_failures_in_one_read_pause_once(listening):
    """Several failing accepts (Twisted's EMFILE recovery retries) make one pause and one log line."""
    reactor, port, flaky, backoff, connect, _ = listening
    flaky.failures = 3
    connect()
    with capturedLogs() as events:
        port.doRead()
        backoff.exhausted(errno.EMFILE)
    assert backoff.pauses == 1 and len(_ours(events)) == 1
    assert len(reactor.getDelayedCalls()) == 1


def test_a_client_that_went_away_is_not_a_reason_to_pause(listening):
    """ECONNABORTED is about one client, not the process: the port keeps reading."""
    reactor, port, flaky, backoff, _, _ = listening
    flaky.code, flaky.failures = errno.ECONNABORTED, 1
    port.doRead()
    assert port in reactor.readers and not backoff.paused


def test_stopped_port_is_not_read_again(listening):
    """If the port stops listening during a back-off it is not put back in the reactor."""
    reactor, port, flaky, _, _, _ = listening
    flaky.failures = 1
    port.doRead()
    port.disconnecting = True
    reactor.advance(DEFAULT_ACCEPT_BACKOFF)
    assert port not in reactor.readers
    port.disconnecting = False


def test_stop_cancels_the_pending_resume(listening):
    """stop() cancels a pending resume."""
    reactor, port, flaky, backoff, _, _ = listening
    flaky.failures = 1
    port.doRead()
    backoff.stop()
    assert reactor.getDelayedCalls() == [] and not backoff.paused


def test_guard_accepts_only_socket_ports():
    """guard_accepts wraps a real listening port's socket and leaves anything else alone."""
    reactor = MemoryReactorClock()
    assert guard_accepts(object(), reactor) is None
    port = tcp.Port(0, protocol.Factory.forProtocol(protocol.Protocol), interface="127.0.0.1", reactor=reactor)
    port.startListening()
    try:
        backoff = guard_accepts(port, reactor, 0.25)
        assert isinstance(backoff, AcceptBackoff) and backoff.delay == 0.25
        assert isinstance(port.socket, _fdlimit._WatchedSocket)
        assert port.getHost().port > 0  # everything but accept is the socket's own
        assert guard_accepts(port, reactor) is None  # never wrapped twice
    finally:
        port.connectionLost(None)
