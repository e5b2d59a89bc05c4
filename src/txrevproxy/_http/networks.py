"""
Which client addresses may use the proxy: networks in CIDR form, and allow/deny policies over them.

Pure: takes address text and returns decisions; knows nothing of sockets or the reactor.

An IPv4 client seen on a dual-stack (IPv6) listener arrives as an IPv4-mapped address, ``::ffff:a.b.c.d``
(RFC 4291 section 2.5.5.2). Both addresses and networks are normalised so that such a client matches IPv4
networks, and an IPv4 client matches networks written in the mapped form (``::ffff:10.0.0.0/104``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from attrs import frozen

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def parse_address(text: object) -> Address | None:
    """
    The IP address in ``text`` with IPv4-mapped IPv6 addresses turned into IPv4, or ``None`` if ``text`` is not an
    IP address (a UNIX socket path, ``"unknown"``, not a ``str``).
    """
    if not isinstance(text, str):
        return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def parse_network(spec: str) -> Network:
    """
    A network in CIDR form (host bits allowed, a bare address is a single host), IPv4-mapped IPv6 networks turned
    into IPv4. Raises ``ValueError`` with a one-line message naming ``spec``.
    """
    try:
        network = ipaddress.ip_network(spec.strip(), strict=False)
    except ValueError:
        raise ValueError(f"not a network in CIDR form: {spec!r}") from None
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96 and network.subnet_of(_MAPPED):
        mapped = network.network_address.ipv4_mapped
        assert mapped is not None
        return ipaddress.IPv4Network((mapped, network.prefixlen - 96))
    return network


def parse_networks(specs: Iterable[str]) -> tuple[Network, ...]:
    """
    :func:`parse_network` of each of ``specs``.
    """
    return tuple(parse_network(spec) for spec in specs)


def first_match(address: Address, networks: Iterable[Network]) -> Network | None:
    """
    The first of ``networks`` that holds ``address`` (both normalised as above), or ``None``.
    """
    for network in networks:
        if address.version == network.version and address in network:
            return network
    return None


@frozen
class Decision:
    """
    The outcome of checking one client address.

    :ivar allowed: whether the client may go on.
    :ivar rule: why, in words for a log line (``"deny 10.0.0.0/8"``, ``"no allow network matches"``).
    """

    allowed: bool
    rule: str


@frozen
class AccessPolicy:
    """
    Client networks that are refused (``deny``) or, when ``allow`` is not empty, the only ones let in.

    A client is refused if its address is in any ``deny`` network, or if ``allow`` is not empty and its address is
    in none of them; ``deny`` wins over ``allow``. Addresses that are not IP addresses (UNIX sockets) are always
    allowed. The default policy allows everyone.
    """

    allow: tuple[Network, ...] = ()
    deny: tuple[Network, ...] = ()

    @classmethod
    def parse(cls, allow: Iterable[str] = (), deny: Iterable[str] = ()) -> AccessPolicy:
        """
        A policy from CIDR strings; raises ``ValueError`` naming the bad one.
        """
        return cls(parse_networks(allow), parse_networks(deny))

    @property
    def open(self) -> bool:
        """
        Whether the policy lets everyone in (nothing to check).
        """
        return not self.allow and not self.deny

    def decide(self, ip: object) -> Decision:
        """
        Whether the client at ``ip`` (address text) is allowed, and by which rule.
        """
        if self.open:
            return Decision(True, "no access rules")
        address = parse_address(ip)
        if address is None:
            return Decision(True, "not an IP address")
        denied = first_match(address, self.deny)
        if denied is not None:
            return Decision(False, f"deny {denied}")
        if self.allow:
            allowed = first_match(address, self.allow)
            if allowed is None:
                return Decision(False, "no allow network matches")
            return Decision(True, f"allow {allowed}")
        return Decision(True, "no deny network matches")

    def allows(self, ip: object) -> bool:
        """
        Whether the client at ``ip`` (address text) is allowed.
        """
        return self.decide(ip).allowed
