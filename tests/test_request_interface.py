"""
The requests the relay drives: the proxy's own and the adapter around a stock ``twisted.web`` request.
"""

from io import BytesIO

from twisted.logger import Logger
from twisted.web.server import Request
from twisted.web.test.requesthelper import DummyChannel

from txrevproxy._server.h2 import H2ProxyRequest
from txrevproxy._server.request import ProxyRequest
from txrevproxy._server.web import WebRequest


def test_requests_keep_twisteds_logger():
    """Twisted's Request logs through its _log Logger (e.g. at cleanup): our request classes do not shadow it."""
    assert isinstance(H2ProxyRequest._log, Logger)
    assert isinstance(ProxyRequest._log, Logger)


def _stock_request() -> Request:
    request = Request(DummyChannel())
    request.method, request.uri, request.clientproto = b"POST", b"/a?b", b"HTTP/1.1"
    request.requestHeaders.addRawHeader(b"X-A", b"1")
    request.requestHeaders.addRawHeader(b"X-A", b"2")
    request.content = BytesIO(b"body")
    return request


def test_web_request_reports_head_and_body():
    """A stock request adapted: its method, headers (repeats kept) and stored body are what the relay reads."""
    adapted = WebRequest(_stock_request())
    assert (adapted.method, adapted.uri, adapted.clientproto, adapted.upgrade) == (b"POST", b"/a?b", b"HTTP/1.1", None)
    assert adapted.headerList() == [(b"X-A", b"1"), (b"X-A", b"2")]
    assert adapted.bodySource().framing.length == 4


def test_web_request_head_is_set_for_twisted_and_droppable_until_written():
    """writeHead sets status, headers and length on the stock request; dropHead forgets them until Twisted wrote."""
    request = _stock_request()
    adapted = WebRequest(request)
    adapted.writeHead(201, b"Made", [(b"Set-Cookie", b"a"), (b"Set-Cookie", b"b")], 5)
    assert (request.code, request.code_message) == (201, b"Made")
    assert request.responseHeaders.getRawHeaders(b"set-cookie") == [b"a", b"b"]
    assert request.responseHeaders.getRawHeaders(b"content-length") == [b"5"]
    assert request.defaultContentType is None
    assert adapted.dropHead() is True
    assert not request.responseHeaders.hasHeader(b"set-cookie")
    adapted.writeHead(200, b"", [], 2)
    adapted.write(b"ok")
    assert adapted.dropHead() is False


def test_web_request_error_has_standard_reason():
    """The adapter's error answer carries the standard reason phrase and a short plain-text body."""
    request = _stock_request()
    channel = request.channel
    WebRequest(request).respondError(431)
    assert (request.code, request.code_message) == (431, b"Request Header Fields Too Large")
    head, _, body = channel.transport.written.getvalue().partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert body == b"431 Request Header Fields Too Large\n"
