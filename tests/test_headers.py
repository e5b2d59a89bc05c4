"""
Header rules: hop-by-hop stripping, the upstream request header list, forwarding headers, ``Host`` and trusted
networks.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from txrevproxy._http import headers as _headers
from txrevproxy._http.headers import (
    CONNECTION,
    CONTENT_LENGTH,
    FIELD_LINE_CACHED_MAX,
    HOP_BY_HOP,
    OTHER,
    REBUILT_REQUEST,
    TRANSFER_ENCODING,
    ForwardingContext,
    TrustedNetworks,
    connection_options,
    connection_tokens,
    end_to_end,
    field_line,
    forwarding_headers,
    host_header,
    is_token,
    known_field_line,
    only_line_ends,
    upstream_request_headers,
    values_of,
)

UNTRUSTED = ForwardingContext(client_ip="203.0.113.7", proto=b"http", host=b"example.com", trusted=False)
TRUSTED = ForwardingContext(client_ip="10.0.0.5", proto=b"https", host=b"example.com", trusted=True)

INCOMING_FORWARDING = [
    (b"X-Forwarded-For", b"198.51.100.1"),
    (b"Forwarded", b"for=198.51.100.1;proto=https"),
    (b"X-Forwarded-Proto", b"https"),
    (b"X-Forwarded-Host", b"front.example"),
]


def _names(headers):
    return [name for name, _ in headers]


def _only(headers, name):
    (value,) = values_of(headers, name)
    return value


# -- hop-by-hop stripping ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(HOP_BY_HOP))
def test_hop_by_hop_header_is_dropped(name):
    """Every hop-by-hop header is dropped, whatever its case, and the rest are kept."""
    headers = [(b"Accept", b"*/*"), (name.title(), b"x"), (name.upper(), b"y"), (b"X-Keep", b"1")]
    assert end_to_end(headers) == [(b"Accept", b"*/*"), (b"X-Keep", b"1")]


@pytest.mark.parametrize(
    "connection",
    [
        [b"X-Secret"],
        [b"x-secret"],
        [b"X-SECRET, close"],
        [b"close,X-Secret"],
        [b"  close ,  x-Secret  "],
        [b"close", b"X-Secret"],
        [b",, X-Secret,"],
    ],
)
def test_header_named_in_connection_is_dropped(connection):
    """A header named in Connection (any case, in a comma list with spaces, or a second Connection) is not relayed."""
    headers = [(b"Connection", v) for v in connection] + [(b"X-Secret", b"s"), (b"X-Public", b"p")]
    assert end_to_end(headers) == [(b"X-Public", b"p")]


def test_connection_tokens_are_lowercased_and_empty_ones_ignored():
    """connection_tokens gives the lower-cased, stripped, non-empty option names of every Connection header."""
    headers = [(b"Connection", b" Keep-Alive , ,X-A"), (b"connection", b"x-b"), (b"X-C", b"not a connection")]
    assert connection_tokens(headers) == frozenset({b"keep-alive", b"x-a", b"x-b"})


def test_end_to_end_keeps_order_and_repeats():
    """Relayed headers keep their order, their repeats and the original spelling of their names."""
    headers = [
        (b"Set-Cookie", b"a=1"),
        (b"Connection", b"keep-alive"),
        (b"x-Custom", b"1"),
        (b"Set-Cookie", b"b=2"),
        (b"Keep-Alive", b"timeout=5"),
        (b"x-custom", b"2"),
    ]
    assert end_to_end(headers) == [
        (b"Set-Cookie", b"a=1"),
        (b"x-Custom", b"1"),
        (b"Set-Cookie", b"b=2"),
        (b"x-custom", b"2"),
    ]


def test_end_to_end_also_drop():
    """Names in also_drop are dropped regardless of case, on top of the hop-by-hop ones."""
    headers = [(b"Content-Length", b"3"), (b"X-A", b"1"), (b"TE", b"trailers")]
    assert end_to_end(headers, frozenset({b"content-length"})) == [(b"X-A", b"1")]


@pytest.mark.parametrize("given", [True, False])
def test_end_to_end_drops_headers_named_in_connection_whatever_their_length(given):
    """Headers named in Connection are dropped, in any case, whether the options are handed in or found here; a
    header of the same length as a dropped one but another name is kept, and so are headers once their options
    change."""
    headers = [(b"Connection", b"X-Hop-Header, Z"), (b"x-hop-header", b"1"), (b"X-Hop-Heaver", b"2"), (b"z", b"3")]
    options = connection_tokens(headers) if given else None
    assert end_to_end(headers, frozenset(), options) == [(b"X-Hop-Heaver", b"2")]
    others = [(b"Connection", b"close"), (b"x-hop-header", b"1"), (b"z", b"3")]
    assert end_to_end(others, frozenset(), connection_tokens(others) if given else None) == others[1:]


def test_values_of_is_case_insensitive_and_ordered():
    """values_of returns every value of a header, matching the name case-insensitively, in order."""
    headers = [(b"Via", b"1.1 a"), (b"X", b"-"), (b"VIA", b"1.0 b")]
    assert values_of(headers, b"via") == [b"1.1 a", b"1.0 b"]
    assert values_of(headers, b"absent") == []


# -- the upstream request header list ----------------------------------------------------------------------------


def test_upstream_request_headers_host_first_then_client_then_forwarding():
    """The upstream list is Host, then the client's end-to-end headers in order, then the forwarding headers."""
    incoming = [(b"Accept", b"*/*"), (b"Host", b"example.com"), (b"User-Agent", b"t"), (b"Accept", b"text/html")]
    out = upstream_request_headers(incoming, UNTRUSTED, b"upstream:8080")
    assert out[0] == (b"Host", b"upstream:8080")
    assert out[1:4] == [(b"Accept", b"*/*"), (b"User-Agent", b"t"), (b"Accept", b"text/html")]
    assert _names(out[4:]) == [b"X-Forwarded-For", b"X-Forwarded-Proto", b"X-Forwarded-Host", b"Forwarded", b"Via"]


