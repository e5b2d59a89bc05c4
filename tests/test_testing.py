"""
``txrevproxy.testing.MemoryProxy``: the trial helper, a proxy wired in memory to a fake origin, driven by a clock.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import ResponseFailed
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from txrevproxy import ClientConfig, PoolConfig, ProxyConfig
from txrevproxy.testing import MemoryProxy


class Origin(Resource):
    """
    A fake origin: ``/hello`` answers at once, ``/echo`` sends back the body, ``/slow`` answers only when
    ``release()`` is called, ``/cut`` promises 100 bytes and sends 10, then ``cut()`` drops the connection.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.waiting: list[object] = []

    def render_GET(self, request: object) -> object:
        path = request.path  # type: ignore[attr-defined]
        if path == b"/slow":
            self.waiting.append(request)
            return NOT_DONE_YET
        if path == b"/cut":
            request.setHeader(b"content-length", b"100")  # type: ignore[attr-defined]
            request.write(b"0123456789")  # type: ignore[attr-defined]
            self.waiting.append(request)
            return NOT_DONE_YET
        request.setHeader(b"content-type", b"text/plain")  # type: ignore[attr-defined]
        return b"hello from the origin"

    def render_PUT(self, request: object) -> bytes:
        return b"x" * 4_000_000

    def render_POST(self, request: object) -> bytes:
        return request.content.read()  # type: ignore[attr-defined, no-any-return]

    def cut(self) -> None:
        for request in self.waiting:
            request.channel.transport.abortConnection()  # type: ignore[attr-defined]
        self.waiting.clear()

    def release(self) -> None:
        for request in self.waiting:
            request.write(b"finally")  # type: ignore[attr-defined]
            request.finish()  # type: ignore[attr-defined]
        self.waiting.clear()


class MemoryProxyTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.origin = Origin()
        self.proxy = MemoryProxy(self.origin)

    def test_get(self) -> None:
        """A request through the proxy gets the origin's answer at once, with no real time passing."""
        response = self.successResultOf(self.proxy.request("GET", "/hello"))
        self.assertEqual((response.code, response.body), (200, b"hello from the origin"))
        self.assertEqual(response.header("content-type"), "text/plain")
        self.assertEqual(self.proxy.clock.seconds(), 0)

    def test_records(self) -> None:
        """The proxy records the request as the client sent it with its status; the origin what it received."""
        self.successResultOf(self.proxy.request("GET", "/hello?x=1", headers={"X-Test": "yes"}))
        [seen] = self.proxy.requests
        self.assertEqual((seen.method, seen.target, seen.status), ("GET", "/hello?x=1", 200))
        self.assertEqual(seen.header("x-test"), "yes")
        [at_origin] = self.proxy.origin_requests
        self.assertEqual(at_origin.target, "/hello?x=1")
        self.assertEqual(at_origin.header("Host"), "127.0.0.1:8000")
        self.assertEqual(at_origin.header("X-Forwarded-Host"), "127.0.0.1:8080")
        self.assertEqual(at_origin.header("Via"), "1.1 txrevproxy")

    def test_body_reaches_origin(self) -> None:
        """A request body is relayed to the origin and recorded there."""
        body = b"b" * 100_000
        response = self.successResultOf(self.proxy.request("POST", "/echo", body=body))
        self.assertEqual(response.body, body)
        self.assertEqual(self.proxy.origin_requests[0].body, body)

    def test_keep_alive_upstream(self) -> None:
        """Requests one after another share one pooled upstream connection."""
        for _ in range(3):
            self.successResultOf(self.proxy.request("GET", "/hello"))
        self.assertEqual(self.proxy.upstream_connections, 1)
        self.assertEqual(len(self.proxy.origin_requests), 3)

    def test_slow_origin(self) -> None:
        """While the origin has not answered there is no response; when it does, it arrives."""
        d = self.proxy.request("GET", "/slow")
        self.proxy.advance(5)
        self.assertNoResult(d)
        self.assertEqual(self.proxy.requests[0].status, None)
        self.origin.release()
        self.proxy.flush()
        self.assertEqual(self.successResultOf(d).body, b"finally")

    def test_response_timeout(self) -> None:
        """An origin silent for the response timeout gets the client a 504, on the clock alone."""
        proxy = MemoryProxy(self.origin, config=ProxyConfig(response_timeout=7))
        d = proxy.request("GET", "/slow")
        proxy.advance(6.9)
        self.assertNoResult(d)
        proxy.advance(0.1)
        response = self.successResultOf(d)
        self.assertEqual(response.code, 504)
        self.assertEqual(proxy.requests[0].status, 504)

    def test_origin_refusing(self) -> None:
        """An origin refusing connections gets the client a 502."""
        self.proxy.origin_connections("refuse")
        self.assertEqual(self.successResultOf(self.proxy.request("GET", "/hello")).code, 502)

    def test_no_origin(self) -> None:
        """Without an origin resource nothing listens upstream: 502."""
        proxy = MemoryProxy()
        self.assertEqual(self.successResultOf(proxy.request("GET", "/")).code, 502)
        self.assertEqual(proxy.origin_requests, [])

    def test_connect_timeout(self) -> None:
        """An origin that never accepts gets the client a 504 after the connect timeout."""
        proxy = MemoryProxy(self.origin, config=ProxyConfig(pool=PoolConfig(connect_timeout=3)))
        proxy.origin_connections("hang")
        d = proxy.request("GET", "/hello")
        proxy.advance(2.9)
        self.assertNoResult(d)
        proxy.advance(0.1)
        self.assertEqual(self.successResultOf(d).code, 504)

    def test_cut_short(self) -> None:
        """A response the origin cuts short is not completed: the client's request fails."""
        d = self.proxy.request("GET", "/cut")
        self.assertNoResult(d)
        self.origin.cut()
        self.proxy.flush()
        self.failureResultOf(d, ResponseFailed)

    def test_raw_client(self) -> None:
        """A raw client sends bytes an HTTP library would not, and reads the proxy's answer."""
        client = self.proxy.connect()
        client.send(b"GET /hello HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
        self.assertTrue(client.received().startswith(b"HTTP/1.1 400 "))
        self.assertTrue(client.closed)
        self.assertEqual(self.proxy.origin_requests, [])

    def test_client_head_timeout(self) -> None:
        """A client that stops mid-head is answered 408 once the head timeout has passed on the clock."""
        proxy = MemoryProxy(self.origin, client=ClientConfig(head_timeout=2))
        client = proxy.connect()
        client.send(b"GET /hello HTTP/1.1\r\n")
        proxy.advance(1.9)
        self.assertEqual(client.received(), b"")
        proxy.advance(0.1)
        self.assertTrue(client.received().startswith(b"HTTP/1.1 408 "))

    def test_pipelined_keep_alive_client(self) -> None:
        """A raw client can send several requests on one connection and read each answer."""
        client = self.proxy.connect()
        client.send(b"GET /hello HTTP/1.1\r\nHost: a\r\n\r\nGET /hello HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(client.received().count(b"hello from the origin"), 2)
        self.assertFalse(client.closed)
        client.close()
        self.assertTrue(client.closed)

    def test_slow_client_backpressure(self) -> None:
        """A client that stops reading gets the proxy to stop reading the origin: little is buffered on the way."""
        client = self.proxy.connect()
        client.pause()
        client.send(b"PUT /big HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n")
        ports = {connection.server.host.port: connection for connection in self.proxy.network.connections}
        to_client, to_origin = ports[MemoryProxy.PORT], ports[MemoryProxy.ORIGIN_PORT]
        # The proxy's writes to the client wait unread; the proxy has stopped reading the origin's.
        self.assertLess(len(to_client.server.outgoing), 1_000_000)
        self.assertFalse(to_origin.client.reading)
        self.assertGreater(len(to_origin.server.outgoing), 2_000_000)
        client.resume()
        self.assertEqual(client.received().partition(b"\r\n\r\n")[2], b"x" * 4_000_000)
