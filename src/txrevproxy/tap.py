"""
The twistd plugin's options and service: ``twistd -n txrevproxy --listen ... --upstream ...``.

Option errors and listening failures end the process with a one-line message on stderr and exit status 2 (bad
options) or 1 (cannot listen), never a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from twisted.application import service
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.failure import Failure

from ._channel import ProxySite
from ._headers import TrustedNetworks
from ._relay import ProxyConfig
from ._upstream import PoolConfig
from .resource import PassThroughProxyResource, parse_upstream_url

log = Logger(namespace="txrevproxy")

DEFAULT_LISTEN = "tcp:8080"


def _number(kind: type, minimum: float) -> Callable[[str], float]:
    def coerce(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise ValueError(f"{text!r} is not a {kind.__name__}") from None
        if value < minimum:
            raise ValueError(f"{text!r} is below the minimum of {minimum:g}")
        return value

    coerce.coerceDoc = f"({kind.__name__} >= {minimum:g})"  # type: ignore[attr-defined]
    return coerce


_seconds = _number(float, 0.001)


class Options(usage.Options):
    synopsis = "[--listen ENDPOINT]... (--upstream URL | --demo) [options]"
    longdesc = (
        "A streaming reverse proxy: relays every request to the upstream over pooled HTTP/1.1 connections, "
        "with backpressure both ways."
    )
    optFlags = [
        ["demo", None, "Start an embedded demo origin in this process and proxy to it."],
        ["preserve-host", None, "Send the client's Host header upstream instead of the upstream's."],
    ]
    optParameters = [
        ["upstream", "u", None, "The upstream to relay to: http://host:port[/base-path]."],
        ["connect-timeout", None, 5.0, "Seconds to connect to the upstream before answering 504.", _seconds],
        [
            "response-timeout",
            None,
            30.0,
            "Seconds from sending the request until the upstream's response starts, before answering 504.",
            _seconds,
        ],
        ["pool-size", None, 32, "Idle keep-alive connections kept per upstream.", _number(int, 0)],
        ["pool-idle-timeout", None, 30.0, "Seconds an idle upstream connection is kept.", _seconds],
        ["idle-timeout", None, 60.0, "Seconds an idle client connection is kept open.", _seconds],
        [
            "upstream-read-timeout",
            None,
            60.0,
            "Seconds the upstream may send nothing mid-response-body before the upstream and client connections are "
            "aborted (time paused for a slow client does not count).",
            _seconds,
        ],
        [
            "upstream-send-timeout",
            None,
            60.0,
            "Seconds the upstream may leave a request body upload stalled before it is aborted: 504, or the client "
            "connection aborted if the response has started.",
            _seconds,
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["trusted-proxy"] = []

    def opt_listen(self, endpoint: str) -> None:
        """
        A Twisted server endpoint to listen on (repeatable; default tcp:8080).
        """
        try:
            serverFromString(None, endpoint)
        except (ValueError, KeyError, TypeError) as e:
            raise usage.UsageError(f"invalid --listen endpoint {endpoint!r}: {e}") from None
        self["listen"].append(endpoint)

    opt_l = opt_listen

    def opt_trusted_proxy(self, cidr: str) -> None:
        """
        A client network (CIDR) whose X-Forwarded-*/Forwarded headers are appended to instead of replaced
        (repeatable; default none).
        """
        self["trusted-proxy"].append(cidr)

    def postOptions(self) -> None:
        if not self["listen"]:
            self["listen"] = [DEFAULT_LISTEN]
        if self["demo"] and self["upstream"]:
            raise usage.UsageError("give either --upstream or --demo, not both")
        if not self["demo"] and not self["upstream"]:
            raise usage.UsageError("--upstream URL is required (or --demo)")
        if self["upstream"]:
            try:
                parse_upstream_url(self["upstream"])
            except ValueError as e:
                raise usage.UsageError(str(e)) from None
        try:
            self["trusted"] = TrustedNetworks.parse(self["trusted-proxy"])
        except ValueError as e:
            raise usage.UsageError(f"--trusted-proxy: {e}") from None

    def parseOptions(self, options: list[str] | None = None) -> None:
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            print(f"txrevproxy: error: {e} (see --help)", file=sys.stderr)
            raise SystemExit(2) from None

    def config(self) -> ProxyConfig:
        return ProxyConfig(
            response_timeout=self["response-timeout"],
            preserve_host=self["preserve-host"],
            trusted=self["trusted"],
            pool=PoolConfig(
                max_idle=self["pool-size"],
                idle_timeout=self["pool-idle-timeout"],
                connect_timeout=self["connect-timeout"],
                read_timeout=self["upstream-read-timeout"],
                send_timeout=self["upstream-send-timeout"],
            ),
        )


def _listen_now(reactor: object, description: str, factory: object) -> object:
    """
    Listen on ``description`` now; exit with a one-line error if that fails.
    """
    results: list[object] = []
    serverFromString(reactor, description).listen(factory).addBoth(results.append)
    if not results or isinstance(results[0], Failure):
        reason = results[0].getErrorMessage() if results else "listening did not complete"  # type: ignore[union-attr]
        print(f"txrevproxy: error: cannot listen on {description}: {reason}", file=sys.stderr)
        raise SystemExit(1)
    return results[0]


def _url_of(port: object) -> str:
    address = port.getHost()  # type: ignore[attr-defined]
    host = getattr(address, "host", None)
    if host is None:
        return str(address)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{address.port}"


class ProxyService(service.Service):
    """
    Listens on every ``--listen`` endpoint (in ``privilegedStartService``, so that a port below 1024 can be
    bound before privileges are dropped) and serves the proxy there; with ``--demo`` first starts the origin.
    """

    def __init__(self, options: Options, reactor: object = None) -> None:
        self.options = options
        self.reactor = reactor
        self.resource: PassThroughProxyResource | None = None
        self.ports: list[object] = []

    def privilegedStartService(self) -> None:
        if self.reactor is None:
            from twisted.internet import reactor

            self.reactor = reactor
        options = self.options
        upstream = options["upstream"]
        if options["demo"]:
            from ._demo import demo_site

            origin = _listen_now(self.reactor, "tcp:0:interface=127.0.0.1", demo_site())
            self.ports.append(origin)
            upstream = f"http://127.0.0.1:{origin.getHost().port}"  # type: ignore[attr-defined]
            log.info("demo origin listening on {url}", url=upstream)
        self.resource = PassThroughProxyResource.from_url(upstream, self.reactor, config=options.config())
        site = ProxySite(self.resource, timeout=options["idle-timeout"], reactor=self.reactor)
        for description in options["listen"]:
            port = _listen_now(self.reactor, description, site)
            self.ports.append(port)
            log.info(
                "txrevproxy listening on {url} ({description}), relaying to {upstream}",
                url=_url_of(port),
                description=description,
                upstream=upstream,
            )
            if options["demo"]:
                log.info("demo: try  curl -i {url}/", url=_url_of(port))
        service.Service.privilegedStartService(self)

    def stopService(self) -> object:
        service.Service.stopService(self)
        if self.resource is not None:
            self.resource.pool.close()
        from twisted.internet.defer import gatherResults, maybeDeferred

        return gatherResults([maybeDeferred(port.stopListening) for port in self.ports])  # type: ignore[attr-defined]


def makeService(options: Options) -> service.IService:
    return ProxyService(options)
