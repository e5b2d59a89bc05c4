"""
Tests for :mod:`txrevproxy._http.head`: request-head syntax and size limits, as pure functions.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from txrevproxy._http.head import (
    HeadLimits,
    RequestHead,
    incomplete_head_problem,
    parse_request_head,
    parse_request_line,
)
from txrevproxy._http.validate import Rejection

LIMITS = HeadLimits()
SMALL = HeadLimits(request_line=40, header_line=30, header_section=80, header_count=3)


def _parse(head: bytes, limits: HeadLimits = LIMITS) -> RequestHead | Rejection:
    return parse_request_head(head, limits)


def test_parses_a_plain_head():
    """A request line and header lines are split into method, target, version and (name, value) pairs in order."""
    head = _parse(b"GET /a?b HTTP/1.1\r\nHost: x\r\nX-A:  1 \r\nx-a: 2\r\nEmpty:")
    assert head == RequestHead(
        b"GET", b"/a?b", b"HTTP/1.1", [(b"Host", b"x"), (b"X-A", b"1"), (b"x-a", b"2"), (b"Empty", b"")]
    )


def test_value_keeps_inner_whitespace_and_obs_text():
    """Inner spaces, tabs and obs-text bytes (0x80-0xFF) are kept in a value; only the edges are trimmed."""
    head = _parse(b"GET / HTTP/1.1\r\nX: \ta \t b\xe9\t")
    assert isinstance(head, RequestHead)
    assert head.headers == [(b"X", b"a \t b\xe9")]


@pytest.mark.parametrize(
    "head, status, reason",
    [
        # request line
        (b"GET  / HTTP/1.1", 400, "malformed request line"),
        (b"GET / HTTP/1.1 ", 400, "malformed request line"),
        (b" GET / HTTP/1.1", 400, "malformed request line"),
        (b"GET\t/ HTTP/1.1", 400, "malformed request line"),
        (b"GET /", 400, "HTTP/0.9"),
        (b"GET", 400, "malformed request line"),
        (b"", 400, "malformed request line"),
        (b"G(T / HTTP/1.1", 400, "method is not a token"),
        (b"GET / HTTP/1.1.1", 400, "malformed HTTP version"),
        (b"GET / http/1.1", 400, "malformed HTTP version"),
        (b"GET / HTTP/11", 400, "malformed HTTP version"),
        # line ends
        (b"GET / HTTP/1.1\nHost: x", 400, "bare CR or LF"),
        (b"GET / HTTP/1.1\r\nHost: x\rY: 1", 400, "bare CR or LF"),
        (b"GET / HTTP/1.1\r\nHost: x\n", 400, "bare CR or LF"),
        # header lines
        (b"GET / HTTP/1.1\r\n Host: x", 400, "obs-fold or whitespace"),
        (b"GET / HTTP/1.1\r\nHost: x\r\n folded", 400, "obs-fold or whitespace"),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\tfolded", 400, "obs-fold or whitespace"),
        (b"GET / HTTP/1.1\r\nHost : x", 400, "whitespace before the colon"),
        (b"GET / HTTP/1.1\r\nHost\t: x", 400, "whitespace before the colon"),
        (b"GET / HTTP/1.1\r\nHost x", 400, "without a colon"),
        (b"GET / HTTP/1.1\r\n: x", 400, "invalid header name"),
        (b"GET / HTTP/1.1\r\nX(y): x", 400, "invalid header name"),
        (b"GET / HTTP/1.1\r\nX\xe9: x", 400, "invalid header name"),
        (b"GET / HTTP/1.1\r\nX: a\x00b", 400, "control byte"),
        (b"GET / HTTP/1.1\r\nX: a\x7fb", 400, "control byte"),
        (b"GET / HTTP/1.1\r\nX: a\x1bb", 400, "control byte"),
        (b"GET / HTTP/1.1\r\nTransfer-Encoding: \x0bchunked", 400, "control byte"),
    ],
)
def test_syntax_rejections(head, status, reason):
    """Each malformed head is refused with its status and a reason naming the rule."""
    result = _parse(head)
    assert isinstance(result, Rejection)
    assert (result.status, reason in result.reason) == (status, True), result


@pytest.mark.parametrize(
    "head, status",
    [
        (b"GET /" + b"a" * 40 + b" HTTP/1.1", 414),
        (b"GET / HTTP/1.1\r\nX: " + b"a" * 30, 431),
        (b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4", 431),
        (b"GET / HTTP/1.1\r\n" + b"\r\n".join([b"A: " + b"a" * 25] * 3) + b"\r\nB: " + b"b" * 30, 431),
        (b"GET / HTTP/1.1\r\n" + b"\r\n".join([b"A: " + b"a" * 25] * 3), 431),  # section over 80 bytes
    ],
)
def test_size_limits(head, status):
    """A request line over its limit is 414; a header line, the header section or the header count over theirs 431."""
    result = _parse(head, SMALL)
    assert isinstance(result, Rejection) and result.status == status, result


def test_limits_are_inclusive():
    """A head exactly at every limit is accepted."""
    limits = HeadLimits(request_line=16, header_line=8, header_section=20, header_count=2)
    head = _parse(b"GET /12 HTTP/1.1\r\nA: 12345\r\nB: 12345", limits)
    assert isinstance(head, RequestHead), head


@pytest.mark.parametrize(
    "partial, status",
    [
        (b"GET / HTTP/1.1\nHost: x", 400),
        (b"GET / HTTP/1.1\r\nHost: x\n", 400),
        (b"GET / HTTP/1.1\rHost: x", 400),
        (b"GET /" + b"a" * 41, 414),
        (b"GET / HTTP/1.1\r\nX: " + b"a" * 40, 431),
        (b"GET / HTTP/1.1\r\n" + b"A: 12345678\r\n" * 8, 431),
        # a complete request line is judged at once
        (b"GET /r\r\n", 400),
        (b"GET  /r HTTP/1.1\r\n", 400),
        (b"G@T /r HTTP/1.1\r\n", 400),
        (b"GET /r HTTP/1.2x\r\n", 400),
        (b"GET /r HTTP/1.x\r\nHost: x", 400),
        (b"GET /" + b"a" * 31 + b" HTTP/1.1\r\n", 414),
    ],
)
def test_incomplete_head_problems(partial, status):
    """Stray line ends, over-long lines and a malformed request line are seen before the head ends (it may never
    end)."""
    problem = incomplete_head_problem(partial, 0, SMALL)
    assert problem is not None and problem.status == status, problem


@pytest.mark.parametrize(
    "partial",
    [
        b"G",
        b"GET / HTTP/1.1\r",
        b"GET / HTTP/1.1\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n\r",
    ],
)
def test_incomplete_head_in_progress_is_fine(partial):
    """A head cut anywhere, including between CR and LF, has nothing wrong with it yet."""
    assert incomplete_head_problem(partial, 0, SMALL) is None


REQUEST_LINES = [
    b"GET /a?b HTTP/1.1",
    b"OPTIONS * HTTP/1.0",
    b"GET / HTTP/2.0",  # (syntax only: the version is judged with the head's meaning)
    b"GET /r",
    b"GET",
    b"",
    b"GET  /r HTTP/1.1",
    b"GET /r HTTP/1.1 ",
    b" GET /r HTTP/1.1",
    b"GET\t/r HTTP/1.1",
    b"G@T /r HTTP/1.1",
    b"GET /r HTTP/1.2x",
    b"GET /r http/1.1",
    b"GET /" + b"a" * 8192 + b" HTTP/1.1",
]


@pytest.mark.parametrize("line", REQUEST_LINES)
def test_request_line_judged_alike_complete_or_not(line: bytes) -> None:
    """A request line gets the same verdict (status and reason) alone and still open as within a complete head."""
    verdict = parse_request_line(line, LIMITS)
    head = _parse(line)
    early = incomplete_head_problem(line + b"\r\n", 0, LIMITS)
    if isinstance(verdict, Rejection):
        assert head == verdict and early == verdict
    else:
        assert isinstance(head, RequestHead) and head[:3] == verdict and early is None


def test_request_line_judged_once() -> None:
    """The request line is judged by the call that first sees its CRLF whole, not again by later calls."""
    line = b"G@T /r HTTP/1.1\r\n"
    assert incomplete_head_problem(line + b"Host: x", len(line) - 1, LIMITS) == Rejection(400, "method is not a token")
    assert incomplete_head_problem(line + b"Host: x", len(line), LIMITS) is None


@given(st.binary(min_size=0, max_size=60), st.data())
@settings(max_examples=300, deadline=None)
def test_incremental_checks_match_a_whole_check(data, draw):
    """Checking a partial head in pieces (with ``checked``) finds a stray CR/LF exactly when checking it whole does."""
    data = data.replace(b"\r\n\r\n", b"")
    cuts = sorted(draw.draw(st.lists(st.integers(0, len(data)), max_size=5)))
    limits = HeadLimits(request_line=1000, header_line=1000, header_section=1000)
    whole = incomplete_head_problem(data, 0, limits)
    found = None
    checked = 0
    for end in [*cuts, len(data)]:
        if end < checked:
            continue
        found = incomplete_head_problem(data[:end], checked, limits)
        if found is not None:
            break
        checked = end
    if whole is None:
        assert found is None
    elif found is None:
        # Only a CR at a cut can hide: it was the last byte then, and what follows is checked at the end.
        assert whole.reason == "bare CR in the request head"
    else:
        assert found.status == whole.status
