"""
Header rules for relaying a message, as pure functions over ordered lists of ``(name, value)`` byte pairs.

Owns: which headers are hop-by-hop (RFC 9110 section 7.6.1), which the proxy always rebuilds itself (framing,
``Host``, the forwarding headers), and how ``X-Forwarded-*``, ``Forwarded`` (RFC 7239) and ``Via`` are built.
Knows nothing of sockets or the reactor.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from attrs import frozen

from txrevproxy._http.networks import first_match, parse_address, parse_networks

HeaderList = list[tuple[bytes, bytes]]

#: Headers that describe one connection, never the message; never relayed in either direction.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)

#: Request headers the proxy drops because it writes its own: framing (the proxy re-frames every body),
#: ``Host``, ``Expect`` (the proxy answers ``100-continue`` itself), HTTP/2 upgrade settings, and the
#: forwarding headers (rebuilt by :func:`forwarding_headers`).
REBUILT_REQUEST = frozenset(
    {
        b"content-length",
        b"host",
        b"expect",
        b"http2-settings",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"forwarded",
        b"via",
    }
)

#: Response headers the proxy writes itself: framing is decided by the proxy for the client connection.
REBUILT_RESPONSE = frozenset({b"content-length"})

#: The longest header name, ``Connection`` value or ``Host`` that the module's caches keep (each bounded in count
#: too): a client sending ever new or long values cannot grow them past a few hundred KiB.
CACHED_MAX = 64


#: Every control byte but HTAB (RFC 9110 section 5.5: a field value holds HTAB, SP, visible ASCII and obs-text).
_CONTROLS = bytes(range(0x09)) + bytes(range(0x0A, 0x20)) + b"\x7f"


def only_line_ends(head: bytes, line_ends: int) -> bool:
    """
    Whether the only control bytes (HTAB aside) in ``head`` are the CR LF pairs of its ``line_ends`` line ends:
    no bare CR or LF, no NUL, no other control byte anywhere (one ``translate``, no per-line search).
    """
    return len(head) - len(head.translate(None, _CONTROLS)) == 2 * line_ends


def connection_tokens(headers: Iterable[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """
    The lower-cased option names listed in every ``Connection`` header (RFC 9110 section 7.6.1).
    """
    values = [value for name, value in headers if len(name) == 10 and name.lower() == b"connection"]
    return connection_options(values)


_NO_OPTIONS: frozenset[bytes] = frozenset()
#: The options of single ``Connection`` values seen before (``keep-alive`` in nearly every browser request); bounded.
_single_options: dict[bytes, frozenset[bytes]] = {}
_SINGLE_OPTIONS_MAX = 256


def connection_options(values: Sequence[bytes]) -> frozenset[bytes]:
    """
    The lower-cased option names in these ``Connection`` header values.
    """
    if not values:
        return _NO_OPTIONS
    if len(values) == 1:
        options = _single_options.get(values[0])
        if options is not None:
            return options
    tokens = {t.strip().lower() for value in values for t in value.split(b",")}
    tokens.discard(b"")
    options = frozenset(tokens)
    if len(values) == 1 and len(_single_options) < _SINGLE_OPTIONS_MAX and len(values[0]) <= CACHED_MAX:
        _single_options[values[0]] = options
    return options


def end_to_end(
    headers: Sequence[tuple[bytes, bytes]],
    also_drop: frozenset[bytes] = frozenset(),
    connection: frozenset[bytes] | None = None,
) -> HeaderList:
    """
    The headers to relay: all but hop-by-hop ones, those named in ``Connection``, and ``also_drop``.

    Order and repeats are kept. ``connection``: the ``Connection`` options when already known.
    """
    if connection is None:
        connection = connection_tokens(headers)
    key = (also_drop, connection)
    found = _drop_sets.get(key)
    if found is None:
        drop = HOP_BY_HOP | also_drop | connection
        found = (drop, frozenset(len(name) for name in drop))
        if len(_drop_sets) < _DROP_SETS_MAX:
            _drop_sets[key] = found
    drop, sizes = found
    # (A name of no dropped name's length is kept without being lower-cased.)
    return [header for header in headers if len(header[0]) not in sizes or header[0].lower() not in drop]


#: The names to drop, and their lengths, for the (also_drop, Connection options) pairs seen; bounded.
_drop_sets: dict[tuple[frozenset[bytes], frozenset[bytes]], tuple[frozenset[bytes], frozenset[int]]] = {}
_DROP_SETS_MAX = 256


_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
#: Header names already found to be tokens: requests and responses repeat the same few dozen names, and a set lookup
#: costs a fraction of a regex match. Bounded (see CACHED_MAX).
KNOWN_TOKENS: set[bytes] = set()
KNOWN_TOKENS_MAX = 4096


def is_token(name: bytes) -> bool:
    """
    Whether ``name`` is a token (RFC 9110 section 5.6.2), as every field name must be.
    """
    return name in KNOWN_TOKENS or remember_match(_TOKEN, name, KNOWN_TOKENS, KNOWN_TOKENS_MAX)


def remember_match(pattern: re.Pattern[bytes], value: bytes, known: set[bytes], limit: int) -> bool:
    """
    Whether ``pattern`` matches ``value`` (not in ``known`` yet), adding it to ``known`` if so while ``known`` holds
    fewer than ``limit`` values and ``value`` is at most CACHED_MAX bytes: the callers test ``value in known`` first.
    """
    if pattern.match(value) is None:
        return False
    if len(known) < limit and len(value) <= CACHED_MAX:
        known.add(value)
    return True


#: What a head parser acts on in a field line: the header is one of these, another hop-by-hop header (HOP), or OTHER.
OTHER, CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING, HOP = range(5)
_ACTED_ON = {
    **dict.fromkeys(HOP_BY_HOP, HOP),
    b"connection": CONNECTION,
    b"content-length": CONTENT_LENGTH,
    b"transfer-encoding": TRANSFER_ENCODING,
}
_ACTED_ON_SIZES = frozenset(len(name) for name in _ACTED_ON)

FieldLine = tuple[tuple[bytes, bytes], int]
#: Field lines already split: requests from one client, and responses from one upstream, repeat most of theirs byte
#: for byte. Lines up to FIELD_LINE_CACHED_MAX bytes, at most _FIELD_LINES_MAX of them (emptied when full): well
#: under 1 MiB however varied the lines that arrive.
_FIELD_LINES: dict[bytes, FieldLine] = {}
_FIELD_LINES_MAX = 1024
FIELD_LINE_CACHED_MAX = 256
#: ``known_field_line(line)``: :func:`field_line`'s answer for a line split before, else ``None``; the parsers'
#: loops call it first (a dict lookup, no Python call) and :func:`field_line` only on a miss.
known_field_line = _FIELD_LINES.get


def field_line(line: bytes) -> FieldLine | None:
    """
    ``((name, value), kind)`` for a field line ``name ":" OWS value OWS`` (kept for :func:`known_field_line`, which
    the parsers ask first), ``kind`` telling whether it is one of the headers the parsers act on
    (:data:`CONNECTION`, :data:`CONTENT_LENGTH`, :data:`TRANSFER_ENCODING`), another hop-by-hop one (:data:`HOP`),
    or :data:`OTHER`; ``None`` if the line has no colon or its name is not a token.
    Control bytes in the value are not looked for here: the parsers check the whole head with
    :func:`only_line_ends` (and each value only when that finds one).
    """
    name, colon, value = line.partition(b":")
    if not colon or not is_token(name):
        return None
    kind = _ACTED_ON.get(name.lower(), OTHER) if len(name) in _ACTED_ON_SIZES else OTHER
    found = ((name, value.strip(b" \t")), kind)
    if len(line) <= FIELD_LINE_CACHED_MAX:
        if len(_FIELD_LINES) >= _FIELD_LINES_MAX:
            _FIELD_LINES.clear()
        _FIELD_LINES[line] = found
    return found


def values_of(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    """
    Every value of the header ``name`` (lower-case), in order.
    """
    size = len(name)
    return [v for n, v in headers if len(n) == size and n.lower() == name]


class ForwardingContext(NamedTuple):
    """
    What the proxy knows about the client side of one request, for the forwarding headers.

    :ivar client_ip: the peer address of the client connection, as text.
    :ivar proto: ``b"http"`` or ``b"https"``: the scheme the client used.
    :ivar host: the client's ``Host`` header, or ``None``.
    :ivar trusted: whether the peer is a configured proxy whose forwarding headers are appended to.
    :ivar version: the client's HTTP version, ``b"1.1"`` or ``b"1.0"``, for ``Via``.
    """

    client_ip: str
    proto: bytes
    host: bytes | None
    trusted: bool
    version: bytes = b"1.1"


VIA_NAME = b"txrevproxy"


def _forwarded_node(ip: str) -> bytes:
    # RFC 7239 section 6: an IPv6 node is bracketed and, having ':' in it, quoted.
    if ":" in ip:
        return b'"[' + ip.encode("ascii") + b']"'
    return ip.encode("ascii")


def _forwarded_value(value: bytes) -> bytes:
    # RFC 7239 section 4: a value is a token or a quoted-string.
    if _TOKEN.match(value):
        return value
    return b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def forwarding_headers(incoming: Sequence[tuple[bytes, bytes]], ctx: ForwardingContext) -> HeaderList:
    """
    ``X-Forwarded-For``, ``-Proto``, ``-Host``, ``Forwarded`` and ``Via`` for the upstream request.

    From a trusted peer, incoming ``X-Forwarded-For`` and ``Forwarded`` are appended to and incoming
    ``X-Forwarded-Proto``/``-Host`` are kept; from anyone else all of them are replaced. ``Via`` is end to end and
    always appended to (RFC 9110 section 7.6.3).
    """
    return list(_rebuild(incoming, ctx, b"")[1])


_FORWARDING = frozenset({b"x-forwarded-for", b"forwarded", b"x-forwarded-proto", b"x-forwarded-host", b"via"})
_DROP_REQUEST = HOP_BY_HOP | REBUILT_REQUEST  # (holds every _FORWARDING name)


def upstream_request_headers(
    incoming: Sequence[tuple[bytes, bytes]], ctx: ForwardingContext, host: bytes
) -> HeaderList:
    """
    The complete header list for the upstream request, before framing headers: ``Host`` first, then the client's
    end-to-end headers, then the forwarding headers.
    """
    kept, forwarding = _rebuild(incoming, ctx, host)
    kept += forwarding
    return kept


def _rebuild(
    incoming: Sequence[tuple[bytes, bytes]], ctx: ForwardingContext, host: bytes
) -> tuple[HeaderList, HeaderList]:
    # One pass over the client's headers (this runs for every request): the end-to-end ones to keep, with Host
    # first, and the forwarding headers built from the ones seen.
    lowered = [name.lower() for name, _ in incoming]
    drop = _DROP_REQUEST
    if b"connection" in lowered:
        drop = drop | connection_tokens(incoming)
    kept: HeaderList = [(b"Host", host)]
    seen: dict[bytes, list[bytes]] = {}
    for lower, header in zip(lowered, incoming, strict=False):
        if lower not in drop:
            kept.append(header)
        elif lower in _FORWARDING:
            seen.setdefault(lower, []).append(header[1])
    if seen or (ctx.host is not None and len(ctx.host) > CACHED_MAX):
        return kept, _forwarding(ctx, seen)
    # None came in (the usual case): the headers depend on ctx alone, and a connection sends the same ctx again.
    out = _fresh_forwarding.get(ctx)
    if out is None:
        if len(_fresh_forwarding) >= _FRESH_FORWARDING_MAX:
            _fresh_forwarding.clear()
        out = _fresh_forwarding[ctx] = _forwarding(ctx, seen)
    return kept, out


_fresh_forwarding: dict[ForwardingContext, HeaderList] = {}
_FRESH_FORWARDING_MAX = 1024


def _forwarding(ctx: ForwardingContext, seen: dict[bytes, list[bytes]]) -> HeaderList:
    ip = ctx.client_ip.encode("ascii")
    element = b"for=" + _forwarded_node(ctx.client_ip) + b";proto=" + ctx.proto
    if ctx.host is not None:
        element += b";host=" + _forwarded_value(ctx.host)
    xff = [ip]
    forwarded = [element]
    proto = ctx.proto
    forwarded_host = ctx.host
    if ctx.trusted:
        xff = seen.get(b"x-forwarded-for", []) + xff
        forwarded = seen.get(b"forwarded", []) + forwarded
        proto = seen.get(b"x-forwarded-proto", [proto])[-1]
        forwarded_host = seen.get(b"x-forwarded-host", [forwarded_host])[-1]
    out: HeaderList = [(b"X-Forwarded-For", b", ".join(xff)), (b"X-Forwarded-Proto", proto)]
    if forwarded_host is not None:
        out.append((b"X-Forwarded-Host", forwarded_host))
    out.append((b"Forwarded", b", ".join(forwarded)))
    via = [*seen.get(b"via", []), ctx.version + b" " + VIA_NAME]
    out.append((b"Via", b", ".join(via)))
    return out


def host_header(host: str, port: int, scheme: str = "http") -> bytes:
    """
    The ``Host`` value naming an upstream: the port is left out when it is the scheme's default.
    """
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    default = 443 if scheme == "https" else 80
    return (host if port == default else f"{host}:{port}").encode("idna" if not host.isascii() else "ascii")


@frozen
class TrustedNetworks:
    """
    The client networks whose forwarding headers are trusted.
    """

    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @classmethod
    def parse(cls, specs: Iterable[str]) -> TrustedNetworks:
        """
        Parse CIDR strings; raises ``ValueError`` naming the bad one.

        IPv4-mapped IPv6 networks and addresses match their IPv4 forms (see :mod:`txrevproxy._http.networks`).
        """
        return cls(parse_networks(specs))

    def __contains__(self, ip: object) -> bool:
        if not self.networks:
            return False
        addr = parse_address(ip)
        return addr is not None and first_match(addr, self.networks) is not None


# -- protocol upgrades (RFC 9110 section 7.8) --------------------------------------------------------------------

#: Upgrades never relayed: ``h2c`` asks the proxy itself (hop by hop) to switch to HTTP/2.
NOT_RELAYED_UPGRADES = frozenset({b"h2c"})


def upgrade_offer(version: bytes, connection: frozenset[bytes], headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    """
    The protocols an HTTP/1.1 request asks to switch to, as the ``Upgrade`` value to forward (``h2c`` left out), or
    ``None`` when it asks for none: an ``Upgrade`` header counts only with ``upgrade`` named in ``Connection``.
    """
    if version != b"HTTP/1.1" or b"upgrade" not in connection:
        return None
    protocols = [p.strip() for value in values_of(headers, b"upgrade") for p in value.split(b",")]
    kept = [p for p in protocols if p and _protocol_name(p) not in NOT_RELAYED_UPGRADES]
    return b", ".join(kept) or None


def upgrade_accepted(offer: bytes, headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """
    Whether a ``101`` response's ``Upgrade`` names one protocol, one the request offered (by name; RFC 9110 lets the
    server pick any version).
    """
    answers = [p.strip() for value in values_of(headers, b"upgrade") for p in value.split(b",") if p.strip()]
    offered = {_protocol_name(p.strip()) for p in offer.split(b",")}
    return len(answers) == 1 and _protocol_name(answers[0]) in offered


def _protocol_name(protocol: bytes) -> bytes:
    return protocol.split(b"/", 1)[0].strip().lower()
