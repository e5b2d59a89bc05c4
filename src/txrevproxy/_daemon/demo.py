"""
The embedded origin behind ``--demo``: a few pages that show what the proxy does.

``/`` explains itself, ``/headers`` shows the request as the origin received it (the forwarding headers the proxy
added), ``/stream?n=BYTES`` streams a body of that size, ``/cookies`` answers with two ``Set-Cookie`` headers.
"""

from __future__ import annotations

import json

from twisted.web.http import Request
from twisted.web.resource import Resource
from twisted.web.server import Site

INDEX = b"""txrevproxy demo origin

This page came through the proxy. Try:
  /headers          the request as the origin saw it (X-Forwarded-For, Forwarded, Via, ...)
  /stream?n=1048576 a streamed body of n bytes
  /cookies          two Set-Cookie headers, relayed as two
"""


class _Page(Resource):
    """
    A page of the demo origin, with no children.
    """

    isLeaf = True

    def __init__(self) -> None:
        Resource.__init__(self)


class _Index(_Page):
    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        return INDEX


class _Headers(_Page):
    def render(self, request: Request) -> bytes:
        request.setHeader(b"Content-Type", b"application/json")
        seen = [
            [name.decode("latin-1"), value.decode("latin-1")]
            for name, values in request.requestHeaders.getAllRawHeaders()
            for value in values
        ]
        body = {"method": request.method.decode(), "uri": request.uri.decode("latin-1"), "headers": seen}
        return json.dumps(body, indent=2).encode() + b"\n"


class _Stream(_Page):
    def render_GET(self, request: Request) -> bytes:
        n = int(request.args.get(b"n", [b"1048576"])[0])
        request.setHeader(b"Content-Type", b"application/octet-stream")
        return b"x" * min(n, 64 * 1024 * 1024)


class _Cookies(_Page):
    def render_GET(self, request: Request) -> bytes:
        request.responseHeaders.setRawHeaders(b"Set-Cookie", [b"a=1; Path=/", b"b=2; Path=/"])
        return b"two cookies set\n"


class _DemoSite(Site):
    def __init__(self, root: Resource) -> None:
        Site.__init__(self, root)
        self.noisy = False

    def log(self, request: Request) -> None:
        pass  # the proxy in front logs each request already


def demo_site() -> Site:
    root = Resource()
    root.putChild(b"", _Index())
    root.putChild(b"headers", _Headers())
    root.putChild(b"stream", _Stream())
    root.putChild(b"cookies", _Cookies())
    return _DemoSite(root)