@pytest.mark.parametrize(
    "name", [b"Content-Length", b"Expect", b"HTTP2-Settings", b"Transfer-Encoding", b"Host", b"Upgrade"]
)
def test_upstream_request_headers_drops_rebuilt_headers(name):
    """Framing, Expect, HTTP2-Settings and the client's Host are never copied to the upstream request."""
    incoming = [(b"Host", b"example.com"), (name, b"v"), (b"X-Keep", b"1")]
    out = upstream_request_headers(incoming, UNTRUSTED, b"upstream")
    assert values_of(out, name.lower()) == ([b"upstream"] if name == b"Host" else [])
    assert (b"X-Keep", b"1") in out


def test_upstream_request_headers_repeat_for_the_same_context_and_stay_independent():
    """The forwarding headers of a context seen before (kept, since a connection repeats its context) are the same,
    whatever a caller did to an earlier list, and a context differing in any field gets its own."""
    incoming = [(b"Host", b"example.com")]
    first = upstream_request_headers(incoming, UNTRUSTED, b"upstream")
    expected = list(first)
    first.append((b"X-Added", b"1"))
    first[1] = (b"X-Forwarded-For", b"changed")
    assert upstream_request_headers(incoming, UNTRUSTED, b"upstream") == expected
    forwarding_headers(incoming, UNTRUSTED).append((b"X-Added", b"1"))
    assert forwarding_headers(incoming, UNTRUSTED) == expected[1:]
    other = ForwardingContext(client_ip="10.9.9.9", proto=b"https", host=b"other", trusted=False, version=b"1.0")
    assert values_of(upstream_request_headers(incoming, other, b"upstream"), b"via") == [b"1.0 txrevproxy"]
    assert values_of(upstream_request_headers(incoming, other, b"upstream"), b"x-forwarded-for") == [b"10.9.9.9"]


def test_upstream_request_headers_has_exactly_one_of_each_forwarding_header():
    """Client-sent forwarding headers are not copied verbatim; each forwarding header appears once."""
    out = upstream_request_headers([*INCOMING_FORWARDING, (b"Via", b"1.0 edge")], UNTRUSTED, b"upstream")
    for name in (b"x-forwarded-for", b"forwarded", b"x-forwarded-proto", b"x-forwarded-host", b"via"):
        assert len(values_of(out, name)) == 1, name


def test_rebuilt_request_covers_forwarding_headers():
    """Every header forwarding_headers writes is in REBUILT_REQUEST, so the client's copy is never duplicated."""
    written = {name.lower() for name in _names(forwarding_headers([], UNTRUSTED))}
    assert written <= REBUILT_REQUEST


# -- forwarding headers ------------------------------------------------------------------------------------------


def test_forwarding_headers_untrusted_peer_replaces_incoming():
    """From an untrusted peer, incoming X-Forwarded-*/Forwarded are discarded and rebuilt from the connection."""
    out = forwarding_headers(INCOMING_FORWARDING, UNTRUSTED)
    assert out == [
        (b"X-Forwarded-For", b"203.0.113.7"),
        (b"X-Forwarded-Proto", b"http"),
        (b"X-Forwarded-Host", b"example.com"),
        (b"Forwarded", b"for=203.0.113.7;proto=http;host=example.com"),
        (b"Via", b"1.1 txrevproxy"),
    ]


