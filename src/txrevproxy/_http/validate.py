"""
Request-head validation: the rules a request must pass before anything of it is forwarded.

Pure functions: a request line and header list in, ``None`` (accept) or a :class:`Rejection` (status and one-line
reason) out. Framing rules live in :mod:`txrevproxy._http.framing`; this module calls them so that one answer covers
the whole head.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import NamedTuple

from attrs import frozen

from txrevproxy._http.framing import Framing, FramingError, request_framing_of
from txrevproxy._http.headers import (
    CONNECTION,
    CONTENT_LENGTH,
    HOP_BY_HOP,
    OTHER,
    REBUILT_RESPONSE,
    TRANSFER_ENCODING,
    connection_options,
    end_to_end,
    field_line,
    is_token,
    known_field_line,
    only_line_ends,
    remember_match,
)


@frozen
class Rejection:
    status: int
    reason: str


# Visible ASCII (RFC 9112 section 3.2), which is all a request target may hold: deleting it leaves nothing.
_VISIBLE = bytes(range(0x21, 0x7F))
# reg-name / IPv4 / [IPv6] with an optional port (RFC 3986 section 3.2.2, RFC 9110 section 7.2).
_HOST = re.compile(rb"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]*)(:[0-9]{0,5})?\Z")
#: Host values already found valid (a connection sends the same one every time); bounded like KNOWN_TOKENS.
_VALID_HOSTS: set[bytes] = set()
_VALID_HOSTS_MAX = 256


def valid_host(value: bytes) -> bool:
    """
    Whether ``value`` is a syntactically valid ``Host``: reg-name, IPv4 or ``[IPv6]``, with an optional port.
    """
    return value in _VALID_HOSTS or remember_match(_HOST, value, _VALID_HOSTS, _VALID_HOSTS_MAX)


_VERSIONS = (b"HTTP/1.1", b"HTTP/1.0")
_FRAMING_AND_ROUTING = frozenset([b"content-length", b"transfer-encoding", b"host"])
_VERSION = re.compile(rb"^HTTP/[0-9]\.[0-9]\Z")


def authority_of(target: bytes) -> bytes | None:
    """
    The authority of an absolute-form target (``http://host:port/path``), or ``None`` for other forms.
    """
    scheme, sep, rest = target.partition(b"://")
    if not sep or scheme.lower() not in (b"http", b"https"):
        return None
    end = min((i for i in (rest.find(b"/"), rest.find(b"?")) if i >= 0), default=len(rest))
    return rest[:end]


def origin_form(target: bytes) -> bytes:
    """
    The origin-form (path and query) of a request target; absolute-form is reduced to its path.
    """
    authority = authority_of(target)
    if authority is None:
        return target
    rest = target.split(b"://", 1)[1][len(authority) :]
    if not rest.startswith(b"/"):
        rest = b"/" + rest
    return rest


def validate_request(
    method: bytes, target: bytes, version: bytes, headers: Sequence[tuple[bytes, bytes]]
) -> tuple[Framing | None, Rejection | None]:
    """
    Check a request head; return its body framing, or the rejection to answer with.
    """
    if version not in _VERSIONS:
        if _VERSION.match(version):
            return None, Rejection(505, "unsupported HTTP version")
        return None, Rejection(400, "malformed HTTP version")
    if not is_token(method):
        return None, Rejection(400, "method is not a token")
    if not target or target.translate(None, _VISIBLE):
        return None, Rejection(400, "invalid bytes in request target")
    if b"#" in target:
        return None, Rejection(400, "fragment in request target")
    if not (target.startswith(b"/") or (target == b"*" and method == b"OPTIONS") or authority_of(target)):
        return None, Rejection(400, "request target is not origin-form or absolute-form")

    # One pass over the headers (this runs for every request) for the few that decide validity and framing.
    hosts: list[bytes] = []
    te: list[bytes] = []
    cl: list[bytes] = []
    for name, value in headers:
        size = len(name)
        if size != 4 and size != 14 and size != 17:
            continue  # (no need to lower-case a name that cannot be one of these, or an _-alias of one)
        lower = name.lower()
        if lower == b"host":
            hosts.append(value)
        elif lower == b"content-length":
            cl.append(value)
        elif lower == b"transfer-encoding":
            te.append(value)
        elif b"_" in lower and lower.replace(b"_", b"-") in _FRAMING_AND_ROUTING:
            # CGI/WSGI servers read Content_Length as Content-Length: a disagreement the upstream would resolve.
            return None, Rejection(400, "header name that differs from a framing header only by _")

    if len(hosts) > 1:
        return None, Rejection(400, "more than one Host header")
    if not hosts and version == b"HTTP/1.1":
        return None, Rejection(400, "missing Host header")
    if hosts and not valid_host(hosts[0]):
        return None, Rejection(400, "malformed Host header")
    authority = authority_of(target) if not target.startswith(b"/") else None
    if authority is not None and hosts and authority.lower() != hosts[0].lower():
        return None, Rejection(400, "Host disagrees with the absolute-form target")

    try:
        return request_framing_of(version, te, cl), None
    except FramingError as e:
        return None, Rejection(e.status, e.reason)


class ResponseHead(NamedTuple):
    """
    :ivar connection: the lower-cased options named in its ``Connection`` headers (found while parsing).
    :ivar content_length: the values of its ``Content-Length`` headers, found while parsing (``None``: not looked
        for; use the headers).
    :ivar transfer_encoding: the same for ``Transfer-Encoding``.
    :ivar relayed: its headers but the hop-by-hop ones and ``Content-Length`` (found while parsing; ``None``: not
        looked for). Those named in ``Connection`` are still to be dropped: see
        :func:`relayed_headers`.
    """

    version: bytes
    status: int
    reason: bytes
    headers: list[tuple[bytes, bytes]]
    connection: frozenset[bytes] = frozenset()
    content_length: list[bytes] | None = None
    transfer_encoding: list[bytes] | None = None
    relayed: list[tuple[bytes, bytes]] | None = None


#: What parse_response_head leaves out of ResponseHead.relayed.
_LEFT_OUT = HOP_BY_HOP | REBUILT_RESPONSE


def relayed_headers(head: ResponseHead) -> list[tuple[bytes, bytes]]:
    """
    The headers of an upstream response to relay: all but hop-by-hop ones, those named in ``Connection``, and
    ``Content-Length`` (the proxy frames the body itself).
    """
    if head.relayed is None:
        return end_to_end(head.headers, REBUILT_RESPONSE, head.connection)
    if head.connection <= _LEFT_OUT:  # (Connection: keep-alive, the usual case, names nothing more to drop)
        return head.relayed
    return end_to_end(head.relayed, REBUILT_RESPONSE, head.connection)


class InvalidResponse(Exception):
    """
    The upstream's response head breaks HTTP/1.1 syntax; the message is a one-line reason.
    """


_STATUS_LINE = re.compile(rb"(HTTP/1\.[01]) ([1-9][0-9][0-9])(?: ([^\x00-\x08\x0a-\x1f\x7f]*))?\Z")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


def parse_response_head(head: bytes, max_headers: int = 100) -> ResponseHead:
    """
    Parse a response head (status line and header lines, without the final blank line) strictly: CRLF line ends
    only, no obs-fold, no whitespace before a colon, token names, no control bytes in values.
    """
    lines = head.split(b"\r\n")
    # Control bytes (a bare CR among them) anywhere in a value: one pass over the whole head, not one per line.
    values_bad = not only_line_ends(head, len(lines) - 1)
    if values_bad and head.count(b"\n") != len(lines) - 1:
        raise InvalidResponse("bare LF in response head")
    match = _STATUS_LINE.match(lines[0])
    if match is None:
        raise InvalidResponse("malformed status line")
    if len(lines) - 1 > max_headers:
        raise InvalidResponse("too many response headers")
    headers = []
    relayed = []
    connection: list[bytes] = []
    content_length: list[bytes] = []
    transfer_encoding: list[bytes] = []
    for line in lines[1:]:
        found = known_field_line(line) or field_line(line)
        if found is None:
            if b":" not in line:
                raise InvalidResponse("response header line without a colon")
            raise InvalidResponse("invalid response header name")
        header, kind = found
        if values_bad and _BAD_VALUE.search(header[1]):
            raise InvalidResponse("control byte in response header value")
        headers.append(header)
        # The headers the proxy itself acts on, and those it relays, found in this one pass.
        if kind == OTHER:
            relayed.append(header)
        elif kind == CONNECTION:
            connection.append(header[1])
        elif kind == CONTENT_LENGTH:
            content_length.append(header[1])
        elif kind == TRANSFER_ENCODING:
            transfer_encoding.append(header[1])
    return ResponseHead(
        match.group(1),
        int(match.group(2)),
        match.group(3) or b"",
        headers,
        connection_options(connection),
        content_length,
        transfer_encoding,
        relayed,
    )
