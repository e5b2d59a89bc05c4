"""
ReverseProxyResource as a library, inside Twisted's plain Site (body buffered by the Site, response streamed).
"""

from __future__ import annotations

import pytest
from twisted.logger import capturedLogs, formatEvent
from twisted.web.resource import Resource
from twisted.web.server import Site

from tests._harness import Harness, head_and_body
from txrevproxy import AccessPolicy, PassThroughProxyResource, ReverseProxyResource
from txrevproxy.resource import parse_upstream_url


class MyProxy(ReverseProxyResource):
    pass


def _site_harness(path: bytes = b"/base", cls: type = ReverseProxyResource) -> Harness:
    def make(reactor):
        root = Resource()
        root.putChild(b"proxy", cls("127.0.0.1", 8000, path, reactor))
        return root

    return Harness(resource=make, site_class=Site)


def test_get_child_returns_callers_subclass_sharing_the_pool():
    """getChild builds the caller's subclass with the segment quoted, sharing one pool."""
    parent = MyProxy("h", 81, b"/base", reactor=object())
    child = parent.getChild(b"a b/c", None)
    assert type(child) is MyProxy
    assert child.path == b"/base/a%20b%2Fc"
    assert (child.host, child.port, child.reactor) == ("h", 81, parent.reactor)
    assert child.pool is parent.pool


@pytest.mark.parametrize(
    "target, upstream",
    [
        (b"/proxy/a%20b/c%2Fd?x=1+2&y=%2F", b"/base/a%20b/c%2Fd?x=1+2&y=%2F"),
        (b"/proxy/a+b", b"/base/a%2Bb"),  # the segment is unquoted by Site and re-quoted, as twisted.web.proxy does
        (b"/proxy/", b"/base/"),
        (b"/proxy/x?", b"/base/x"),
    ],
)
def test_paths_mapped_like_twisted_web_proxy(target, upstream):
    """The upstream path is the base path plus each re-quoted segment, with the query string kept."""
    h = _site_harness()
    h.send(b"GET " + target + b" HTTP/1.1\r\nHost: e\r\n\r\n")
    assert h.upstream().accept().received().startswith(b"GET " + upstream + b" HTTP/1.1\r\n")


def test_buffered_chunked_body_goes_upstream_with_length():
    """In a plain Site the body is already complete, so it is sent with a Content-Length."""
    h = _site_harness()
    h.send(b"POST /proxy/x HTTP/1.1\r\nHost: e\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
    sent = h.upstream().accept().received()
    assert b"Content-Length: 5\r\n" in sent
    assert b"Transfer-Encoding" not in sent
    assert sent.endswith(b"\r\n\r\nabcde")


def test_response_relayed_in_plain_site_without_default_content_type():
    """The response is relayed as the upstream sent it: no text/html added by the Site."""
    h = _site_harness()
    h.send(b"GET /proxy/x HTTP/1.1\r\nHost: e\r\n\r\n")
    h.upstream().accept().respond(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    head, body = head_and_body(h.response())
    assert body == b"ok"
    assert b"Content-Type" not in head


def test_upstream_server_and_date_replace_the_sites():
    """Server and Date come from the upstream when it sends them."""
    h = _site_harness()
    h.send(b"GET /proxy/x HTTP/1.1\r\nHost: e\r\n\r\n")
    h.upstream().accept().respond(b"HTTP/1.1 200 OK\r\nServer: origin\r\nDate: yesterday\r\nContent-Length: 0\r\n\r\n")
    head, _ = head_and_body(h.response())
    assert b"Server: origin" in head and b"Date: yesterday" in head
    assert b"TwistedWeb" not in head


def test_from_url():
    """from_url takes host, port and base path from an http URL."""
    r = ReverseProxyResource.from_url("http://127.0.0.1:8000/base/", reactor=object())
    assert (r.host, r.port, r.path) == ("127.0.0.1", 8000, b"/base")


@pytest.mark.parametrize(
    "url, message",
    [
        ("ftp://h/", "scheme must be http"),
        ("http://:80/", "no host"),
        ("http://h:99999/", "invalid upstream URL"),
        ("http://h/?q=1", "only scheme, host, port and path"),
        ("127.0.0.1:8000", "scheme must be http"),
    ],
)
def test_bad_upstream_urls(url, message):
    """Unusable upstream URLs are refused with a one-line reason."""
    with pytest.raises(ValueError, match=message):
        parse_upstream_url(url)


# -- the per-route access hook ------------------------------------------------------------------------------------


def _guarded(access: AccessPolicy, peer: str = "10.0.0.1") -> Harness:
    def make(reactor):
        return PassThroughProxyResource("127.0.0.1", 8000, b"", reactor, access=access)

    return Harness(resource=make, peer=peer)


def test_route_access_refuses_with_403_before_any_upstream_connection():
    """A client the route's access policy refuses gets a short plain-text 403, a log line and no upstream call."""
    h = _guarded(AccessPolicy.parse(deny=["10.0.0.0/8"]))
    with capturedLogs() as events:
        h.send(b"GET /x?y=1 HTTP/1.1\r\nHost: e\r\n\r\n")
    head, body = head_and_body(h.response())
    assert head.startswith(b"HTTP/1.1 403 Forbidden\r\n")
    assert b"Content-Type: text/plain; charset=utf-8" in head
    assert body == b"403 Forbidden\n"
    assert h.attempts == 0
    lines = [formatEvent(e) for e in events if e.get("log_namespace") == "txrevproxy"]
    assert lines == ["refused request from 10.0.0.1: 403 deny 10.0.0.0/8 for GET /x?y=1"]


def test_route_access_allows_members_through():
    """A client in the route's allow list is relayed as usual."""
    h = _guarded(AccessPolicy.parse(allow=["10.0.0.0/24"]))
    h.send(b"GET /x HTTP/1.1\r\nHost: e\r\n\r\n")
    assert h.upstream().accept().received().startswith(b"GET /x HTTP/1.1\r\n")


def test_route_403_with_a_streaming_body_keeps_the_connection_usable():
    """A refused upload is drained; the next pipelined request on the connection is answered too."""
    h = _guarded(AccessPolicy.parse(allow=["192.0.2.0/24"]))
    h.send(b"POST /x HTTP/1.1\r\nHost: e\r\nContent-Length: 5\r\n\r\nab")
    h.send(b"cde" + b"GET /y HTTP/1.1\r\nHost: e\r\n\r\n")
    assert h.response().count(b"HTTP/1.1 403 Forbidden\r\n") == 2
    assert h.attempts == 0


def test_route_access_inherited_by_children_in_a_plain_site():
    """In a plain Site, children of a ReverseProxyResource carry its access policy."""
    policy = AccessPolicy.parse(deny=["10.0.0.1"])

    def make(reactor):
        root = Resource()
        root.putChild(b"proxy", ReverseProxyResource("127.0.0.1", 8000, b"/base", reactor, access=policy))
        return root

    h = Harness(resource=make, site_class=Site)
    h.send(b"GET /proxy/a/b HTTP/1.1\r\nHost: e\r\n\r\n")
    assert h.response().startswith(b"HTTP/1.1 403 Forbidden\r\n")
    assert h.attempts == 0
    assert ReverseProxyResource.from_url("http://h:1/", reactor=object(), access=policy).access is policy
