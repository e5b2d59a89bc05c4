"""
PEM files: reading them and splitting them into blocks, for both sides' TLS.
"""

from __future__ import annotations

from pathlib import Path

from twisted.internet.ssl import (
    Certificate,
)

KEY_MARK, CERT_MARK = b"PRIVATE KEY-----", b"-----BEGIN CERTIFICATE-----"


def pem_blocks(pem: bytes) -> list[bytes]:
    """
    The PEM blocks of a file, each from its ``-----BEGIN`` line to its ``-----END`` line.
    """
    found = []
    for chunk in pem.split(b"-----BEGIN ")[1:]:
        body, end, _ = chunk.partition(b"-----END ")
        label = chunk.split(b"-----", 1)[0]
        found.append(b"-----BEGIN " + body + end + label + b"-----\n")
    return found


def read_pem(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise ValueError(f"cannot read the {what} {path!r}: {e.strerror}") from None


def certificates(pem: bytes, where: str) -> list[Certificate]:
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
