"""
txrevproxy's reactor (:mod:`txrevproxy._daemon.reactor`): ready descriptors are handled without a log context pushed
per event, and an exception escaping a handler is still logged with the descriptor's prefix; busy polling follows
I/O for up to its time, never past the reactor's timeout. On a pipe or a scripted poller, no sockets.
"""

from __future__ import annotations

import os
import select
from collections.abc import Callable, Iterator

import pytest
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.python import context, log
from twisted.python.failure import Failure

from txrevproxy._daemon.reactor import ProxyReactor


class PipeReader:
    """
    The read end of a pipe as a reactor reader that records what it reads; ``done`` makes doRead end it.
    """

    def __init__(self, fd: int, done: bool = False, lost_raises: bool = False) -> None:
        self.fd = fd
        self.done = done
        self.lost_raises = lost_raises
        self.read: list[bytes] = []
        self.systems: list[object] = []
        self.lost: list[Failure] = []

    def fileno(self) -> int:
        return self.fd

    def logPrefix(self) -> str:
        return "PipeReader,7"

    def doRead(self) -> object:
        self.systems.append(context.get(log.ILogContext, {}).get("system"))
        self.read.append(os.read(self.fd, 100))
        return ConnectionDone() if self.done else None

    def connectionLost(self, reason: Failure) -> None:
        self.lost.append(reason)
        if self.lost_raises:
            raise RuntimeError("connectionLost went wrong")


@pytest.fixture
def reactor() -> Iterator[ProxyReactor]:
    reactor = ProxyReactor()
    yield reactor
    reactor.removeAll()
    reactor.waker.connectionLost(None)
    reactor._poller.close()


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    yield r, w
    for fd in (r, w):
        try:
            os.close(fd)
        except OSError:
            pass


def test_ready_reader_is_handled_without_a_pushed_log_context(pipe: tuple[int, int], reactor: ProxyReactor) -> None:
    """A readable descriptor's doRead runs on the next iteration, with no per-event log context around it."""
    reader = PipeReader(pipe[0])
    reactor.addReader(reader)
    reactor.doIteration(0)
    assert reader.read == []
    os.write(pipe[1], b"hello")
    reactor.doIteration(0)
    assert reader.read == [b"hello"]
    assert reader.systems == ["-"]  # (the default context: not "PipeReader,7", as callWithLogger would make it)


def test_a_reader_that_ends_is_disconnected(pipe: tuple[int, int], reactor: ProxyReactor) -> None:
    """doRead returning a reason removes the descriptor and calls its connectionLost with that reason."""
    reader = PipeReader(pipe[0], done=True)
    reactor.addReader(reader)
    os.write(pipe[1], b"x")
    reactor.doIteration(0)
    assert [f.type for f in reader.lost] == [ConnectionDone]
    assert reader not in reactor.getReaders()


def test_an_exception_escaping_a_handler_is_logged_with_the_prefix(
    pipe: tuple[int, int], reactor: ProxyReactor
) -> None:
    """An exception from connectionLost is logged as an error naming the descriptor, and the loop goes on."""
    reader = PipeReader(pipe[0], done=True, lost_raises=True)
    other_r, other_w = os.pipe()
    other = PipeReader(other_r)
    events: list[dict[str, object]] = []
    log.addObserver(events.append)
    try:
        reactor.addReader(reader)
        reactor.addReader(other)
        os.write(pipe[1], b"x")
        os.write(other_w, b"y")
        reactor.doIteration(0)
    finally:
        log.removeObserver(events.append)
        reactor.removeReader(other)
        os.close(other_r)
        os.close(other_w)
    errors = [e for e in events if e.get("isError")]
    assert len(errors) == 1 and errors[0]["system"] == "PipeReader,7"
    assert errors[0]["failure"].check(RuntimeError)
    assert other.read, "the other ready descriptor was not handled"


