"""
Message body framing (RFC 9112 section 6): how long a request or response body is, and the chunked coding.

Owns: the framing decision for requests and responses as pure functions returning a :class:`Framing`, a strict
incremental decoder for ``chunked`` bodies, and the encoder. Errors are :class:`FramingError` carrying the status
a server answers with and a one-line reason.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from enum import Enum
from typing import NamedTuple

from txrevproxy._http.headers import values_of


class FramingError(Exception):
    """
    A message whose body length cannot be determined unambiguously.

    :ivar status: the HTTP status a server answers with (400 or 501).
    :ivar reason: a one-line human reason.
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(status, reason)
        self.status = status
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


class Kind(Enum):
    NONE = "none"  # no body at all
    LENGTH = "length"  # exactly ``length`` bytes
    CHUNKED = "chunked"  # chunked coding, ends with the last chunk
    CLOSE = "close"  # responses only: the body ends when the connection closes


class Framing(NamedTuple):
    """
    How a body is delimited. (Records made for every request are immutable named tuples: frozen like an attrs
    ``@frozen`` class, at about half its cost to make.)
    """

    kind: Kind
    length: int | None = None


NO_BODY = Framing(Kind.NONE)
CHUNKED = Framing(Kind.CHUNKED)
UNTIL_CLOSE = Framing(Kind.CLOSE)

_MAX_LENGTH_DIGITS = 20


def parse_content_length(values: Sequence[bytes]) -> int | None:
    """
    The single length named by the ``Content-Length`` header values, or ``None`` when there are none.

    Repeated values (as separate headers or a comma list) are accepted only when identical (RFC 9110 section 8.6).
    Only plain decimal digits: no sign, no ``0x``, no whitespace inside, at most 20 digits.
    """
    if not values:
        return None
    if len(values) == 1:
        text = values[0]
        if text.isdigit() and text.isascii() and len(text) <= _MAX_LENGTH_DIGITS:
            return int(text)  # the common case: one plain number
    seen = {item.strip(b" \t") for value in values for item in value.split(b",")}
    if len(seen) != 1:
        raise FramingError(400, "conflicting Content-Length values")
    (text,) = seen
    if not (text.isdigit() and text.isascii()) or len(text) > _MAX_LENGTH_DIGITS:
        raise FramingError(400, "invalid Content-Length")
    return int(text)


def _codings(values: Sequence[bytes]) -> list[bytes]:
    # RFC 9110 section 5.6.1: empty list elements are ignored.
    codings = [c.strip(b" \t").lower() for v in values for c in v.split(b",")]
    return [c for c in codings if c]


def request_framing(version: bytes, headers: Sequence[tuple[bytes, bytes]]) -> Framing:
    """
    The framing of a request body (RFC 9112 section 6.3, read strictly: anything ambiguous is refused).
    """
    return request_framing_of(version, values_of(headers, b"transfer-encoding"), values_of(headers, b"content-length"))


def request_framing_of(version: bytes, te: Sequence[bytes], cl: Sequence[bytes]) -> Framing:
    """
    :func:`request_framing`, given the values of ``Transfer-Encoding`` and ``Content-Length`` already collected.
    """
    if te:
        if cl:
            raise FramingError(400, "both Transfer-Encoding and Content-Length")
        if version != b"HTTP/1.1":
            raise FramingError(400, "Transfer-Encoding in an HTTP/1.0 request")
        codings = _codings(te)
        if not codings or codings[-1] != b"chunked" or codings.count(b"chunked") != 1:
            # RFC 9112 section 6.3: a length that cannot be determined reliably is a 400.
            raise FramingError(400, "Transfer-Encoding does not end in a single chunked")
        if codings != [b"chunked"]:
            raise FramingError(501, "unsupported transfer coding")
        return CHUNKED
    length = parse_content_length(cl)
    if not length:
        return NO_BODY
    return Framing(Kind.LENGTH, length)


def response_framing(
    request_method: bytes,
    status: int,
    headers: Sequence[tuple[bytes, bytes]],
    te: list[bytes] | None = None,
    cl: list[bytes] | None = None,
) -> Framing:
    """
    The framing of a response body, given the request method it answers (RFC 9112 section 6.3). ``te`` and ``cl``:
    the ``Transfer-Encoding`` and ``Content-Length`` values when already known (else taken from ``headers``).

    Errors here mean the upstream sent an ambiguous response (the proxy answers 502).
    """
    if request_method == b"HEAD" or status < 200 or status in (204, 304):
        return NO_BODY
    if te is None:
        te = values_of(headers, b"transfer-encoding")
    if cl is None:
        cl = values_of(headers, b"content-length")
    if te:
        if cl:
            raise FramingError(502, "upstream sent both Transfer-Encoding and Content-Length")
        codings = _codings(te)
        if codings.count(b"chunked") > 1:
            raise FramingError(502, "upstream sent chunked more than once")
        if codings != [b"chunked"]:
            # Only chunked is relayed. Transfer-Encoding is hop-by-hop and the proxy re-frames every body, so any
            # other coding (gzip before chunked, or a final non-chunked coding delimited by close) would reach the
            # client silently undone: refuse instead, as nginx does ("upstream sent unknown Transfer-Encoding").
            raise FramingError(502, "unsupported transfer coding from upstream")
        return CHUNKED
    try:
        length = parse_content_length(cl)
    except FramingError as e:
        raise FramingError(502, f"upstream sent {e.reason}") from None
    if length is None:
        return UNTIL_CLOSE
    return Framing(Kind.LENGTH, length) if length else NO_BODY


