"""
TLS on both sides.

Listening: ``ssl:PORT:privateKey=KEY:certKey=CERT`` (Twisted's endpoint) serves one certificate;
``tls:DIR:port=PORT`` (Twisted's endpoint syntax, our :class:`~txrevproxy._sni.SNICertificates`) serves every key and
certificate (with its chain) found in the ``.pem`` files of ``DIR``, chosen by the name the client sends (SNI),
wildcards included. Both answer ALPN with the protocols the served site accepts. :func:`server_endpoint` makes
such a listener (loading its files, so that a bad one is an error at start); :func:`is_tls_port` tells a TLS port
from a plain one.

Connecting: an ``https://`` upstream is reached through a TLS client connection made by :class:`ClientTLS` from
an :class:`UpstreamTLS` record: the certificate verified against the system's trust store or a CA file, the host
name (or IP address) checked with service-identity, SNI sent, a client certificate offered for mutual TLS, or, only
when asked for explicitly, no verification at all. :func:`tls_failure` turns a failed handshake into a one-line
reason ("certificate has expired", "hostname mismatch ...").
"""

from __future__ import annotations

from pathlib import Path

from attrs import frozen
from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint, serverFromString
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator, IStreamServerEndpoint
from twisted.internet.ssl import (
    Certificate,
    CertificateOptions,
    PrivateCertificate,
    optionsForClientTLS,
    platformTrust,
)
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from ._sni import CERT_MARK, SNICertificates, pem_blocks


