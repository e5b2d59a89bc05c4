"""
The access policy: CIDR parsing, IPv4-mapped normalisation, allow/deny decisions.
"""

from __future__ import annotations

import ipaddress

import pytest

from txrevproxy._http.networks import AccessPolicy, parse_address, parse_network


@pytest.mark.parametrize(
    "text, expected",
    [
        ("10.1.2.3", "10.1.2.3"),
        ("::ffff:10.1.2.3", "10.1.2.3"),
        ("::FFFF:7f00:1", "127.0.0.1"),
        ("2001:db8::1", "2001:db8::1"),
        ("::1", "::1"),
        ("::10.1.2.3", "::a01:203"),  # IPv4-compatible (deprecated) is not IPv4-mapped
        ("/tmp/proxy.sock", None),
        ("unknown", None),
        ("", None),
        (b"10.1.2.3", None),
        (None, None),
    ],
)
def test_parse_address(text, expected):
    """IP address text is parsed with IPv4-mapped addresses made IPv4; anything else is None."""
    address = parse_address(text)
    assert (None if address is None else str(address)) == expected


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("10.0.0.0/8", "10.0.0.0/8"),
        (" 10.9.8.7/8 ", "10.0.0.0/8"),
        ("10.1.2.3", "10.1.2.3/32"),
        ("::ffff:10.0.0.0/104", "10.0.0.0/8"),
        ("::ffff:10.1.2.3", "10.1.2.3/32"),
        ("::ffff:0:0/96", "0.0.0.0/0"),
        ("::/0", "::/0"),  # wider than the mapped range: stays IPv6
        ("2001:db8::/32", "2001:db8::/32"),
    ],
)
def test_parse_network(spec, expected):
    """CIDRs parse with host bits allowed; networks inside ::ffff:0:0/96 become IPv4."""
    assert str(parse_network(spec)) == expected


@pytest.mark.parametrize("bad", ["10.0.0.0/33", "::1/129", "nonsense", "", "10.0.0/8x", "10.0.0.0/-1"])
def test_parse_network_rejects_bad_cidr_naming_it(bad):
    """A bad CIDR raises a one-line ValueError naming it."""
    with pytest.raises(ValueError, match="not a network in CIDR form") as info:
        parse_network(bad)
    assert repr(bad) in str(info.value)


ALLOW_10 = AccessPolicy.parse(allow=["10.0.0.0/8", "2001:db8::/32"])
DENY_10_1 = AccessPolicy.parse(deny=["10.1.0.0/16", "::1"])
BOTH = AccessPolicy.parse(allow=["10.0.0.0/8"], deny=["10.1.0.0/16"])
MAPPED_RULES = AccessPolicy.parse(deny=["::ffff:192.0.2.0/120"])


@pytest.mark.parametrize(
    "policy, ip, allowed, rule",
    [
        (AccessPolicy(), "203.0.113.1", True, "no access rules"),
        (AccessPolicy(), "/tmp/sock", True, "no access rules"),
        (ALLOW_10, "10.9.9.9", True, "allow 10.0.0.0/8"),
        (ALLOW_10, "::ffff:10.9.9.9", True, "allow 10.0.0.0/8"),
        (ALLOW_10, "2001:db8::5", True, "allow 2001:db8::/32"),
        (ALLOW_10, "11.0.0.1", False, "no allow network matches"),
        (ALLOW_10, "::ffff:11.0.0.1", False, "no allow network matches"),
        (ALLOW_10, "2001:db9::5", False, "no allow network matches"),
        (ALLOW_10, "::1", False, "no allow network matches"),
        (ALLOW_10, "/run/proxy.sock", True, "not an IP address"),
        (DENY_10_1, "10.1.2.3", False, "deny 10.1.0.0/16"),
        (DENY_10_1, "::ffff:10.1.2.3", False, "deny 10.1.0.0/16"),
        (DENY_10_1, "::1", False, "deny ::1/128"),
        (DENY_10_1, "10.2.0.1", True, "no deny network matches"),
        (DENY_10_1, "127.0.0.1", True, "no deny network matches"),
        (BOTH, "10.1.2.3", False, "deny 10.1.0.0/16"),
        (BOTH, "10.2.2.3", True, "allow 10.0.0.0/8"),
        (BOTH, "192.168.0.1", False, "no allow network matches"),
        (MAPPED_RULES, "192.0.2.7", False, "deny 192.0.2.0/24"),
        (MAPPED_RULES, "::ffff:192.0.2.7", False, "deny 192.0.2.0/24"),
        (MAPPED_RULES, "192.0.3.7", True, "no deny network matches"),
    ],
)
def test_policy_decisions(policy, ip, allowed, rule):
    """Deny wins, a non-empty allow list admits only its networks, non-IP peers pass, with the rule named."""
    decision = policy.decide(ip)
    assert (decision.allowed, decision.rule) == (allowed, rule)
    assert policy.allows(ip) is allowed


def test_policy_parse_names_the_bad_cidr():
    """A bad network in either list raises ValueError naming it."""
    with pytest.raises(ValueError, match=r"'10\.0\.0\.0/99'"):
        AccessPolicy.parse(allow=["10.0.0.0/8"], deny=["10.0.0.0/99"])


def test_policy_is_frozen_and_comparable():
    """Policies are immutable values: equal when built from the same networks."""
    policy = AccessPolicy.parse(allow=["10.0.0.0/8"])
    assert policy == AccessPolicy(allow=(ipaddress.ip_network("10.0.0.0/8"),))
    assert AccessPolicy().open and not policy.open
    with pytest.raises(AttributeError):
        policy.allow = ()  # type: ignore[misc]