def test_forwarding_headers_trusted_peer_appends_and_keeps():
    """From a trusted peer, X-Forwarded-For and Forwarded are appended to; X-Forwarded-Proto/-Host are kept."""
    out = forwarding_headers(INCOMING_FORWARDING, TRUSTED)
    assert _only(out, b"x-forwarded-for") == b"198.51.100.1, 10.0.0.5"
    assert _only(out, b"forwarded") == b"for=198.51.100.1;proto=https, for=10.0.0.5;proto=https;host=example.com"
    assert _only(out, b"x-forwarded-proto") == b"https"
    assert _only(out, b"x-forwarded-host") == b"front.example"


def test_forwarding_headers_trusted_peer_repeated_headers():
    """From a trusted peer, repeated X-Forwarded-For lines are all kept in order, and the last -Proto wins."""
    incoming = [
        (b"X-Forwarded-For", b"1.1.1.1"),
        (b"X-Forwarded-For", b"2.2.2.2, 3.3.3.3"),
        (b"X-Forwarded-Proto", b"http"),
        (b"X-Forwarded-Proto", b"https"),
    ]
    out = forwarding_headers(incoming, TRUSTED)
    assert _only(out, b"x-forwarded-for") == b"1.1.1.1, 2.2.2.2, 3.3.3.3, 10.0.0.5"
    assert _only(out, b"x-forwarded-proto") == b"https"


def test_forwarding_headers_trusted_peer_without_incoming_uses_connection():
    """A trusted peer that sent no forwarding headers gets the same headers as an untrusted one."""
    ctx = ForwardingContext(client_ip="10.0.0.5", proto=b"https", host=b"example.com", trusted=False)
    assert forwarding_headers([], TRUSTED) == forwarding_headers([], ctx)


def test_forwarding_headers_ipv6_client_is_bracketed_and_quoted():
    """An IPv6 client is `for="[::1]"` in Forwarded (RFC 7239 section 6) and bare in X-Forwarded-For."""
    ctx = ForwardingContext(client_ip="::1", proto=b"http", host=None, trusted=False)
    out = forwarding_headers([], ctx)
    assert _only(out, b"forwarded") == b'for="[::1]";proto=http'
    assert _only(out, b"x-forwarded-for") == b"::1"


@pytest.mark.parametrize(
    "host, expected",
    [
        (b"example.com", b"host=example.com"),
        (b"example.com:8080", b'host="example.com:8080"'),
        (b"[::1]:8080", b'host="[::1]:8080"'),
        (b'we"ird\\', b'host="we\\"ird\\\\"'),
    ],
)
def test_forwarding_headers_host_is_token_or_quoted_string(host, expected):
    """The Forwarded host= is a token when it can be, else a quoted-string with \\ and \" escaped (RFC 7239)."""
    ctx = ForwardingContext(client_ip="192.0.2.1", proto=b"http", host=host, trusted=False)
    assert _only(forwarding_headers([], ctx), b"forwarded") == b"for=192.0.2.1;proto=http;" + expected


def test_forwarding_headers_without_host():
    """With no client Host there is no X-Forwarded-Host and no host= in Forwarded."""
    ctx = ForwardingContext(client_ip="192.0.2.1", proto=b"http", host=None, trusted=False)
    out = forwarding_headers([(b"X-Forwarded-Host", b"spoof")], ctx)
    assert values_of(out, b"x-forwarded-host") == []
    assert _only(out, b"forwarded") == b"for=192.0.2.1;proto=http"


@pytest.mark.parametrize("trusted", [False, True])
@pytest.mark.parametrize("version", [b"1.1", b"1.0"])
def test_via_is_appended_with_the_client_version(trusted, version):
    """Via is always appended to, from any peer, with the client's HTTP version (RFC 9110 section 7.6.3)."""
    ctx = ForwardingContext(client_ip="192.0.2.1", proto=b"http", host=None, trusted=trusted, version=version)
    incoming = [(b"Via", b"1.1 a"), (b"via", b"HTTP/2 b, 1.0 c")]
    assert _only(forwarding_headers(incoming, ctx), b"via") == b"1.1 a, HTTP/2 b, 1.0 c, " + version + b" txrevproxy"


