"""
The embedded origin behind ``--demo``: a few pages that show what the proxy does.

``/`` explains itself, ``/headers`` shows the request as the origin received it (the forwarding headers the proxy
added), ``/stream?n=BYTES`` streams a body of that size, ``/cookies`` answers with two ``Set-Cookie`` headers.
"""

from __future__ import annotations

import json

from twisted.web.resource import Resource
from twisted.web.server import Site

INDEX = b"""txrevproxy demo origin

This page came through the proxy. Try:
  /headers          the request as the origin saw it (X-Forwarded-For, Forwarded, Via, ...)
  /stream?n=1048576 a streamed body of n bytes
  /cookies          two Set-Cookie headers, relayed as two
"""


class _Index(Resource):
    isLeaf = True

    def render_GET(self, request: object) -> bytes:
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")  # type: ignore[attr-defined]
        return INDEX


class _Headers(Resource):
    isLeaf = True

    def render(self, request: object) -> bytes:
        request.setHeader(b"Content-Type", b"application/json")  # type: ignore[attr-defined]
        seen = [
            [name.decode("latin-1"), value.decode("latin-1")]
            for name, values in request.requestHeaders.getAllRawHeaders()  # type: ignore[attr-defined]
            for value in values
        ]
        body = {"method": request.method.decode(), "uri": request.uri.decode("latin-1"), "headers": seen}  # type: ignore[attr-defined]
        return json.dumps(body, indent=2).encode() + b"\n"


class _Stream(Resource):
    isLeaf = True

    def render_GET(self, request: object) -> bytes:
        n = int(request.args.get(b"n", [b"1048576"])[0])  # type: ignore[attr-defined]
        request.setHeader(b"Content-Type", b"application/octet-stream")  # type: ignore[attr-defined]
        return b"x" * min(n, 64 * 1024 * 1024)


class _Cookies(Resource):
    isLeaf = True

    def render_GET(self, request: object) -> bytes:
        request.responseHeaders.setRawHeaders(b"Set-Cookie", [b"a=1; Path=/", b"b=2; Path=/"])  # type: ignore[attr-defined]
        return b"two cookies set\n"


def demo_site() -> Site:
    root = Resource()
    root.putChild(b"", _Index())
    root.putChild(b"headers", _Headers())
    root.putChild(b"stream", _Stream())
    root.putChild(b"cookies", _Cookies())
    site = Site(root)
    site.noisy = False
    site.log = lambda request: None  # the proxy in front logs each request already
    return site
