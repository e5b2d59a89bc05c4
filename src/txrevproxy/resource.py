"""
``ReverseProxyResource``: a drop-in for ``twisted.web.proxy.ReverseProxyResource`` that streams and pools.

Same constructor and child behaviour as Twisted's (query strings kept, each path segment re-quoted with
``quote(segment, safe="")``, ``getChild`` returns the caller's subclass), usable in any ``Site``. The upstream
connection pool is made once per root resource and shared by its children.
"""

from __future__ import annotations

from typing import cast
from urllib.parse import quote, urlsplit

from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from txrevproxy._http.headers import host_header
from txrevproxy._http.networks import AccessPolicy
from txrevproxy._http.validate import origin_form
from txrevproxy._net.reactor import IProxyReactor
from txrevproxy._relay.exchange import ProxyConfig, Relay
from txrevproxy._relay.interfaces import RelayedRequest
from txrevproxy._server.request import StreamedRequest
from txrevproxy._server.web import WebRequest, respond_error
from txrevproxy._upstream.pool import UpstreamAddress, UpstreamPool

log = Logger(namespace="txrevproxy")


def parse_upstream_url(url: str) -> tuple[UpstreamAddress, bytes]:
    """
    ``http[s]://host:port[/base-path]`` → the upstream address and base path (no trailing slash).

    Raises ``ValueError`` with a one-line message for anything else.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise ValueError(f"invalid upstream URL {url!r}: {e}") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"invalid upstream URL {url!r}: the scheme must be http or https")
    if not parts.hostname:
        raise ValueError(f"invalid upstream URL {url!r}: no host")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"invalid upstream URL {url!r}: only scheme, host, port and path are allowed")
    path = parts.path.rstrip("/").encode("ascii", "strict") if parts.path.isascii() else None
    if path is None:
        raise ValueError(f"invalid upstream URL {url!r}: the path must be ASCII (percent-encoded)")
    default_port = 443 if parts.scheme == "https" else 80
    return UpstreamAddress(parts.hostname, port or default_port, parts.scheme), path


def _default_reactor() -> IProxyReactor:
    from twisted.internet import reactor

    return cast(IProxyReactor, reactor)  # the global reactor provides each interface IProxyReactor names


class ReverseProxyResource(Resource):
    """
    Relays every request below it to ``host:port``, at ``path`` plus the remaining path segments.

    :param host: the upstream's host name or address (``str``).
    :param port: the upstream's port.
    :param path: the base path (``bytes``) the request path is appended to; no trailing slash.
    :param reactor: the reactor to connect with; the global one when ``None``.
    :param scheme: ``"http"``, or ``"https"`` for TLS to the upstream (verified as ``config.pool.tls`` says).
    :param config: relay settings (timeouts, forwarding headers, pool); defaults when ``None``.
    :param access: the per-route access hook: clients this policy refuses are answered ``403`` with a short
        plain-text body and a log line, before anything is sent upstream. ``None`` (the default) lets every client
        through; children inherit it. A router can give each route's resource its own policy, or a subclass can
        override :meth:`client_allowed`.
    """

    def __init__(
        self,
        host: str,
        port: int,
        path: bytes,
        reactor: IProxyReactor | None = None,
        *,
        config: ProxyConfig | None = None,
        pool: UpstreamPool | None = None,
        access: AccessPolicy | None = None,
        scheme: str = "http",
    ) -> None:
        Resource.__init__(self)
        self.host = host
        self.port = port
        self.path = path
        self.reactor = reactor
        self.scheme = scheme
        self.config = config or ProxyConfig()
        self._pool = pool
        self.access = access

    @classmethod
    def from_url(
        cls,
        url: str,
        reactor: IProxyReactor | None = None,
        *,
        config: ProxyConfig | None = None,
        access: AccessPolicy | None = None,
    ) -> ReverseProxyResource:
        """
        A resource relaying to the upstream named by ``http[s]://host:port[/base-path]``.
        """
        address, path = parse_upstream_url(url)
        return cls(address.host, address.port, path, reactor, config=config, access=access, scheme=address.scheme)

    @property
    def pool(self) -> UpstreamPool:
        if self._pool is None:
            if self.reactor is None:
                self.reactor = _default_reactor()
            self._pool = UpstreamPool(self.reactor, self.config.pool)
        return self._pool

    def getChild(self, path: bytes, request: Request) -> ReverseProxyResource:
        child = type(self)(
            self.host,
            self.port,
            self.path + b"/" + quote(path, safe="").encode("ascii"),
            self.reactor,
            config=self.config,
            pool=self.pool,
            access=self.access,
            scheme=self.scheme,
        )
        return child

    def upstream_target(self, request: Request) -> bytes:
        """
        The request target sent upstream: this resource's path plus the client's query string.
        """
        query: bytes = urlsplit(request.uri).query
        return (self.path or b"/") + (b"?" + query if query else b"")

    def client_allowed(self, request: Request) -> bool:
        """
        Whether this route serves the client of ``request``: :attr:`access` applied to the client's address. Logs
        the refusal.
        """
        if self.access is None or self.access.open:
            return True
        peer = request.getClientAddress()
        host = getattr(peer, "host", peer)
        decision = self.access.decide(host)
        if not decision.allowed:
            log.info(
                "refused request from {peer}: 403 {rule} for {method} {target}",
                peer=host,
                rule=decision.rule,
                method=request.method.decode("latin-1"),
                target=request.uri.decode("latin-1"),
            )
        return decision.allowed

    _upstream_cache: tuple[str, int, UpstreamAddress, bytes] | None = None

    def _upstream(self) -> tuple[UpstreamAddress, bytes]:
        # The upstream's address and Host value, made once (host and port stay public attributes, as in Twisted).
        cache = self._upstream_cache
        if cache is None or cache[0] != self.host or cache[1] != self.port or cache[2].scheme != self.scheme:
            address = UpstreamAddress(self.host, self.port, self.scheme)
            cache = self._upstream_cache = (
                self.host,
                self.port,
                address,
                host_header(self.host, self.port, self.scheme),
            )
        return cache[2], cache[3]

    def render(self, request: Request) -> int:
        if not self.client_allowed(request):
            respond_error(request, 403)
            return NOT_DONE_YET
        pool = self.pool
        address, host = self._upstream()
        # The proxy's own requests are what the relay needs; a stock twisted.web request is adapted.
        relayed: RelayedRequest = request if isinstance(request, StreamedRequest) else WebRequest(request)
        relay = Relay(relayed, pool, address, self.upstream_target(request), host, self.config, pool.reactor)
        relay.start()
        return NOT_DONE_YET


class PassThroughProxyResource(ReverseProxyResource):
    """
    Relays every request to the upstream with its request target untouched (after the base path): what the daemon
    serves. No resource traversal: the client's percent-encoding, ``+`` and ``;`` reach the upstream as sent.
    """

    isLeaf = True

    def upstream_target(self, request: Request) -> bytes:
        target = origin_form(request.uri)
        if target == b"*":
            return target if not self.path else self.path
        return self.path + target
