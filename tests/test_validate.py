"""
Request-head validation, request-target reduction and strict response-head parsing.
"""

from __future__ import annotations

import pytest

from txrevproxy._http.framing import CHUNKED, NO_BODY, Framing, Kind
from txrevproxy._http.headers import REBUILT_RESPONSE, end_to_end, values_of
from txrevproxy._http.validate import (
    _VALID_HOSTS,
    InvalidResponse,
    Rejection,
    ResponseHead,
    authority_of,
    origin_form,
    parse_response_head,
    relayed_headers,
    valid_host,
    validate_request,
)

H = [(b"Host", b"example.com")]
V11 = b"HTTP/1.1"
V10 = b"HTTP/1.0"


def _status(method, target, version, headers):
    framing, rejection = validate_request(method, target, version, headers)
    if rejection is None:
        assert isinstance(framing, Framing)
        return None
    assert framing is None
    assert isinstance(rejection, Rejection) and rejection.reason
    return rejection.status


# -- validate_request ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method, target, version, headers, expected",
    [
        # Accepted: origin-form, asterisk-form for OPTIONS, absolute-form, extension methods, HTTP/1.0.
        (b"GET", b"/", V11, H, None),
        (b"GET", b"/a/b?c=d&e=%20", V11, H, None),
        (b"POST", b"/x", V10, [], None),
        (b"M-SEARCH", b"/", V11, H, None),
        (b"get", b"/", V11, H, None),
        (b"OPTIONS", b"*", V11, H, None),
        (b"GET", b"/?q=~!$&'()*+,;=:@/?", V11, H, None),
        (b"GET", b"http://example.com/x?y", V11, H, None),
        (b"GET", b"HTTP://example.com", V11, H, None),
        (b"GET", b"https://example.com?q", V11, H, None),
        (b"GET", b"http://Example.COM/", V11, [(b"host", b"example.com")], None),
        (b"GET", b"http://example.com:8080/", V11, [(b"Host", b"example.com:8080")], None),
        (b"GET", b"http://example.com/", V10, [], None),
        # Versions: a well-formed unsupported version is 505, anything else 400 (RFC 9110 section 15.6.6).
        (b"GET", b"/", b"HTTP/2.0", H, 505),
        (b"GET", b"/", b"HTTP/3", H, 400),  # not HTTP/DIGIT.DIGIT
        (b"GET", b"/", b"HTTP/0.9", H, 505),
        (b"GET", b"/", b"", H, 400),
        (b"GET", b"/", b"garbage", H, 400),
        (b"GET", b"/", b"http/1.1", H, 400),
        (b"GET", b"/", b"HTTP1.1", H, 400),
        # Method must be a token (RFC 9110 section 9.1).
        (b"", b"/", V11, H, 400),
        (b"G ET", b"/", V11, H, 400),
        (b"GE(T", b"/", V11, H, 400),
        (b"GET\x00", b"/", V11, H, 400),
        (b"GET\n", b"/", V11, H, 400),  # (a regex with $ would have let a final newline through)
        (b"G\xc3\x89T", b"/", V11, H, 400),
        # Target: visible ASCII only, no fragment (RFC 9112 section 3.2).
        (b"GET", b"", V11, H, 400),
        (b"GET", b"/a b", V11, H, 400),
        (b"GET", b"/a\tb", V11, H, 400),
        (b"GET", b"/\x00", V11, H, 400),
        (b"GET", b"/\x1b[31m", V11, H, 400),
        (b"GET", b"/\x7f", V11, H, 400),
        (b"GET", b"/caf\xc3\xa9", V11, H, 400),
        (b"GET", b"/\x80", V11, H, 400),
        (b"GET", b"/\n", V11, H, 400),
        (b"GET", b"/a#frag", V11, H, 400),
        (b"GET", b"http://example.com/#", V11, H, 400),
        # Target form: origin-form, absolute-form, or * for OPTIONS only.
        (b"GET", b"*", V11, H, 400),
        (b"DELETE", b"*", V11, H, 400),
        (b"OPTIONS", b"*x", V11, H, 400),
        (b"GET", b"a/b", V11, H, 400),
        (b"GET", b"example.com:443", V11, H, 400),
        (b"CONNECT", b"example.com:443", V11, H, 400),
        (b"GET", b"ftp://example.com/", V11, H, 400),
        (b"GET", b"http:///x", V11, H, 400),
        (b"GET", b"//example.com/x", V11, H, None),
        # Absolute-form whose authority is not the Host.
        (b"GET", b"http://other.example/", V11, H, 400),
        (b"GET", b"http://example.com:8080/", V11, H, 400),
        # Host: required in 1.1, at most once, well formed (RFC 9112 section 3.2).
        (b"GET", b"/", V11, [], 400),
        (b"GET", b"http://example.com/", V11, [], 400),
        (b"GET", b"/", V10, [], None),
        (b"GET", b"/", V11, [(b"Host", b"a"), (b"Host", b"a")], 400),
        (b"GET", b"/", V11, [(b"Host", b"a"), (b"host", b"b")], 400),
        (b"GET", b"/", V10, [(b"Host", b"a"), (b"Host", b"a")], 400),
        # Framing errors come back as rejections with the framing status.
        (b"POST", b"/", V11, [*H, (b"Transfer-Encoding", b"chunked"), (b"Content-Length", b"3")], 400),
        (b"POST", b"/", V10, [*H, (b"Transfer-Encoding", b"chunked")], 400),
        (b"POST", b"/", V11, [*H, (b"Content-Length", b"3"), (b"Content-Length", b"4")], 400),
        (b"POST", b"/", V11, [*H, (b"Content-Length", b"-1")], 400),
    ],
)
def test_validate_request(method, target, version, headers, expected):
    """A request head is accepted (None) or rejected with the status RFC 9110/9112 call for."""
    assert _status(method, target, version, headers) == expected


