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

from attrs import frozen
from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint, serverFromString
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.protocols.tls import TLSMemoryBIOFactory
from zope.interface import implementer

from txrevproxy._net.twisted_private import listen_address, split_endpoint_description, ssl_context_factory
from txrevproxy._tls.sni import SNICertificates


def is_tls_port(port: object) -> bool:
    """
    Whether a listening port serves TLS (its factory is Twisted's TLS wrapper).
    """
    return isinstance(getattr(port, "factory", None), TLSMemoryBIOFactory)


def is_tls_endpoint(description: str) -> bool:
    """
    Whether a ``--listen`` endpoint string is a TLS one (``ssl:`` or ``tls:``).
    """
    return description.partition(":")[0] in ("ssl", "tls")


def tls_layers(endpoint: object) -> tuple[object, object] | None:
    """
    For a TLS server endpoint (``ssl:`` or ``tls:``), the TCP endpoint under it and what makes its TLS connections
    (a context factory or a connection creator), so that a socket bound elsewhere (``--workers``) can be served the
    same way; ``None`` for any other endpoint. Reads the endpoints' own attributes, stable across Twisted releases.
    """
    from twisted.internet.endpoints import SSL4ServerEndpoint

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

    tcp: object
    certificates: SNICertificates
    clock: object = None  # what TLS flushes small writes on (None: the global reactor)

    def listen(self, factory: object) -> object:
        wrapped = TLSMemoryBIOFactory(self.certificates, False, factory, clock=self.clock)  # type: ignore[arg-type]
        return self.tcp.listen(wrapped)  # type: ignore[attr-defined]


def _tls_listener(
    reactor: object, path: str, port: str = "443", backlog: str = "50", interface: str = "::"
) -> tuple[str, object]:
    """
    The certificate directory and TCP endpoint of ``tls:PATH:port=...``: the arguments and defaults of Twisted's own
    ``tls:`` parser, whose certificate loading is replaced by ours; an IPv4 interface gets an IPv4 endpoint, so
    that ``--workers`` binds the right address family.
    """
    family = TCP6ServerEndpoint if ":" in interface else TCP4ServerEndpoint  # (Twisted's parser: TCP6 always)
    return path, family(reactor, int(port), int(backlog), interface)


def server_endpoint(reactor: object, description: str) -> object:
    """
    ``serverFromString``, except that a ``tls:DIR`` listener is a :class:`TLSListener` serving the certificates of
    :class:`~txrevproxy._tls.sni.SNICertificates` (``ValueError`` for an unknown argument or files that cannot serve).
    """
    if description.partition(":")[0] != "tls":
        return serverFromString(reactor, description)
    args, kwargs = split_endpoint_description(description)
    if len(args) != 2 or not set(kwargs) <= {"port", "backlog", "interface"}:
        raise ValueError("tls: takes a directory of .pem files and port=, backlog=, interface= (tls:DIR:port=PORT)")
    directory, tcp = _tls_listener(reactor, args[1], **kwargs)
    return TLSListener(tcp, SNICertificates.from_directory(directory), clock=reactor)
