"""
A connection's two addresses, asked of its transport once.

Every request asks its channel for both (``Request.__init__``), a TCP transport makes a new address object on each
call, and ``getHost`` is a system call (``getsockname``); neither address changes while the connection lasts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet.interfaces import IAddress

if TYPE_CHECKING:

    class _Addressed:
        """
        For mypy only, what the mixin's ``super()`` is: a channel that asks its transport for its addresses.
        """

        def getHost(self) -> IAddress: ...

        def getPeer(self) -> IAddress: ...

    _Channel = _Addressed
else:
    _Channel = object


class AddressesOnce(_Channel):
    """
    Mixed in before a channel class (``HTTPChannel``, ``H2Connection``): its ``getHost`` and ``getPeer``, kept.
    """

    _host: IAddress | None = None
    _peer: IAddress | None = None

    def getHost(self) -> IAddress:
        if self._host is None:
            self._host = super().getHost()
        return self._host

    def getPeer(self) -> IAddress:
        if self._peer is None:
            self._peer = super().getPeer()
        return self._peer