@pytest.mark.parametrize(
    "host",
    [
        b"",
        b"example.com",
        b"EXAMPLE.com:8080",
        b"example.com:",
        b"127.0.0.1:80",
        b"[::1]",
        b"[::1]:8080",
        b"[::ffff:127.0.0.1]",
        b"xn--bcher-kva.example",
        b"a-b_c~d.%41",
    ],
)
def test_validate_request_good_host(host):
    """A Host that is a reg-name, IPv4 or bracketed IPv6 literal, with an optional port, is accepted."""
    assert _status(b"GET", b"/", V11, [(b"Host", host)]) is None


@pytest.mark.parametrize(
    "host",
    [
        b"exa mple.com",
        b"user@example.com",
        b"example.com/path",
        b"example.com:80:80",
        b"example.com:123456",
        b"example.com:http",
        b"::1",
        b"[::1",
        b"[example.com]",
        b"example.com\x00",
        b"example.com\n",
        b"caf\xc3\xa9.example",
    ],
)
def test_validate_request_malformed_host(host):
    """A Host field with an invalid value is rejected with 400 (RFC 9112 section 3.2)."""
    assert _status(b"GET", b"/", V11, [(b"Host", host)]) == 400


def test_valid_host_is_the_same_answer_when_remembered():
    """A Host found valid is remembered (up to a bound, short values only) without changing any answer."""
    long_host = b"a" * 200 + b".example"
    for _ in range(2):
        assert valid_host(b"example.com:8080") and valid_host(long_host)
        assert not valid_host(b"example.com\n") and not valid_host(b"exa mple.com")
    assert b"example.com:8080" in _VALID_HOSTS and long_host not in _VALID_HOSTS


@pytest.mark.parametrize(
    "headers, expected",
    [
        (H, NO_BODY),
        ([*H, (b"Content-Length", b"12")], Framing(Kind.LENGTH, 12)),
        ([*H, (b"Transfer-Encoding", b"chunked")], CHUNKED),
    ],
)
def test_validate_request_returns_framing(headers, expected):
    """An accepted request comes back with its body framing and no rejection."""
    assert validate_request(b"POST", b"/", V11, headers) == (expected, None)


def test_validate_request_rejection_reason_is_one_line():
    """A rejection carries its status and a one-line reason."""
    _, rejection = validate_request(b"GET", b"/", V11, [])
    assert rejection == Rejection(400, "missing Host header")


@pytest.mark.parametrize("version", [b"HTTP/", b"HTTP/abc", b"HTTP/1.1.1", b"HTTP/1.x"])
def test_validate_request_malformed_version_is_400(version):
    """A version token that is not HTTP/DIGIT.DIGIT is a syntax error (400), not an unsupported version (505)."""
    assert _status(b"GET", b"/", version, H) == 400


