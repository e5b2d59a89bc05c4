"""
The access log: line format and escaping, dates, batching by time and size, and pipe-sized writes.
"""

from __future__ import annotations

import datetime
import os

import pytest
from twisted.internet.task import Clock

from tests._harness import Harness
from txrevproxy._server.accesslog import (
    FLUSH_INTERVAL,
    FLUSH_SIZE,
    AccessLog,
    combined_line,
    line_batches,
    log_date,
    write_all,
)


def test_combined_line():
    """A line has nginx's combined fields, then the duration in milliseconds."""
    line = combined_line(b"10.0.0.1", b"[d]", b"GET", b"/a?b", b"HTTP/1.1", 200, 12, None, b"curl/8", 0.0015)
    assert line == b'10.0.0.1 - - [d] "GET /a?b HTTP/1.1" 200 12 "-" "curl/8" 1.500\n'


def test_escaping():
    """Quotes, backslashes, controls and non-ASCII bytes are written as \\xHH; nothing can break the line."""
    line = combined_line(b"ip", b"[d]", b"GET", b"/", b"HTTP/1.1", 200, 0, b'a"b\\c', b"\xe9\x1b\n", 0)
    assert b'"a\\x22b\\x5Cc" "\\xE9\\x1B\\x0A"' in line
    assert line.count(b"\n") == 1


def test_log_date():
    """Dates are in the common log format, UTC."""
    assert log_date(0) == "[01/Jan/1970:00:00:00 +0000]"
    when = 1795000000.9
    expected = datetime.datetime.fromtimestamp(int(when), datetime.timezone.utc).strftime("[%d/%b/%Y:%H:%M:%S +0000]")
    assert log_date(when) == expected == "[18/Nov/2026:11:06:40 +0000]"


def test_lines_are_written_in_batches():
    """Lines wait until FLUSH_INTERVAL has passed, then go out in one write."""
    clock, written = Clock(), []
    log = AccessLog(written.append, clock)
    log.add(b"a\n")
    log.add(b"b\n")
    assert written == []
    clock.advance(FLUSH_INTERVAL)
    assert written == [b"a\nb\n"]
    clock.advance(FLUSH_INTERVAL)
    assert written == [b"a\nb\n"]


def test_a_full_batch_is_written_at_once():
    """Once FLUSH_SIZE bytes wait, they are written without waiting for the timer."""
    clock, written = Clock(), []
    log = AccessLog(written.append, clock)
    line = b"x" * 99 + b"\n"
    for _ in range(FLUSH_SIZE // 100 + 1):
        log.add(line)
    assert written and sum(map(len, written)) >= FLUSH_SIZE
    assert not clock.getDelayedCalls()


@pytest.mark.parametrize("sizes", [[10] * 3, [100] * 50, [5000], [10, 5000, 10], [4096], [4095, 1]])
def test_line_batches(sizes):
    """Pieces are whole lines, at most 4 KiB unless one line is longer, and join back to the input."""
    data = b"".join(b"x" * (n - 1) + b"\n" for n in sizes)
    pieces = line_batches(data, 4096)
    assert b"".join(pieces) == data
    assert all(p.endswith(b"\n") and (len(p) <= 4096 or p.count(b"\n") == 1) for p in pieces)


def test_write_all_to_a_pipe():
    """write_all writes every byte to the descriptor."""
    r, w = os.pipe()
    try:
        write_all(w)(b"one\ntwo\n")
        assert os.read(r, 100) == b"one\ntwo\n"
    finally:
        os.close(r)
        os.close(w)


def test_proxy_site_logs_relayed_requests():
    """Each answered request through ProxySite becomes one line with client, request, status, length and agent."""
    h = Harness()
    written: list[bytes] = []
    h.site.access_log = AccessLog(written.append, h.reactor)
    h.send(b"GET /x?y HTTP/1.1\r\nHost: e\r\nUser-Agent: ua\r\n\r\n")
    h.upstream().accept().respond(b"HTTP/1.1 201 Created\r\nContent-Length: 3\r\n\r\nabc")
    h.advance(FLUSH_INTERVAL)
    assert written == [b'10.0.0.1 - - [01/Jan/1970:00:00:00 +0000] "GET /x?y HTTP/1.1" 201 3 "-" "ua" 0.000\n']
