"""
Test certificates, made at test time with trustme (never committed keys): a CA, server certificates signed by it
for chosen names, and the PEM files the daemon's endpoint strings and ``--upstream-ca`` flags take.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass(frozen=True)
class CertFiles:
    """
    One leaf certificate written out: ``cert`` (leaf then chain), ``key`` and ``both`` (key + chain, one file).
    """

    cert: Path
    key: Path
    both: Path


class TestCA:
    """
    A throwaway certificate authority that writes its certificates as PEM files under ``directory``.
    """

    __test__ = False  # not a pytest test class

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.ca = trustme.CA()
        self.ca_file = self.directory / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))

    def issue(self, *names: str, stem: str | None = None, **kwargs: object) -> CertFiles:
        """
        A server (or client) certificate for ``names`` (hostnames or IP addresses) signed by this CA.
        """
        leaf = self.ca.issue_cert(*names, **kwargs)
        stem = stem or names[0].replace("*", "wildcard").replace(":", "_")
        cert = self.directory / f"{stem}.crt.pem"
        key = self.directory / f"{stem}.key.pem"
        both = self.directory / f"{stem}.pem"
        leaf.cert_chain_pems[0].write_to_path(str(cert))
        for extra in leaf.cert_chain_pems[1:]:
            extra.write_to_path(str(cert), append=True)
        leaf.private_key_pem.write_to_path(str(key))
        leaf.private_key_and_cert_chain_pem.write_to_path(str(both))
        return CertFiles(cert=cert, key=key, both=both)