# -- request-target forms -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "target, expected",
    [
        (b"/", b"/"),
        (b"/a/b?c", b"/a/b?c"),
        (b"*", b"*"),
        (b"http://example.com/a/b?c", b"/a/b?c"),
        (b"https://example.com:8443/a", b"/a"),
        (b"http://example.com", b"/"),
        (b"http://example.com?q=1", b"/?q=1"),
        (b"http://example.com?q=/x", b"/?q=/x"),
        (b"HTTP://example.com/x", b"/x"),
        (b"ftp://example.com/x", b"ftp://example.com/x"),
    ],
)
def test_origin_form(target, expected):
    """origin_form reduces absolute-form to path and query (an empty path becomes /) and leaves others alone."""
    assert origin_form(target) == expected


@pytest.mark.parametrize(
    "target, expected",
    [
        (b"http://example.com/x", b"example.com"),
        (b"https://example.com:8443", b"example.com:8443"),
        (b"http://example.com?q=/x", b"example.com"),
        (b"/x", None),
        (b"example.com:443", None),
        (b"ftp://example.com/", None),
    ],
)
def test_authority_of(target, expected):
    """authority_of is the authority of an http(s) absolute-form target and None for any other form."""
    assert authority_of(target) == expected


# -- parse_response_head ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "head, expected",
    [
        (b"HTTP/1.1 200 OK", ResponseHead(b"HTTP/1.1", 200, b"OK", [])),
        (b"HTTP/1.0 404 Not Found", ResponseHead(b"HTTP/1.0", 404, b"Not Found", [])),
        (b"HTTP/1.1 204", ResponseHead(b"HTTP/1.1", 204, b"", [])),
        (b"HTTP/1.1 204 ", ResponseHead(b"HTTP/1.1", 204, b"", [])),
        (b"HTTP/1.1 599 \xe9t\xe9\tok", ResponseHead(b"HTTP/1.1", 599, b"\xe9t\xe9\tok", [])),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nset-cookie: a=1\r\nSet-Cookie: b=2",
            ResponseHead(
                b"HTTP/1.1",
                200,
                b"OK",
                [(b"Content-Length", b"2"), (b"set-cookie", b"a=1"), (b"Set-Cookie", b"b=2")],
            ),
        ),
        (
            b"HTTP/1.1 302 Found\r\nLocation: http://x/:y\r\nX-Empty:\r\nX-Pad: \t a  b \t",
            ResponseHead(
                b"HTTP/1.1",
                302,
                b"Found",
                [(b"Location", b"http://x/:y"), (b"X-Empty", b""), (b"X-Pad", b"a  b")],
            ),
        ),
        (
            b"HTTP/1.1 200 OK\r\nX-Bin: caf\xc3\xa9\tok",
            ResponseHead(b"HTTP/1.1", 200, b"OK", [(b"X-Bin", b"caf\xc3\xa9\tok")]),
        ),
    ],
)
def test_parse_response_head(head, expected):
    """A well-formed response head parses into version, status, reason and the headers in order, values trimmed."""
    parsed = parse_response_head(head)
    assert parsed._replace(content_length=None, transfer_encoding=None, relayed=None) == expected
    assert parsed.content_length == values_of(expected.headers, b"content-length")
    assert parsed.transfer_encoding == values_of(expected.headers, b"transfer-encoding")
    assert parsed.relayed == end_to_end(expected.headers, REBUILT_RESPONSE)


