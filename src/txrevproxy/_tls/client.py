"""
TLS to upstreams: an ``https://`` upstream is reached through a TLS client connection made by :class:`ClientTLS`
from an :class:`UpstreamTLS` record: the certificate verified against the system's trust store or a CA file, the
host name (or IP address) checked with service-identity, SNI sent, a client certificate offered for mutual TLS, or,
only when asked for explicitly, no verification at all. :func:`tls_failure` turns a failed handshake into a
one-line reason ("certificate has expired", "hostname mismatch ...").
"""

from __future__ import annotations

from collections.abc import Callable

from attrs import frozen
from OpenSSL import SSL
from OpenSSL.crypto import X509
from service_identity import VerificationError
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator, ITransport
from twisted.internet.ssl import (
    Certificate,
    CertificateOptions,
    PrivateCertificate,
    optionsForClientTLS,
    platformTrust,
    trustRootFromCertificates,
)
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

from txrevproxy._net.twisted_private import IOpenSSLTrustRoot, tls_connection
from txrevproxy._tls.pem import certificates, read_pem

#: What the proxy offers an upstream over ALPN: it speaks HTTP/1.1 upstream.
UPSTREAM_PROTOCOLS = [b"http/1.1"]

# Twisted leaves these three unannotated (calls to them are errors under --strict): their types, from their docs.
_load_client_certificate: Callable[[bytes], PrivateCertificate] = PrivateCertificate.loadPEM
_platform_trust: Callable[[], IOpenSSLTrustRoot] = platformTrust
_trust_root: Callable[[list[Certificate]], IOpenSSLTrustRoot] = trustRootFromCertificates


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


@implementer(IOpenSSLClientConnectionCreator)
class _Unverified:
    """
    A client connection creator that sends SNI and offers a client certificate but verifies nothing.
    """

    def __init__(self, options: CertificateOptions, hostname: str, send_name: bool) -> None:
        self._options = options
        self._name = hostname.encode("idna") if send_name else None

    def clientConnectionForTLS(self, protocol: TLSMemoryBIOProtocol) -> SSL.Connection:
        connection = self._options.clientConnectionForTLS(protocol)
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
        self._trust: list[Certificate] | None = None
        if settings.ca_file is not None:
            authorities = certificates(read_pem(settings.ca_file, "CA file"), repr(settings.ca_file))
            if not authorities:
                raise ValueError(f"no certificate in the CA file {settings.ca_file!r}")
            self._trust = authorities
        self._client: PrivateCertificate | None = None
        self._chain: list[Certificate] = []
        if settings.client_cert is not None:
            pem = read_pem(settings.client_cert, "client certificate")
            try:
                self._client = _load_client_certificate(pem)
            except Exception as e:
                raise ValueError(
                    f"the client certificate {settings.client_cert!r} needs a private key and a certificate: {e}"
                ) from None
            self._chain = certificates(pem, repr(settings.client_cert))[1:]
        self._creators: dict[str, IOpenSSLClientConnectionCreator] = {}

    def creator(self, hostname: str) -> IOpenSSLClientConnectionCreator:
        """
        The connection creator for ``hostname`` (made once).
        """
        creator = self._creators.get(hostname)
        if creator is None:
            creator = self._creators[hostname] = self._make(hostname)
        return creator

    def _make(self, hostname: str) -> IOpenSSLClientConnectionCreator:
        from twisted.internet.abstract import isIPAddress, isIPv6Address

        if self.settings.insecure:
            options = self._client_options(verify=False)
            return _Unverified(options, hostname, not (isIPAddress(hostname) or isIPv6Address(hostname)))
        trust = _platform_trust() if self._trust is None else _trust_root(self._trust)
        chain = self._extra_chain()
        return optionsForClientTLS(
            hostname,
            trustRoot=trust,
            clientCertificate=self._client,
            acceptableProtocols=UPSTREAM_PROTOCOLS,
            extraCertificateOptions={"extraCertChain": chain} if chain is not None else {},
        )

    def _extra_chain(self) -> list[X509] | None:
        """
        The client certificate's chain, or ``None`` (never empty: ``CertificateOptions`` refuses a chain, even an
        empty one, without a key).
        """
        return [cert.original for cert in self._chain] if self._chain else None

    def _client_options(self, verify: bool) -> CertificateOptions:
        if self._client is None:
            return CertificateOptions(verify=verify, acceptableProtocols=UPSTREAM_PROTOCOLS)
        return CertificateOptions(
            privateKey=self._client.privateKey.original,
            certificate=self._client.original,
            verify=verify,
            acceptableProtocols=UPSTREAM_PROTOCOLS,
            extraCertChain=self._extra_chain(),
        )


def tls_failure(reason: Failure, transport: ITransport | None, hostname: str) -> str | None:
    """
    Why a TLS connection to an upstream failed, in one line, or ``None`` if ``reason`` is not a TLS failure.

    ``transport`` is the connection's (a ``TLSMemoryBIOProtocol`` for a TLS one), if it has one.
    """
    error = reason.value  # tested with isinstance: what Failure.check does, but typed
    if isinstance(error, VerificationError):
        return f"hostname mismatch: the certificate is not valid for {hostname}"
    if not isinstance(error, SSL.Error):
        return None
    code = _verify_result(tls_connection(transport))
    if code:
        return f"certificate verify failed: {_verify_error(code)}"
    messages = [entry[2] for entry in _error_entries(error) if entry[2]]
    return "; ".join(messages) or str(error) or "TLS error"


def _error_entries(error: BaseException) -> list[tuple[str, str, str]]:
    args = error.args[0] if error.args else []
    return [entry for entry in args if isinstance(entry, tuple) and len(entry) == 3] if isinstance(args, list) else []


# pyOpenSSL has no public call for why certificate verification failed; OpenSSL's own functions through pyOpenSSL's
# bindings give the code and its text. Should they move, the reason falls back to OpenSSL's error queue.


def _verify_result(connection: SSL.Connection | None) -> int:
    if connection is None:
        return 0
    try:
        from OpenSSL._util import lib

        return int(lib.SSL_get_verify_result(connection._ssl))
    except Exception:
        return 0


def _verify_error(code: int) -> str:
    from OpenSSL._util import ffi, lib

    text: bytes = ffi.string(lib.X509_verify_cert_error_string(code))
    return text.decode("ascii", "replace")
