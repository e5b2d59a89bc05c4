"""
txrevproxy's reactor (:mod:`txrevproxy._reactor`): ready descriptors are handled without a log context pushed
per event, and an exception escaping a handler is still logged with the descriptor's prefix. On a pipe, no sockets.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from twisted.internet.error import ConnectionDone
from twisted.python import context, log
from twisted.python.failure import Failure

from txrevproxy._reactor import ProxyReactor


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
