"""
Request-head syntax (RFC 9112 sections 2-5): the bytes of a request line and header section in, a
:class:`RequestHead` or a :class:`~txrevproxy._http.validate.Rejection` out, under the size limits of
:class:`HeadLimits`.

Strict where Twisted's ``HTTPChannel`` is lax: CRLF line ends only (a bare CR or LF is refused), no obs-fold, no
whitespace before a colon or before the first header, header names are tokens, no control bytes in values, a
request line of exactly three parts. Meaning (``Host``, framing, target forms) is judged afterwards by
:func:`~txrevproxy._http.validate.validate_request`.

Two entry points: :func:`parse_request_head` for a complete head, and :func:`incomplete_head_problem` for a head
still arriving, which finds over-long lines, stray CR/LF and a malformed request line (as soon as its CRLF is in)
early instead of waiting for a blank line that may never come. Both judge the request line with
:func:`parse_request_line`. All are pure.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from attrs import frozen

from txrevproxy._http.headers import (
    CONNECTION,
    KNOWN_TOKENS,
    connection_options,
    field_line,
    is_token,
    known_field_line,
    only_line_ends,
)
from txrevproxy._http.validate import Rejection

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_VERSION = re.compile(rb"HTTP/[0-9]\.[0-9]\Z")
_USUAL_VERSIONS = (b"HTTP/1.1", b"HTTP/1.0")
# A field value may hold HTAB, SP, visible ASCII and obs-text; any other control byte is refused.
_BAD_VALUE_BYTE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


@frozen
class HeadLimits:
    """
    Size limits on a request head, in bytes (lines counted without their CRLF) and header lines.
    """

    request_line: int = 8192
    header_line: int = 8192
    header_section: int = 32768
    header_count: int = 100


class RequestHead(NamedTuple):
    """
    :ivar connection: the lower-cased options named in its ``Connection`` headers (found while parsing).
    """

    method: bytes
    target: bytes
    version: bytes
    headers: list[tuple[bytes, bytes]]
    connection: frozenset[bytes] = frozenset()


def _too_large(what: str) -> Rejection:
    return Rejection(431, what)


def parse_request_line(line: bytes, limits: HeadLimits) -> tuple[bytes, bytes, bytes] | Rejection:
    """
    Split a complete request line (without its CRLF), ``method SP request-target SP HTTP-version`` with exactly one
    space each: 414 when it is longer than ``limits`` allow, else 400 when it is malformed.
    """
    if len(line) > limits.request_line:
        return Rejection(414, "request line too long")
    parts = line.split(b" ")
    if len(parts) != 3 or b"" in parts:
        if len(parts) == 2 and _TOKEN.match(parts[0]) and parts[1].startswith(b"/"):
            return Rejection(400, "HTTP/0.9 request line")
        return Rejection(400, "malformed request line")
    method, target, version = parts
    if not is_token(method):
        return Rejection(400, "method is not a token")
    if version not in _USUAL_VERSIONS and not _VERSION.match(version):
        return Rejection(400, "malformed HTTP version")
    return method, target, version


def parse_header_line(line: bytes) -> tuple[bytes, bytes] | Rejection:
    """
    Split ``name ":" OWS value OWS``.
    """
    if line[:1] in (b" ", b"\t"):
        return Rejection(400, "obs-fold or whitespace before a header name")
    name, colon, value = line.partition(b":")
    if not colon:
        return Rejection(400, "header line without a colon")
    if name not in KNOWN_TOKENS and not is_token(name):  # (the set test first: no call for known names)
        if name.rstrip(b" \t") != name:
            return Rejection(400, "whitespace before the colon in a header line")
        return Rejection(400, "invalid header name")
    value = value.strip(b" \t")
    if _BAD_VALUE_BYTE.search(value):
        return Rejection(400, "control byte in a header value")
    return name, value


def parse_request_head(head: bytes, limits: HeadLimits) -> RequestHead | Rejection:
    """
    Parse a complete request head: the request line and header lines, without the blank line that ends it.
    """
    lines = head.split(b"\r\n")
    crlf = len(lines) - 1
    clean = only_line_ends(head, crlf)  # (then no bare CR or LF, and no control byte in any value)
    if not clean and (head.count(b"\r") != crlf or head.count(b"\n") != crlf):
        return Rejection(400, "bare CR or LF in the request head")
    request_line = lines[0]
    parsed = parse_request_line(request_line, limits)
    if isinstance(parsed, Rejection):
        return parsed
    if len(lines) - 1 > limits.header_count:
        return _too_large("too many header lines")
    if len(head) - len(request_line) > limits.header_section:
        return _too_large("header section too large")
    headers = []
    connection: list[bytes] = []
    if clean and b"\n " not in head and b"\n\t" not in head:
        # The usual head: no control byte and no line starting with whitespace anywhere, so that each line needs
        # only its length, colon and name checked (field_line; a line failing one gets parse_header_line's answer).
        max_line = limits.header_line
        for line in lines[1:]:
            found = known_field_line(line) or field_line(line)
            if found is None or len(line) > max_line:
                rejection = _header_line(line, max_line)
                # field_line refuses only lines without a colon or with a name that is not a token, both of which
                # parse_header_line refuses too; an over-long line is refused before it is split.
                assert isinstance(rejection, Rejection)
                return rejection
            header, kind = found
            if kind == CONNECTION:
                connection.append(header[1])
            headers.append(header)
    else:
        for line in lines[1:]:
            split = _header_line(line, limits.header_line)
            if isinstance(split, Rejection):
                return split
            if len(split[0]) == 10 and split[0].lower() == b"connection":
                connection.append(split[1])
            headers.append(split)
    return RequestHead(parsed[0], parsed[1], parsed[2], headers, connection_options(connection))


def _header_line(line: bytes, max_line: int) -> tuple[bytes, bytes] | Rejection:
    # parse_header_line, after the line-length limit.
    if len(line) > max_line:
        return _too_large("header line too long")
    return parse_header_line(line)


def incomplete_head_problem(buffer: bytes | bytearray, checked: int, limits: HeadLimits) -> Rejection | None:
    """
    What is already wrong with a head that has not ended yet (no blank line so far), or ``None``.

    ``checked`` is how many leading bytes an earlier call already checked (for stray CR/LF, and the request line if
    its CRLF was among them), so that a head arriving a byte at a time costs linear work in total and its request
    line is judged once, by the call that first sees its CRLF. A CR at the very end may still be followed by its LF.
    """
    if buffer.count(b"\n", checked) != buffer.count(b"\r\n", max(checked - 1, 0)):
        return Rejection(400, "bare LF in the request head")
    trailing_cr = 1 if buffer.endswith(b"\r") else 0
    unchecked_trailing_cr = trailing_cr if len(buffer) > checked else 0
    if buffer.count(b"\r", checked) - unchecked_trailing_cr != buffer.count(b"\r\n", checked):
        return Rejection(400, "bare CR in the request head")
    first_end = buffer.find(b"\r\n")
    if first_end < 0:
        if len(buffer) - trailing_cr > limits.request_line:
            return Rejection(414, "request line too long")
        return None
    if first_end + 2 > checked:
        # The request line is complete since this call: judged now, not once the head ends (it may never end).
        request_line = parse_request_line(bytes(buffer[:first_end]), limits)
        if isinstance(request_line, Rejection):
            return request_line
    last_end = buffer.rfind(b"\r\n")
    if len(buffer) - trailing_cr - (last_end + 2) > limits.header_line:
        return _too_large("header line too long")
    if len(buffer) - (first_end + 2) > limits.header_section:
        return _too_large("header section too large")
    return None
