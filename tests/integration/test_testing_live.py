"""
``txrevproxy.testing.start_proxy`` and ``listen_proxy`` on real sockets: a proxy on 127.0.0.1 in front of a fake
origin resource or of a URL, used from a synchronous test (``urllib``) and from a trial test running a reactor.
"""

from __future__ import annotations

import socket
import threading
import time
import urllib.error
import urllib.request

import pytest
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, readBody
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from txrevproxy import ProxyConfig
from txrevproxy.testing import listen_proxy, start_proxy

# Twisted's readBody warns about the transport Agent itself gives it.
pytestmark = pytest.mark.filterwarnings("ignore:Using readBody:DeprecationWarning")


class Hello(Resource):
    isLeaf = True

    def render_GET(self, request: object) -> bytes:
        request.setHeader(b"content-type", b"text/plain")  # type: ignore[attr-defined]
        return b"hello from the origin"


def hello_site() -> Resource:
    root = Resource()
    root.putChild(b"hello", Hello())
    return root


class Later(Resource):
    """
    Answers after a delay scheduled on the reactor it was made with.
    """

    isLeaf = True

    def __init__(self, reactor: object) -> None:
        super().__init__()
        self.reactor = reactor

    def render_GET(self, request: object) -> object:
        def answer() -> None:
            request.write(b"answered later")  # type: ignore[attr-defined]
            request.finish()  # type: ignore[attr-defined]

        self.reactor.callLater(0.01, answer)  # type: ignore[attr-defined]
        return NOT_DONE_YET


def refused(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def closed_by_peer(client: socket.socket) -> bool:
    """
    Whether the other end closed ``client`` (an orderly close or a reset), waiting up to 10 s.
    """
    client.settimeout(10)
    try:
        return client.recv(1024) == b""
    except ConnectionResetError:
        return True
    finally:
        client.close()


def test_resource_origin() -> None:
    """A proxy in front of a fake origin answers urllib at once and records both sides."""
    with start_proxy(origin=hello_site()) as proxy:
        with urllib.request.urlopen(proxy.url + "/hello?q=1") as response:
            assert response.read() == b"hello from the origin"
        [seen] = proxy.requests
        assert (seen.method, seen.target, seen.status) == ("GET", "/hello?q=1", 200)
        [at_origin] = proxy.origin_requests
        assert at_origin.header("x-forwarded-for") == "127.0.0.1"
        assert proxy.upstream_connections == 1


def test_url_upstream() -> None:
    """A proxy in front of a URL (here another proxy's fake origin) relays to it; it has no origin records."""
    with start_proxy(origin=hello_site()) as inner, start_proxy(upstream=inner.origin_url) as outer:
        with urllib.request.urlopen(outer.url + "/hello") as response:
            assert response.read() == b"hello from the origin"
        assert outer.origin_requests == []
        assert [seen.target for seen in inner.origin_requests] == ["/hello"]


def test_origin_made_from_the_reactor() -> None:
    """A callable origin gets the proxy's reactor, so a resource that answers later works."""
    with start_proxy(origin=Later) as proxy, urllib.request.urlopen(proxy.url + "/") as response:
        assert response.read() == b"answered later"


def test_stop_releases_everything() -> None:
    """After stop the port refuses connections, no thread is left and a second stop does nothing."""
    threads = threading.active_count()
    proxy = start_proxy(origin=hello_site())
    origin_port = int(proxy.origin_url.rsplit(":", 1)[1])
    idle = socket.create_connection(("127.0.0.1", proxy.port))  # a client connection left open
    proxy.stop()
    proxy.stop()
    assert refused(proxy.port) and refused(origin_port)
    assert closed_by_peer(idle)
    assert threading.active_count() == threads


def test_stop_during_a_request() -> None:
    """Stopping while a request waits on the origin closes the client's connection instead of leaving it hanging."""

    class Never(Resource):
        isLeaf = True

        def render_GET(self, request: object) -> object:
            return NOT_DONE_YET

    proxy = start_proxy(origin=Never())
    client = socket.create_connection(("127.0.0.1", proxy.port))
    client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    deadline = time.monotonic() + 10
    while not proxy.origin_requests:  # the request is on its way: wait until the origin has it
        assert time.monotonic() < deadline, "the origin did not get the request"
    proxy.stop()
    assert closed_by_peer(client)


def test_settings_are_applied() -> None:
    """Settings reach the proxy: a short response timeout answers 504 from a silent origin."""

    class Never(Resource):
        isLeaf = True

        def render_GET(self, request: object) -> object:
            return NOT_DONE_YET

    with start_proxy(origin=Never(), config=ProxyConfig(response_timeout=0.05)) as proxy:
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(proxy.url + "/")
        assert caught.value.code == 504
        assert proxy.requests[0].status == 504


def test_exactly_one_target() -> None:
    """A proxy needs a URL or an origin resource, not both and not neither."""
    with pytest.raises(TypeError):
        start_proxy()
    with pytest.raises(TypeError):
        start_proxy(upstream="http://127.0.0.1:1", origin=hello_site())


class ListenProxyTests(TestCase):
    """
    ``listen_proxy`` in a test that runs the (global) reactor: trial's own ``TestCase``.
    """

    def setUp(self) -> None:
        from twisted.internet import reactor

        self.reactor = reactor
        self.proxy = listen_proxy(reactor, origin=hello_site())
        self.addCleanup(self.proxy.stop)

    async def test_agent_through_the_proxy(self) -> None:
        """A Twisted client in the same reactor gets the origin's answer through the proxy."""
        response = await Agent(self.reactor).request(b"GET", (self.proxy.url + "/hello").encode())
        self.assertEqual(await readBody(response), b"hello from the origin")
        self.assertEqual([seen.status for seen in self.proxy.requests], [200])
        self.assertEqual(self.proxy.upstream_connections, 1)

    async def test_stopped(self) -> None:
        """Once stop has fired, the proxy's port refuses connections."""
        await self.proxy.stop()
        await deferLater(self.reactor, 0, lambda: None)
        self.assertTrue(refused(self.proxy.port))


class StartProxyFromTwistedTests(TestCase):
    """
    ``start_proxy`` (what the pytest fixtures use) from a test running the global reactor: two reactors, real sockets.
    """

    async def test_agent_to_a_threaded_proxy(self) -> None:
        """A Twisted client on the test's reactor talks to the proxy on its own reactor thread."""
        from twisted.internet import reactor

        proxy = start_proxy(origin=hello_site())
        self.addCleanup(proxy.stop)
        response = await Agent(reactor).request(b"GET", (proxy.url + "/hello").encode())
        self.assertEqual(await readBody(response), b"hello from the origin")
        self.assertIsNot(proxy.reactor, reactor)
        self.assertEqual([seen.status for seen in proxy.requests], [200])
