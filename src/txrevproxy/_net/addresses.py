"""
A connection's two addresses, asked of its transport once.

Every request asks its channel for both (``Request.__init__``), a TCP transport makes a new address object on each
call, and ``getHost`` is a system call (``getsockname``); neither address changes while the connection lasts.
"""

from __future__ import annotations


class AddressesOnce:
    """
    Mixed in before a channel class (``HTTPChannel``, ``H2Connection``): its ``getHost`` and ``getPeer``, kept.
    """

    _host: object = None
    _peer: object = None

    def getHost(self) -> object:
        if self._host is None:
            self._host = super().getHost()  # type: ignore[misc]
        return self._host

    def getPeer(self) -> object:
        if self._peer is None:
            self._peer = super().getPeer()  # type: ignore[misc]
        return self._peer