#: What the proxy offers an upstream over ALPN: it speaks HTTP/1.1 upstream.
UPSTREAM_PROTOCOLS = [b"http/1.1"]


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
        family = TCP6ServerEndpoint if ":" in endpoint._interface else TCP4ServerEndpoint  # type: ignore[attr-defined]
        tcp = family(None, endpoint._port, endpoint._backlog, endpoint._interface)  # type: ignore[attr-defined]
        return tcp, endpoint._sslContextFactory  # type: ignore[attr-defined]
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
    :class:`~txrevproxy._sni.SNICertificates` (``ValueError`` for an unknown argument or files that cannot serve).
    """
    if description.partition(":")[0] != "tls":
        return serverFromString(reactor, description)
    from twisted.internet.endpoints import _parse  # the endpoint-string splitter serverFromString itself uses

    args, kwargs = _parse(description)
    if len(args) != 2 or not set(kwargs) <= {"port", "backlog", "interface"}:
        raise ValueError("tls: takes a directory of .pem files and port=, backlog=, interface= (tls:DIR:port=PORT)")
    directory, tcp = _tls_listener(reactor, args[1], **kwargs)
    return TLSListener(tcp, SNICertificates.from_directory(directory), clock=reactor)


@frozen
class UpstreamTLS:
    """
    How ``https://`` upstreams are verified.

    :ivar ca_file: a PEM file of the CA certificates to trust instead of the system's.
    :ivar client_cert: a PEM file with a private key and its certificate (and chain), offered for mutual TLS.
    :ivar insecure: verify nothing (neither the chain nor the name): for tests and trusted networks only.
    """

    ca_file: str | None = None
    client_cert: str | None = None
    insecure: bool = False


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise ValueError(f"cannot read the {what} {path!r}: {e.strerror}") from None


def _certificates(pem: bytes, where: str) -> list[Certificate]:
    """
    Every certificate in a PEM file, in order (other PEM blocks, such as a key, are skipped).
    """
    found = []
    for block in pem_blocks(pem):
        if not block.startswith(CERT_MARK):
            continue
        try:
            found.append(Certificate.loadPEM(block))
        except Exception as e:
            raise ValueError(f"a certificate in {where} cannot be loaded: {e}") from None
    return found


@implementer(IOpenSSLClientConnectionCreator)
class _Unverified:
    """
    A client connection creator that sends SNI and offers a client certificate but verifies nothing.
    """

    def __init__(self, options: CertificateOptions, hostname: str, send_name: bool) -> None:
        self._options = options
        self._name = hostname.encode("idna") if send_name else None

    def clientConnectionForTLS(self, protocol: object) -> SSL.Connection:
        connection = self._options.clientConnectionForTLS(protocol)  # type: ignore[arg-type]
        connection.set_app_data(protocol)
        if self._name is not None:
            connection.set_tlsext_host_name(self._name)
        return connection


class ClientTLS:
    """
    The files of an :class:`UpstreamTLS` loaded once (``ValueError`` with a one-line message if they cannot be),
    and a connection creator per upstream host name.
    """

    def __init__(self, settings: UpstreamTLS) -> None:
        self.settings = settings
        self._trust = None
        if settings.ca_file is not None:
            authorities = _certificates(_read(settings.ca_file, "CA file"), repr(settings.ca_file))
            if not authorities:
                raise ValueError(f"no certificate in the CA file {settings.ca_file!r}")
            self._trust = authorities
        self._client: PrivateCertificate | None = None
        self._chain: list[Certificate] = []
        if settings.client_cert is not None:
            pem = _read(settings.client_cert, "client certificate")
            try:
                self._client = PrivateCertificate.loadPEM(pem)
            except Exception as e:
                raise ValueError(
                    f"the client certificate {settings.client_cert!r} needs a private key and a certificate: {e}"
                ) from None
            self._chain = _certificates(pem, repr(settings.client_cert))[1:]
        self._creators: dict[str, object] = {}

    def creator(self, hostname: str) -> object:
        """
        The connection creator for ``hostname`` (made once).
        """
        creator = self._creators.get(hostname)
        if creator is None:
            creator = self._creators[hostname] = self._make(hostname)
        return creator

    def _make(self, hostname: str) -> object:
        from twisted.internet.abstract import isIPAddress, isIPv6Address

        if self.settings.insecure:
            options = self._client_options(verify=False)
            return _Unverified(options, hostname, not (isIPAddress(hostname) or isIPv6Address(hostname)))
        trust = platformTrust() if self._trust is None else _trust_root(self._trust)
        return optionsForClientTLS(
            hostname,
            trustRoot=trust,
            clientCertificate=self._client,
            acceptableProtocols=UPSTREAM_PROTOCOLS,
            extraCertificateOptions=self._extra(),
        )

    def _extra(self) -> dict[str, object]:
        return {"extraCertChain": [cert.original for cert in self._chain]} if self._chain else {}

    def _client_options(self, verify: bool) -> CertificateOptions:
        if self._client is None:
            return CertificateOptions(verify=verify, acceptableProtocols=UPSTREAM_PROTOCOLS)
        return CertificateOptions(
            privateKey=self._client.privateKey.original,
            certificate=self._client.original,
            verify=verify,
            acceptableProtocols=UPSTREAM_PROTOCOLS,
            **self._extra(),  # type: ignore[arg-type]
        )


def _trust_root(authorities: list[Certificate]) -> object:
    from twisted.internet.ssl import trustRootFromCertificates

    return trustRootFromCertificates(authorities)


def tls_failure(reason: Failure, transport: object, hostname: str) -> str | None:
    """
    Why a TLS connection to an upstream failed, in one line, or ``None`` if ``reason`` is not a TLS failure.
    """
    if reason.check(VerificationError):
        return f"hostname mismatch: the certificate is not valid for {hostname}"
    if not reason.check(SSL.Error):
        return None
    code = _verify_result(getattr(transport, "_tlsConnection", None))  # the TLSMemoryBIOProtocol's connection
    if code:
        return f"certificate verify failed: {_verify_error(code)}"
    messages = [entry[2] for entry in _error_entries(reason.value) if entry[2]]
    return "; ".join(messages) or str(reason.value) or "TLS error"


def _error_entries(error: BaseException) -> list[tuple[str, str, str]]:
    args = error.args[0] if error.args else []
    return [entry for entry in args if isinstance(entry, tuple) and len(entry) == 3] if isinstance(args, list) else []


# pyOpenSSL has no public call for why certificate verification failed; OpenSSL's own functions through pyOpenSSL's
# bindings give the code and its text. Should they move, the reason falls back to OpenSSL's error queue.


def _verify_result(connection: object) -> int:
    try:
        from OpenSSL._util import lib

        return int(lib.SSL_get_verify_result(connection._ssl))  # type: ignore[attr-defined]
    except Exception:
        return 0


def _verify_error(code: int) -> str:
    from OpenSSL._util import ffi, lib

    return ffi.string(lib.X509_verify_cert_error_string(code)).decode("ascii", "replace")  # type: ignore[no-any-return]
