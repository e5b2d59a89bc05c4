"""
txrevproxy as a library: a Site that serves some pages itself and relays everything under /app/ to an upstream.

    python examples/reverse-proxy.py http://127.0.0.1:8000 8080

then ``curl http://127.0.0.1:8080/app/anything?x=1`` reaches ``http://127.0.0.1:8000/anything?x=1``.

Using ``ProxySite`` instead of Twisted's ``Site`` (as below) streams request bodies to the upstream while they are
still arriving; in a plain ``Site`` they are buffered first (Twisted renders after the whole body), and responses
stream with backpressure either way.
"""

import sys

from twisted.internet import endpoints, reactor
from twisted.python.log import startLogging
from twisted.web.resource import Resource
from twisted.web.static import Data

from txrevproxy import ProxySite, ReverseProxyResource


def main(upstream: str = "http://127.0.0.1:8000", port: str = "8080") -> None:
    startLogging(sys.stdout)
    root = Resource()
    root.putChild(b"", Data(b"served here; /app/ is relayed\n", "text/plain"))
    root.putChild(b"app", ReverseProxyResource.from_url(upstream, reactor))
    endpoints.serverFromString(reactor, f"tcp:{port}:interface=127.0.0.1").listen(ProxySite(root))
    reactor.run()


if __name__ == "__main__":
    main(*sys.argv[1:])
