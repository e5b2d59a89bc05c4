"""
The reference for the benchmark: ``twisted.web.proxy.ReverseProxyResource`` in a plain ``Site``, one process.

    python benchmarks/twisted_web_proxy.py UPSTREAM_PORT [LISTEN_ENDPOINT]

Listens on ``LISTEN_ENDPOINT``, a Twisted endpoint string (by default ``tcp:0:interface=127.0.0.1:backlog=4096``,
any free port; ``ssl:...`` for TLS, HTTP/1.1 only: Twisted's ``ssl:`` endpoint offers no ALPN), logs
``listening on http://127.0.0.1:PORT`` (``https://`` for ``ssl:``) and, like ``twistd -n``, one access-log line per
request to stdout, so both Twisted proxies pay for logging.
"""

import sys

from twisted.internet import endpoints, reactor
from twisted.python import log
from twisted.web import proxy, server


def main(argv: list[str]) -> None:
    upstream_port = int(argv[1])
    description = argv[2] if len(argv) > 2 else "tcp:0:interface=127.0.0.1:backlog=4096"
    scheme = "https" if description.startswith("ssl:") else "http"
    log.startLogging(sys.stdout)
    site = server.Site(proxy.ReverseProxyResource("127.0.0.1", upstream_port, b""))
    endpoint = endpoints.serverFromString(reactor, description)

    def listening(port) -> None:
        print(f"listening on {scheme}://127.0.0.1:{port.getHost().port}", flush=True)

    endpoint.listen(site).addCallbacks(listening, lambda f: (f.printTraceback(), reactor.stop()))
    reactor.run()


if __name__ == "__main__":
    main(sys.argv)