@pytest.mark.parametrize(
    "head, reason",
    [
        # CRLF only (RFC 9112 section 2.2 lets a recipient be strict).
        (b"HTTP/1.1 200 OK\nX: y", "bare LF"),
        (b"HTTP/1.1 200 OK\r\nX: y\nZ: w", "bare LF"),
        (b"HTTP/1.1 200 OK\r\n\nX: y", "bare LF"),
        # obs-fold: a proxy may reject it with 502 (RFC 9112 section 5.2).
        (b"HTTP/1.1 200 OK\r\nX: a\r\n b", "colon"),
        (b"HTTP/1.1 200 OK\r\nX: a\r\n\tb: c", "header name"),
        # No whitespace between name and colon (RFC 9112 section 5.1).
        (b"HTTP/1.1 200 OK\r\nX : y", "header name"),
        (b"HTTP/1.1 200 OK\r\nX\t: y", "header name"),
        (b"HTTP/1.1 200 OK\r\n X: y", "header name"),
        # Field names are tokens.
        (b"HTTP/1.1 200 OK\r\nX y", "colon"),
        (b"HTTP/1.1 200 OK\r\n: y", "header name"),
        (b"HTTP/1.1 200 OK\r\nX(y): z", "header name"),
        (b"HTTP/1.1 200 OK\r\n\xe9: z", "header name"),
        (b"HTTP/1.1 200 OK\r\n", "colon"),
        # No control bytes in values (RFC 9110 section 5.5).
        (b"HTTP/1.1 200 OK\r\nX: a\x00b", "control byte"),
        (b"HTTP/1.1 200 OK\r\nX: a\rb", "control byte"),
        (b"HTTP/1.1 200 OK\r\nX: a\x1bb", "control byte"),
        (b"HTTP/1.1 200 OK\r\nX: a\x7fb", "control byte"),
        # Status line: HTTP/1.x SP 3DIGIT [SP reason] (RFC 9112 section 4).
        (b"", "status line"),
        (b"HTTP/1.1 20 OK", "status line"),
        (b"HTTP/1.1 2000 OK", "status line"),
        (b"HTTP/1.1 099 OK", "status line"),
        (b"HTTP/1.1 200OK", "status line"),
        (b"HTTP/1.1  200 OK", "status line"),
        (b"HTTP/1.1 200 O\x00K", "status line"),
        (b"HTTP/1.1 200 O\rK", "status line"),
        (b"HTTP/2 200 OK", "status line"),
        (b"HTTP/2.0 200 OK", "status line"),
        (b"http/1.1 200 OK", "status line"),
        (b"ICY 200 OK", "status line"),
        (b" HTTP/1.1 200 OK", "status line"),
        (b"X: y\r\nHTTP/1.1 200 OK", "status line"),
    ],
)
def test_parse_response_head_rejects(head, reason):
    """A response head that breaks HTTP/1.1 syntax raises InvalidResponse saying which rule it broke."""
    with pytest.raises(InvalidResponse, match=reason):
        parse_response_head(head)


def test_parse_response_head_header_limit():
    """Exactly max_headers header lines are accepted; one more raises InvalidResponse."""
    lines = [b"X-%d: v" % i for i in range(4)]
    assert len(parse_response_head(b"\r\n".join([b"HTTP/1.1 200 OK", *lines[:3]]), max_headers=3).headers) == 3
    with pytest.raises(InvalidResponse, match="too many"):
        parse_response_head(b"\r\n".join([b"HTTP/1.1 200 OK", *lines]), max_headers=3)


def test_parse_response_head_default_limit_is_100():
    """By default 100 header lines are accepted and 101 are too many."""
    head = b"HTTP/1.1 200 OK" + b"\r\nX: v" * 100
    assert len(parse_response_head(head).headers) == 100
    with pytest.raises(InvalidResponse, match="too many"):
        parse_response_head(head + b"\r\nX: v")


def test_response_head_collects_framing_headers() -> None:
    """Parsing a response head collects Content-Length and Transfer-Encoding values (any case) in the same pass."""
    head = parse_response_head(
        b"HTTP/1.1 200 OK\r\ncontent-LENGTH: 5\r\nX: y\r\nContent-Length: 5\r\nTransfer-Encoding: chunked"
    )
    assert head.content_length == [b"5", b"5"] and head.transfer_encoding == [b"chunked"]
    assert parse_response_head(b"HTTP/1.1 204 No Content").content_length == []


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\nServer: x\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nContent-Length: 1",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\nProxy-Connection: x\r\nX-A: 1",
        b"HTTP/1.1 200 OK\r\nConnection: close, X-Secret\r\nX-Secret: 1\r\nx-secret: 2\r\nX-Kept: 3",
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nClose: 1\r\nUpgrade: h2c\r\nTE: trailers\r\nX-Kept: 3",
        b"HTTP/1.1 200 OK\r\nCONNECTION: Keep-Alive\r\nKEEP-ALIVE: 1\r\nX-Kept: 3",
    ],
)
def test_relayed_headers_are_the_end_to_end_ones(head):
    """The headers relayed from a response are its end-to-end ones less Content-Length, also found while parsing."""
    parsed = parse_response_head(head)
    expected = end_to_end(parsed.headers, REBUILT_RESPONSE, parsed.connection)
    assert relayed_headers(parsed) == expected
    assert relayed_headers(parsed._replace(relayed=None)) == expected
    assert all(name.lower() not in (b"connection", b"x-secret", b"close") for name, _ in expected)
