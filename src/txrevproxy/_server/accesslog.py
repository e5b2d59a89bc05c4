"""
The access log: one line per answered request in the combined log format, written in batches.

Twisted's ``Site.log`` formats each line through ``twisted.logger`` (an event, observers, a timestamp formatted per
line) and was a fifth of the daemon's time per request. :class:`AccessLog` formats a line with one string
operation, keeps the date text for a whole second, and writes what has gathered at most every
:data:`FLUSH_INTERVAL` seconds (or once :data:`FLUSH_SIZE` bytes are waiting) with a single write.

Line format (nginx's ``combined``, plus the time from the end of the request head to the end of the response, in
milliseconds)::

    127.0.0.1 - - [23/Nov/2026:10:00:00 +0000] "GET /path HTTP/1.1" 200 12 "referer" "user-agent" 0.512

Bytes that could break a line or a field (controls, ``"``, ``\\``, non-ASCII) are written as ``\\xHH``.
"""

from __future__ import annotations

import os
import re
import select
import time
from collections.abc import Callable
from typing import Protocol

from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime

#: Seconds lines may wait before they are written.
FLUSH_INTERVAL = 0.2
#: Bytes of waiting lines that trigger a write at once.
FLUSH_SIZE = 65536

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_NEEDS_ESCAPE = re.compile(rb'[^\x20-\x7e]|["\\]')
_ESCAPED = tuple(b"\\x%02X" % i if _NEEDS_ESCAPE.match(bytes([i])) else bytes([i]) for i in range(256))


def escape(value: bytes) -> bytes:
    """
    ``value`` for a log line: printable ASCII as is, anything else (and ``"``, ``\\``) as ``\\xHH``.
    """
    if _NEEDS_ESCAPE.search(value) is None:  # the common case: one search, no copy
        return value
    return b"".join([_ESCAPED[i] for i in value])


def log_date(seconds: float) -> str:
    """
    ``[dd/Mon/yyyy:hh:mm:ss +0000]`` for ``seconds`` since the epoch, in UTC.
    """
    t = time.gmtime(seconds)
    return f"[{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000]"


def combined_line(
    client: bytes,
    date: bytes,
    method: bytes,
    target: bytes,
    version: bytes,
    status: int,
    length: int,
    referrer: bytes | None,
    agent: bytes | None,
    duration: float,
) -> bytes:
    """
    One access-log line (with its newline).
    """
    return b'%s - - %s "%s %s %s" %d %d "%s" "%s" %.3f\n' % (
        client,
        date,
        escape(method),
        escape(target),
        escape(version),
        status,
        length,
        b"-" if referrer is None else escape(referrer),
        b"-" if agent is None else escape(agent),
        duration * 1000,
    )


def line_batches(data: bytes, size: int = select.PIPE_BUF) -> list[bytes]:
    """
    ``data`` (whole lines) cut into pieces of whole lines of at most ``size`` bytes (a longer line alone), so that
    each piece is one atomic write to a pipe even when several processes write to it.
    """
    pieces = []
    start = 0
    while start < len(data):
        end = start + size
        if end >= len(data):
            end = len(data)
        else:
            cut = data.rfind(b"\n", start, end)
            end = cut + 1 if cut >= start else (data.find(b"\n", end) + 1 or len(data))
        pieces.append(data[start:end])
        start = end
    return pieces


def write_all(fd: int) -> Callable[[bytes], None]:
    """
    A ``write`` for :class:`AccessLog` that writes everything to the descriptor ``fd``, in :func:`line_batches`.
    """

    def write(data: bytes) -> None:
        for piece in line_batches(data):
            view = memoryview(piece)
            while view:
                view = view[os.write(fd, view) :]

    return write


class LoggedRequest(Protocol):
    """
    What the access log reads of an answered request: ``twisted.web``'s ``Request`` (so the proxy's own) has it all.
    The proxy's requests also have ``headerList()`` and ``started`` (the end of their head), used when present.
    """

    # Read-only (properties), so that a request whose attributes are of narrower types matches too.
    @property
    def client(self) -> IAddress | None: ...

    @property
    def method(self) -> bytes: ...

    @property
    def uri(self) -> bytes: ...

    @property
    def clientproto(self) -> bytes: ...

    @property
    def code(self) -> int: ...

    @property
    def sentLength(self) -> int: ...

    def getHeader(self, key: bytes) -> bytes | None: ...


def _referrer_and_agent(request: LoggedRequest) -> tuple[bytes | None, bytes | None]:
    """
    The last ``Referer`` and ``User-Agent`` values of a request (as ``getHeader`` gives them), in one pass over its
    header list when it keeps one (the proxy's own requests).
    """
    header_list: Callable[[], list[tuple[bytes, bytes]]] | None = getattr(request, "headerList", None)
    if header_list is None:
        return request.getHeader(b"referer"), request.getHeader(b"user-agent")
    referrer = agent = None
    for name, value in header_list():
        size = len(name)
        if size == 7 and name.lower() == b"referer":
            referrer = value
        elif size == 10 and name.lower() == b"user-agent":
            agent = value
    return referrer, agent


class AccessLog:
    """
    Gathers access-log lines and hands them to ``write`` in batches.

    :param write: takes the bytes of one or more whole lines (e.g. ``os.write`` on a descriptor, bound).
    :param clock: ``seconds`` for the dates, ``callLater`` for the batching.
    """

    def __init__(self, write: Callable[[bytes], object], clock: IReactorTime) -> None:
        self._write = write
        self._clock = clock
        self._lines: list[bytes] = []
        self._size = 0
        self._flush_call: IDelayedCall | None = None
        self._second = -1
        self._date = b""

    def date(self) -> bytes:
        now = int(self._clock.seconds())
        if now != self._second:
            self._second, self._date = now, log_date(now).encode("ascii")
        return self._date

    def log(self, request: LoggedRequest) -> None:
        """
        Record an answered ``twisted.web`` request.
        """
        referrer, agent = _referrer_and_agent(request)
        host: str | None = getattr(request.client, "host", None)  # IPv4Address, IPv6Address; not UNIXAddress
        started: float | None = getattr(request, "started", None)
        self.add(
            combined_line(
                (host or "-").encode("ascii", "backslashreplace"),
                self.date(),
                request.method,
                request.uri,
                request.clientproto,
                request.code,
                request.sentLength,
                referrer,
                agent,
                self._clock.seconds() - started if started is not None else 0.0,
            )
        )

    def add(self, line: bytes) -> None:
        self._lines.append(line)
        self._size += len(line)
        if self._size >= FLUSH_SIZE:
            self.flush()
        elif self._flush_call is None:
            self._flush_call = self._clock.callLater(FLUSH_INTERVAL, self.flush)

    def flush(self) -> None:
        if self._flush_call is not None:
            if self._flush_call.active():
                self._flush_call.cancel()
            self._flush_call = None
        if self._lines:
            data = b"".join(self._lines)
            self._lines = []
            self._size = 0
            self._write(data)