class ScriptedPoller:
    """
    Stands in for the reactor's epoll object: each ``poll`` returns the next scripted result (then nothing) and
    moves ``clock`` on by ``step`` seconds, and every timeout asked for is recorded.
    """

    def __init__(self, clock: Clock, step: float, results: list[list[tuple[int, int]]]) -> None:
        self.clock = clock
        self.step = step
        self.results = results
        self.timeouts: list[float] = []

    def poll(self, timeout: float, maxevents: int) -> list[tuple[int, int]]:
        self.timeouts.append(timeout)
        self.clock.advance(self.step)
        return self.results.pop(0) if self.results else []


READY = [(999, select.EPOLLIN)]  # (a descriptor the reactor does not know: the event is skipped)
US = 1e-6


@pytest.fixture
def scripted(reactor: ProxyReactor) -> Iterator[Callable[..., ScriptedPoller]]:
    """Puts a ScriptedPoller (10 µs per poll) and its clock in ``reactor``; gives the real poller back after."""
    real = reactor._poller

    def install(*results: list[tuple[int, int]], busy_poll: float = 0.0) -> ScriptedPoller:
        clock = Clock()
        poller = ScriptedPoller(clock, 10 * US, list(results))
        reactor._poller, reactor._now, reactor.busy_poll = poller, clock.seconds, busy_poll
        return poller

    yield install
    reactor._poller = real


def test_without_busy_polling_each_iteration_blocks(reactor: ProxyReactor, scripted) -> None:
    """By default every iteration is one poll with the reactor's timeout, after I/O as before it."""
    poller = scripted(READY, [], READY)
    for timeout in (1.0, None, 2.0):
        reactor.doPoll(timeout)
    assert poller.timeouts == [1.0, -1, 2.0]


def test_after_io_the_loop_polls_without_blocking_until_events_come(reactor: ProxyReactor, scripted) -> None:
    """The iteration after one that handled I/O asks with a zero timeout until events come (within busy_poll)."""
    poller = scripted(READY, [], [], READY, busy_poll=100 * US)
    reactor.doPoll(1.0)  # nothing before it: blocks
    reactor.doPoll(1.0)
    assert poller.timeouts == [1.0, 0, 0, 0]


def test_busy_polling_gives_up_after_its_time_and_blocks_for_the_rest(reactor: ProxyReactor, scripted) -> None:
    """With nothing for busy_poll, the loop blocks for what is left of the timeout; the next iteration after
    that idle one blocks at once."""
    poller = scripted(READY, busy_poll=30 * US)
    reactor.doPoll(1.0)
    reactor.doPoll(1.0)
    assert poller.timeouts[:4] == [1.0, 0, 0, 0]
    assert poller.timeouts[4] == pytest.approx(1.0 - 30 * US) and len(poller.timeouts) == 5
    reactor.doPoll(1.0)
    assert poller.timeouts[5:] == [1.0]


def test_busy_polling_never_outlasts_the_reactors_timeout(reactor: ProxyReactor, scripted) -> None:
    """A timed call due sooner than busy_poll bounds the spin: the last poll asks for no wait at all. Without a
    timeout the final poll blocks indefinitely; with a zero timeout there is no spin."""
    poller = scripted(READY, busy_poll=100 * US)
    reactor.doPoll(1.0)
    reactor.doPoll(15 * US)
    assert poller.timeouts == [1.0, 0, 0, 0.0]
    poller = scripted(READY, busy_poll=20 * US)
    reactor.doPoll(None)
    reactor.doPoll(None)
    assert poller.timeouts == [-1, 0, 0, -1]
    poller = scripted(READY, busy_poll=20 * US)
    reactor.doPoll(None)
    reactor.doPoll(0)
    assert poller.timeouts == [-1, 0]


def test_busy_polling_on_a_real_poller_handles_what_comes(pipe: tuple[int, int], reactor: ProxyReactor) -> None:
    """On the real epoll: a byte written during the spin is read by that iteration."""
    reader = PipeReader(pipe[0])
    reactor.addReader(reader)
    reactor.busy_poll = 0.5
    os.write(pipe[1], b"a")
    reactor.doIteration(1.0)
    assert reader.read == [b"a"] and reactor._active
    os.write(pipe[1], b"b")
    reactor.doIteration(1.0)
    assert reader.read == [b"a", b"b"]
