"""
Server certificates chosen by the name a TLS client sends (SNI), for ``tls:DIR`` listeners.

``tls:DIR:port=...`` keeps Twisted's syntax (:func:`txrevproxy._tls.server.server_endpoint` makes the listener); the
certificates are ours. :meth:`SNICertificates.from_directory` reads every ``.pem`` file under ``DIR`` once, at
start, pairs each private key with the certificate of its public key (in the same file or another one, so that
certbot's ``privkey.pem`` and ``fullchain.pem`` work), completes each chain from the other certificates there, and
files each certificate under its DNS names (subject alternative names). A client's name picks its certificate
exactly, else by a wildcard for its first label (``*.example.com`` for ``a.example.com``); a client that sends no
name or an unknown one gets the default certificate: that of the first key in path order (``00-default.pem``
sorts first). Choosing costs a dictionary look-up: no file is read and nothing is logged per handshake, whatever
names clients send.

Each certificate's context is made once by Twisted's ``CertificateOptions`` (TLS 1.2 or newer, Twisted's cipher
list, no session resumption, ALPN answered with the protocols the served site accepts).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from functools import partial
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_private_key,
)
from OpenSSL import SSL
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.internet.ssl import CertificateOptions
from twisted.protocols.tls import TLSMemoryBIOProtocol
from zope.interface import implementer

from txrevproxy._tls.pem import CERT_MARK, KEY_MARK, pem_blocks


def lookup_names(name: str) -> tuple[str, ...]:
    """
    The certificate names that serve ``name``, best first: itself, then the wildcard for its first label.
    """
    name = name.lower().rstrip(".")
    _, dot, rest = name.partition(".")
    return (name, f"*.{rest}") if dot and rest else (name,)


def _public(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def _dns_names(cert: x509.Certificate) -> list[str]:
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [name.lower() for name in names.get_values_for_type(x509.DNSName)]


def _chain(leaf: x509.Certificate, others: Iterable[x509.Certificate]) -> list[x509.Certificate]:
    """
    The certificates that sign ``leaf``, then their signers, found among ``others`` by subject (a loop ends it).
    """
    by_subject = {cert.subject: cert for cert in others if cert is not leaf}
    chain: list[x509.Certificate] = []
    current = leaf
    while current.issuer != current.subject and (issuer := by_subject.get(current.issuer)) is not None:
        if issuer in chain:
            break
        chain.append(issuer)
        current = issuer
    return chain


def choose(contexts: Mapping[str, SSL.Context], server_name: bytes | None) -> SSL.Context | None:
    """
    The context for the name a client sent (exact, else its wildcard), or ``None`` to keep the default one.
    """
    if not server_name:
        return None
    try:
        name = server_name.decode("ascii")
    except UnicodeDecodeError:
        return None
    for candidate in lookup_names(name):
        context = contexts.get(candidate)
        if context is not None:
            return context
    return None


def _context(
    key: PrivateKeyTypes,
    leaf: x509.Certificate,
    chain: list[x509.Certificate],
    pick: Callable[[bytes | None], SSL.Context | None],
) -> SSL.Context:
    """
    A context made by ``CertificateOptions``, serving ``key`` with ``leaf`` and ``chain``; ``pick`` chooses another
    by the name the client sends.
    """
    # CertificateOptions(privateKey, certificate, ...): Twisted annotates the key and certificates as pyOpenSSL's PKey
    # and X509, which pyOpenSSL deprecates for the cryptography objects given here (its Context.use_privatekey,
    # use_certificate and add_extra_chain_cert take either); one line, so that one ignore covers the three.
    options = CertificateOptions(key, leaf, extraCertChain=chain, contextForServerName=pick)  # type: ignore[arg-type]
    return options.getContext()


@implementer(IOpenSSLServerConnectionCreator)
class SNICertificates:
    """
    Makes server TLS connections that start with the default certificate and switch to the one for the client's
    name (see the module docstring). ``contexts`` maps a (lower-case) DNS name, possibly a wildcard, to its context.
    """

    def __init__(self, contexts: dict[str, SSL.Context], default: SSL.Context) -> None:
        self.contexts = contexts
        self.default = default

    @classmethod
    def from_directory(cls, directory: str) -> SNICertificates:
        """
        Load the keys and certificates of the ``.pem`` files under ``directory``; ``ValueError`` saying what is
        wrong (a file that cannot be read or parsed, no key with its certificate).
        """
        root = Path(directory)
        if not root.is_dir():
            raise ValueError(f"{directory!r} is not a directory of .pem files")
        keys: list[PrivateKeyTypes] = []
        certificates: list[x509.Certificate] = []
        for path in sorted(p for p in root.rglob("*.pem") if p.is_file()):
            try:
                for block in pem_blocks(path.read_bytes()):
                    if KEY_MARK in block.split(b"\n", 1)[0]:
                        keys.append(load_pem_private_key(block, password=None))
                    elif block.startswith(CERT_MARK):
                        certificates.append(x509.load_pem_x509_certificate(block))
            except (OSError, ValueError, TypeError) as e:
                raise ValueError(f"{str(path)!r} cannot be loaded: {getattr(e, 'strerror', None) or e}") from None
        by_key: dict[bytes, x509.Certificate] = {}
        for cert in certificates:
            by_key.setdefault(_public(cert.public_key()), cert)
        contexts: dict[str, SSL.Context] = {}
        default = None
        for key in keys:
            leaf = by_key.get(_public(key.public_key()))
            names = _dns_names(leaf) if leaf is not None else []
            if leaf is None or not names:
                continue
            # contexts is filled in below, before any handshake.
            context = _context(key, leaf, _chain(leaf, certificates), partial(choose, contexts))
            default = default or context
            for name in names:
                contexts.setdefault(name, context)
        if default is None:
            raise ValueError(f"no private key with its certificate (and a DNS name) in the .pem files of {directory!r}")
        return cls(contexts, default)

    def serverConnectionForTLS(self, protocol: TLSMemoryBIOProtocol) -> SSL.Connection:
        return SSL.Connection(self.default)