def encode_chunk(data: bytes) -> list[bytes]:
    """
    One chunk of the chunked coding, as pieces for ``writeSequence``.
    """
    return [b"%x\r\n" % (len(data),), data, b"\r\n"]


LAST_CHUNK = b"0\r\n\r\n"

_HEX = frozenset(b"0123456789abcdefABCDEF")
_MAX_CHUNK_SIZE_DIGITS = 16
_MAX_CHUNK_LINE = 4096
_MAX_TRAILERS = 16384
_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED = rb'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
# chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )  (RFC 9112 section 7.1.1)
_CHUNK_EXTENSIONS = re.compile(rb"(?:[ \t]*;[ \t]*%s(?:[ \t]*=[ \t]*(?:%s|%s))?)*\Z" % (_TOKEN, _TOKEN, _QUOTED))


class ChunkedState(Enum):
    """
    Where a :class:`ChunkedDecoder` is in the chunked grammar. A plain Enum, with no transition table: its moves are
    the grammar itself, one per branch of ``feed``, taken for every chunk (a table lookup there would cost on the hot
    path and say nothing the branches do not).
    """

    SIZE = "size"  # reading a chunk-size line
    DATA = "data"  # reading chunk data
    DATA_CRLF = "data-crlf"  # reading the CRLF after chunk data
    TRAILER = "trailer"  # reading trailer lines, after the last chunk
    DONE = "done"  # the blank line after the trailers: the body is complete


# (Module-level aliases: compared on every chunk, and a global is cheaper than an Enum class attribute.)
_SIZE, _DATA, _DATA_CRLF, _TRAILER, _DONE = (
    ChunkedState.SIZE,
    ChunkedState.DATA,
    ChunkedState.DATA_CRLF,
    ChunkedState.TRAILER,
    ChunkedState.DONE,
)


class ChunkedDecoder:
    """
    A strict incremental decoder for the chunked coding (RFC 9112 section 7.1).

    ``feed`` hands body bytes to ``on_data`` as they arrive and returns any bytes after the end of the body
    (``None`` while the body is unfinished). Trailers are read and dropped. Malformed input raises
    :class:`FramingError`: size not plain hex, oversized, bare CR or LF, missing CRLF after data.
    """

    def __init__(self, on_data: Callable[[bytes], object], status: int = 400) -> None:
        self._on_data = on_data
        self._status = status
        self._buffer = b""
        self._remaining = 0  # bytes of chunk data still to come
        self._state = _SIZE
        self._trailer_bytes = 0

    @property
    def state(self) -> ChunkedState:
        return self._state

    @property
    def done(self) -> bool:
        return self._state is _DONE

    def _fail(self, reason: str) -> FramingError:
        return FramingError(self._status, reason)

    def _line(self, limit: int) -> bytes | None:
        end = self._buffer.find(b"\r\n")
        if end > limit or (end < 0 and len(self._buffer) > limit):
            # Checked on whole lines too, so that the outcome does not depend on how the bytes were split.
            raise self._fail("chunk line too long")
        if end < 0:
            return None
        if end > limit:
            raise self._fail("chunk line too long")
        line = self._buffer[:end]
        if b"\r" in line or b"\n" in line:
            raise self._fail("bare CR or LF in chunked body")
        self._buffer = self._buffer[end + 2 :]
        return line

    def feed(self, data: bytes) -> bytes | None:
        if self._buffer:
            data = self._buffer + data
        self._buffer = b""
        while True:
            state = self._state
            if state is _DATA:
                if not data:
                    return None
                if len(data) <= self._remaining:
                    self._remaining -= len(data)
                    self._on_data(data)
                    if self._remaining == 0:
                        self._state = _DATA_CRLF
                    return None
                piece, data = data[: self._remaining], data[self._remaining :]
                self._remaining = 0
                self._state = _DATA_CRLF
                self._on_data(piece)
                continue
            if state is _DONE:
                return data
            self._buffer = data
            if state is _DATA_CRLF:
                if not b"\r\n".startswith(data[:2]):
                    raise self._fail("missing CRLF after chunk data")
                if len(data) < 2:
                    return None
                data = data[2:]
                self._buffer = b""
                self._state = _SIZE
                continue
            if state is _SIZE:
                line = self._line(_MAX_CHUNK_LINE)
                if line is None:
                    return None
                size_text, semicolon, extensions = line.partition(b";")
                size_text = size_text.rstrip(b" \t")
                if not size_text or len(size_text) > _MAX_CHUNK_SIZE_DIGITS or not _HEX.issuperset(size_text):
                    raise self._fail("invalid chunk size")
                if semicolon and not _CHUNK_EXTENSIONS.match(semicolon + extensions):
                    raise self._fail("invalid chunk extension")
                self._remaining = int(size_text, 16)
                self._state = _DATA if self._remaining else _TRAILER
            else:  # trailer
                line = self._line(_MAX_TRAILERS)
                if line is None:
                    return None
                self._trailer_bytes += len(line) + 2
                if self._trailer_bytes > _MAX_TRAILERS:
                    raise self._fail("trailer section too large")
                if not line:
                    self._state = _DONE
            data, self._buffer = self._buffer, b""
