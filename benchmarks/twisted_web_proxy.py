"""
The reference for the benchmark: ``twisted.web.proxy.ReverseProxyResource`` in a plain ``Site``, one process.

    python benchmarks/twisted_web_proxy.py UPSTREAM_PORT [LISTEN_PORT]

Listens on 127.0.0.1 (port 0 = any free port by default), logs ``listening on http://127.0.0.1:PORT`` and, like
``twistd -n``, one access-log line per request to stdout, so both Twisted proxies pay for logging.
"""

import sys

from twisted.internet import endpoints, reactor
from twisted.python import log
from twisted.web import proxy, server


def main(argv: list[str]) -> None:
    upstream_port = int(argv[1])
    listen_port = int(argv[2]) if len(argv) > 2 else 0
    log.startLogging(sys.stdout)
    site = server.Site(proxy.ReverseProxyResource("127.0.0.1", upstream_port, b""))
    endpoint = endpoints.TCP4ServerEndpoint(
        reactor, listen_port, backlog=4096, interface="127.0.0.1"
    )

    def listening(port) -> None:
        print(f"listening on http://127.0.0.1:{port.getHost().port}", flush=True)

    endpoint.listen(site).addCallbacks(listening, lambda f: (f.printTraceback(), reactor.stop()))
    reactor.run()


if __name__ == "__main__":
    main(sys.argv)
