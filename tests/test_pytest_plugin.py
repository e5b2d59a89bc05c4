"""
The pytest plugin, tested as its users meet it: test files run by a separate pytest (``pytester``) in which the
plugin is active only because txrevproxy is installed (the ``pytest11`` entry point).
"""

from __future__ import annotations

import pytest

RESOURCE_TESTS = """
import socket
import threading
import urllib.request

from twisted.web.resource import Resource

class Hello(Resource):
    isLeaf = True

    def render_GET(self, request):
        return b"hello " + request.path

    def render_POST(self, request):
        return request.content.read()

STATE = {}

def test_get(txrevproxy_to_resource):
    STATE["threads"] = threading.active_count()
    proxy = txrevproxy_to_resource(Hello())
    STATE["ports"] = (proxy.port, int(proxy.origin_url.rsplit(":", 1)[1]))
    assert urllib.request.urlopen(proxy.url + "/there").read() == b"hello /there"
    assert [seen.status for seen in proxy.requests] == [200]
    assert proxy.origin_requests[0].header("Via") == "1.1 txrevproxy"
    assert proxy.upstream_connections == 1

def test_post(txrevproxy_to_resource):
    proxy = txrevproxy_to_resource(Hello())
    request = urllib.request.Request(proxy.url + "/", data=b"payload", method="POST")
    assert urllib.request.urlopen(request).read() == b"payload"
    assert proxy.origin_requests[0].body == b"payload"

def test_the_first_test_cleaned_up():
    for port in STATE["ports"]:
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still open"
    assert threading.active_count() <= STATE["threads"]
"""


def test_plugin_is_registered(pytester: pytest.Pytester) -> None:
    """With txrevproxy installed, pytest lists its fixtures without any conftest or -p option."""
    result = pytester.runpytest_subprocess("--fixtures")
    result.stdout.fnmatch_lines(["txrevproxy_to_url*", "*txrevproxy_to_resource*"])


def test_resource_fixture(pytester: pytest.Pytester) -> None:
    """A plain synchronous test gets a running proxy in front of a resource, and it is gone after the test."""
    pytester.makepyfile(test_resource=RESOURCE_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)


def test_url_fixture_and_failures(pytester: pytest.Pytester) -> None:
    """The URL fixture relays to a URL; a failing test is reported as such and its proxies are still stopped."""
    pytester.makepyfile(
        test_url="""
import socket
import urllib.error
import urllib.request

import pytest
from twisted.web.resource import Resource

class Hello(Resource):
    isLeaf = True

    def render_GET(self, request):
        return b"hello"

PORTS = []

def test_chain(txrevproxy_to_resource, txrevproxy_to_url):
    inner = txrevproxy_to_resource(Hello())
    outer = txrevproxy_to_url(inner.url)
    PORTS.extend([inner.port, outer.port])
    assert urllib.request.urlopen(outer.url + "/").read() == b"hello"
    assert outer.upstream_connections == 1 and len(inner.requests) == 1

def test_unreachable(txrevproxy_to_url):
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    proxy = txrevproxy_to_url(f"http://127.0.0.1:{port}")
    PORTS.append(proxy.port)
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(proxy.url + "/")
    assert caught.value.code == 502

def test_fails(txrevproxy_to_resource):
    proxy = txrevproxy_to_resource(Hello())
    PORTS.append(proxy.port)
    assert urllib.request.urlopen(proxy.url + "/").read() == b"something else"

def test_all_stopped():
    for port in PORTS:
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0
"""
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(["*AssertionError: assert b'hello' == b'something else'"])