# -- Host ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host, port, scheme, expected",
    [
        ("example.com", 80, "http", b"example.com"),
        ("example.com", 8080, "http", b"example.com:8080"),
        ("example.com", 443, "https", b"example.com"),
        ("example.com", 443, "http", b"example.com:443"),
        ("example.com", 80, "https", b"example.com:80"),
        ("127.0.0.1", 8000, "http", b"127.0.0.1:8000"),
        ("::1", 80, "http", b"[::1]"),
        ("::1", 8080, "http", b"[::1]:8080"),
        ("[::1]", 8080, "http", b"[::1]:8080"),
        ("2001:db8::2", 443, "https", b"[2001:db8::2]"),
    ],
)
def test_host_header(host, port, scheme, expected):
    """Host omits the scheme's default port and brackets an IPv6 literal exactly once."""
    assert host_header(host, port, scheme) == expected


def test_host_header_default_scheme_is_http():
    """Without a scheme, port 80 is the default that is left out."""
    assert host_header("example.com", 80) == b"example.com"


# -- trusted networks --------------------------------------------------------------------------------------------


def test_trusted_networks_parse_good_cidrs():
    """Good CIDRs (v4, v6, a bare address, host bits set, surrounding spaces) all parse."""
    nets = TrustedNetworks.parse(["10.0.0.0/8", " 192.168.1.7/24 ", "::1", "2001:db8::/32"])
    assert [str(n) for n in nets.networks] == ["10.0.0.0/8", "192.168.1.0/24", "::1/128", "2001:db8::/32"]


@pytest.mark.parametrize("bad", ["10.0.0.0/33", "not-a-net", "", "10.0.0/8x", "::1/129"])
def test_trusted_networks_parse_rejects_bad_cidr_naming_it(bad):
    """A bad CIDR raises ValueError whose message names it."""
    with pytest.raises(ValueError, match="not a network in CIDR form") as info:
        TrustedNetworks.parse(["10.0.0.0/8", bad])
    assert repr(bad) in str(info.value)


@pytest.mark.parametrize(
    "ip, expected",
    [
        ("10.1.2.3", True),
        ("11.0.0.1", False),
        ("192.168.1.255", True),
        ("192.168.2.1", False),
        ("2001:db8::1", True),
        ("2001:db9::1", False),
        ("::1", True),
        ("::2", False),
        ("garbage", False),
        ("", False),
        ("10.0.0.1/8", False),
        (b"10.0.0.1", False),
        (None, False),
    ],
)
def test_trusted_networks_membership(ip, expected):
    """Membership holds for v4 and v6 addresses in a configured network and is False for anything else."""
    nets = TrustedNetworks.parse(["10.0.0.0/8", "192.168.1.0/24", "2001:db8::/32", "::1/128"])
    assert (ip in nets) is expected


def test_trusted_networks_empty_trusts_nobody():
    """With no networks configured, no address is trusted."""
    assert "127.0.0.1" not in TrustedNetworks()
    assert "::1" not in TrustedNetworks.parse([])


@pytest.mark.parametrize(
    "ip, specs, expected",
    [
        ("::ffff:10.1.2.3", ["10.0.0.0/8"], True),
        ("::ffff:11.1.2.3", ["10.0.0.0/8"], False),
        ("10.1.2.3", ["::ffff:10.0.0.0/104"], True),
        ("::ffff:10.1.2.3", ["::ffff:10.0.0.0/104"], True),
        ("::ffff:127.0.0.1", ["127.0.0.1"], True),
    ],
)
def test_trusted_networks_ipv4_mapped(ip, specs, expected):
    """An IPv4-mapped client (dual-stack listener) matches IPv4 networks, and an IPv4 client mapped networks."""
    assert (ip in TrustedNetworks.parse(specs)) is expected


def test_token_names_are_remembered_within_a_bound() -> None:
    """Valid names are remembered up to a bound; invalid ones never are."""
    from txrevproxy._http import headers as _headers

    assert _headers.is_token(b"X-Remembered") and b"X-Remembered" in _headers.KNOWN_TOKENS
    assert not _headers.is_token(b"Bad Name") and b"Bad Name" not in _headers.KNOWN_TOKENS
    assert not _headers.is_token(b"") and not _headers.is_token(b"x\n")
    saved = set(_headers.KNOWN_TOKENS)
    try:
        _headers.KNOWN_TOKENS.update(b"n%d" % i for i in range(_headers.KNOWN_TOKENS_MAX))
        size = len(_headers.KNOWN_TOKENS)
        assert _headers.is_token(b"One-More-Name") and len(_headers.KNOWN_TOKENS) == size
    finally:
        _headers.KNOWN_TOKENS.clear()
        _headers.KNOWN_TOKENS.update(saved)


