"""
TLS listeners.

Listening: ``ssl:PORT:privateKey=KEY:certKey=CERT`` (Twisted's endpoint) serves one certificate;
``tls:DIR:port=PORT`` (Twisted's endpoint syntax, our :class:`~txrevproxy._tls.sni.SNICertificates`) serves every
key and certificate (with its chain) found in the ``.pem`` files of ``DIR``, chosen by the name the client sends (SNI),
wildcards included. Both answer ALPN with the protocols the served site accepts. :func:`server_endpoint` makes
such a listener (loading its files, so that a bad one is an error at start); :func:`is_tls_port` tells a TLS port
from a plain one.

"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from attrs import frozen
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import (
    SSL4ServerEndpoint,
    TCP4ServerEndpoint,
    TCP6ServerEndpoint,
    serverFromString,
)
from twisted.internet.interfaces import (
    IListeningPort,
    IOpenSSLContextFactory,
    IOpenSSLServerConnectionCreator,
    IProtocolFactory,
    IReactorTime,
    IStreamServerEndpoint,
)
from twisted.protocols.tls import TLSMemoryBIOFactory
from zope.interface import implementer

from txrevproxy._net.twisted_private import listen_address, split_endpoint_description, ssl_context_factory
from txrevproxy._tls.sni import SNICertificates

if TYPE_CHECKING:
    from typing import TypeAlias

    #: What makes a listener's TLS connections: a context factory (``ssl:``) or a connection creator (``tls:``).
    ServerTLS: TypeAlias = IOpenSSLContextFactory | IOpenSSLServerConnectionCreator

# Twisted leaves it unannotated: its type, from its docs.
_server_from_string: Callable[[object, str], IStreamServerEndpoint] = serverFromString


def is_tls_port(port: IListeningPort) -> bool:
    """
    Whether a listening port serves TLS (its factory is Twisted's TLS wrapper).
    """
    return isinstance(getattr(port, "factory", None), TLSMemoryBIOFactory)


def is_tls_endpoint(description: str) -> bool:
    """
    Whether a ``--listen`` endpoint string is a TLS one (``ssl:`` or ``tls:``).
    """
    return description.partition(":")[0] in ("ssl", "tls")


def tls_layers(endpoint: IStreamServerEndpoint) -> tuple[IStreamServerEndpoint, ServerTLS] | None:
    """
    For a TLS server endpoint (``ssl:`` or ``tls:``), the TCP endpoint under it and what makes its TLS connections
    (a context factory or a connection creator), so that a socket bound elsewhere (``--workers``) can be served the
    same way; ``None`` for any other endpoint. Reads the endpoints' own attributes, stable across Twisted releases.
    """
    if isinstance(endpoint, SSL4ServerEndpoint):
        interface, port, backlog = listen_address(endpoint)
        family = TCP6ServerEndpoint if ":" in interface else TCP4ServerEndpoint
        tcp = family(None, port, backlog, interface)
        return tcp, ssl_context_factory(endpoint)
    if isinstance(endpoint, TLSListener):
        return endpoint.tcp, endpoint.certificates
    return None


@implementer(IStreamServerEndpoint)
@frozen
class TLSListener:
    """
    A ``tls:DIR`` listener: a TCP endpoint whose connections are served TLS with certificates chosen by SNI.
    """

    tcp: IStreamServerEndpoint
    certificates: SNICertificates
    clock: IReactorTime | None = None  # what TLS flushes small writes on (None: the global reactor)

    def listen(self, factory: IProtocolFactory) -> Deferred[IListeningPort]:
        wrapped = TLSMemoryBIOFactory(self.certificates, False, factory, clock=self.clock)
        return self.tcp.listen(wrapped)


def _tls_listener(
    reactor: IReactorTime | None, path: str, port: str = "443", backlog: str = "50", interface: str = "::"
) -> tuple[str, TCP4ServerEndpoint | TCP6ServerEndpoint]:
    """
    The certificate directory and TCP endpoint of ``tls:PATH:port=...``: the arguments and defaults of Twisted's own
    ``tls:`` parser, whose certificate loading is replaced by ours; an IPv4 interface gets an IPv4 endpoint, so
    that ``--workers`` binds the right address family.
    """
    family = TCP6ServerEndpoint if ":" in interface else TCP4ServerEndpoint  # (Twisted's parser: TCP6 always)
    return path, family(reactor, int(port), int(backlog), interface)


def server_endpoint(reactor: IReactorTime | None, description: str) -> IStreamServerEndpoint:
    """
    ``serverFromString``, except that a ``tls:DIR`` listener is a :class:`TLSListener` serving the certificates of
    :class:`~txrevproxy._tls.sni.SNICertificates` (``ValueError`` for an unknown argument or files that cannot serve).

    ``reactor`` listens (so it provides what the endpoint needs too: ``IReactorTCP`` for ``tcp:``, ``ssl:`` and
    ``tls:``), and a ``tls:`` listener's TLS flushes small writes on it; with ``None`` the endpoint is only to be
    looked at, not listened on (the options check a description so).
    """
    if description.partition(":")[0] != "tls":
        return _server_from_string(reactor, description)
    args, kwargs = split_endpoint_description(description)
    if len(args) != 2 or not set(kwargs) <= {"port", "backlog", "interface"}:
        raise ValueError("tls: takes a directory of .pem files and port=, backlog=, interface= (tls:DIR:port=PORT)")
    directory, tcp = _tls_listener(reactor, args[1], **kwargs)
    return TLSListener(tcp, SNICertificates.from_directory(directory), clock=reactor)
