"""
A connection's transport as Twisted makes them, for annotations: :class:`ITCPStreamTransport`.
"""

from __future__ import annotations

from twisted.internet.interfaces import IConsumer, IPushProducer, ITCPTransport
from zope.interface import Attribute


class ITCPStreamTransport(ITCPTransport, IConsumer, IPushProducer):
    """
    A TCP transport that is also the consumer of what is written to it (``registerProducer``) and the producer of
    what it reads (``pauseProducing``): what Twisted's TCP transports are (``tcp.Server``, ``tcp.Client``, a
    ``TLSMemoryBIOProtocol`` over one) and the memory network's, though ``ITCPTransport`` does not say so.

    For type checking only (as :class:`~txrevproxy._net.reactor.IProxyReactor`): those transports declare the
    interfaces one by one, or not at all, so ``ITCPStreamTransport.providedBy(transport)`` is false of them; a
    transport is given this type by a class-level annotation (``transport: ITCPStreamTransport`` on a protocol,
    which Twisted sets) or with ``typing.cast`` where it comes typed as a mere ``ITCPTransport``.
    """

    disconnecting = Attribute("Whether the transport is closing (``loseConnection`` was called) or closed.")