def test_connection_options_of_a_repeated_value_are_the_same_and_independent_of_case():
    """The options of a value seen before (kept, as every browser sends Connection: keep-alive) come out the same."""
    first = connection_options([b"Keep-Alive, X-Hop"])
    assert first == {b"keep-alive", b"x-hop"}
    assert connection_options([b"Keep-Alive, X-Hop"]) == first
    assert connection_options([b"close"]) == {b"close"} and connection_options([b"close", b"x"]) == {b"close", b"x"}
    assert connection_tokens([(b"CONNECTION", b"Upgrade"), (b"X-Connection", b"no"), (b"Connection", b"te")]) == {
        b"upgrade",
        b"te",
    }


def test_caches_keep_no_long_values():
    """What a client controls (header names, a Connection value, Host) is cached only when short, so that ever new
    long values cannot grow the module's caches; the answers are the same either way."""
    from txrevproxy._http import headers as _headers

    name = b"X-" + b"n" * 100
    assert is_token(name) and name not in _headers.KNOWN_TOKENS
    value = b"x-" + b"o" * 100
    assert connection_options([value]) == {value} and value not in _headers._single_options
    long_host = ForwardingContext(client_ip="10.0.0.9", proto=b"http", host=b"h" * 100, trusted=False)
    assert values_of(forwarding_headers([], long_host), b"x-forwarded-host") == [b"h" * 100]
    assert long_host not in _headers._fresh_forwarding


@pytest.mark.parametrize(
    "head, expected",
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\nX: a\tb", True),
        (b"HTTP/1.1 200 OK", True),
        (b"X: \x80\xff obs-text", True),
        (b"GET / HTTP/1.1\nHost: x", False),
        (b"GET / HTTP/1.1\r\nHost: x\r", False),
        (b"GET / HTTP/1.1\r\nX: a\rb", False),
        (b"GET / HTTP/1.1\r\nX: a\x00b", False),
        (b"GET / HTTP/1.1\r\nX: a\x7f", False),
        (b"GET / HTTP/1.1\r\nX: \x0bchunked", False),
    ],
)
def test_only_line_ends(head, expected):
    """A head passes when its only control bytes (HTAB aside) are the CR LF pairs that end its lines."""
    assert only_line_ends(head, len(head.split(b"\r\n")) - 1) is expected


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40))
def test_only_line_ends_matches_a_byte_by_byte_reading(head):
    """only_line_ends agrees with a plain reading: no control byte but HTAB once the CR LF pairs are removed."""
    plain = all(b == 0x09 or 0x20 <= b < 0x7F or b >= 0x80 for b in head.replace(b"\r\n", b""))
    assert only_line_ends(head, len(head.split(b"\r\n")) - 1) is plain


@pytest.mark.parametrize(
    "line, expected",
    [
        (b"Server: nginx", ((b"Server", b"nginx"), OTHER)),
        (b"X:\t a b \t", ((b"X", b"a b"), OTHER)),
        (b"Empty:", ((b"Empty", b""), OTHER)),
        (b"CONNECTION: close", ((b"CONNECTION", b"close"), CONNECTION)),
        (b"content-length: 12", ((b"content-length", b"12"), CONTENT_LENGTH)),
        (b"Transfer-Encoding: chunked", ((b"Transfer-Encoding", b"chunked"), TRANSFER_ENCODING)),
        (b"Content_Length: 12", ((b"Content_Length", b"12"), OTHER)),
        (b"no colon", None),
        (b"X : v", None),
        (b" X: v", None),
        (b": v", None),
        (b"X(: v", None),
    ],
)
def test_field_line(line, expected):
    """A field line splits into its name and trimmed value, with whether it is a header the parsers act on."""
    assert field_line(line) == expected
    assert field_line(line) == expected  # (the same answer again, once kept)


def test_field_lines_kept_are_short_and_bounded():
    """Only lines up to FIELD_LINE_CACHED_MAX bytes are kept, and the store is emptied once full."""
    long_line = b"X-Long: " + b"v" * FIELD_LINE_CACHED_MAX
    assert field_line(long_line) == ((b"X-Long", b"v" * FIELD_LINE_CACHED_MAX), OTHER)
    assert known_field_line(long_line) is None
    assert known_field_line(b"X-Kept: 1") is None
    field_line(b"X-Kept: 1")
    assert known_field_line(b"X-Kept: 1") == ((b"X-Kept", b"1"), OTHER)
    for i in range(_headers._FIELD_LINES_MAX):
        field_line(b"X-Fill: %d" % i)
    assert len(_headers._FIELD_LINES) <= _headers._FIELD_LINES_MAX
    assert known_field_line(b"X-Kept: 1") is None
