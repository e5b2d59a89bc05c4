"""
:func:`txrevproxy._net.sending.send` on a real socket pair: sent at once when nothing waits, otherwise queued behind
what waits, and never reordered.
"""

from __future__ import annotations

import socket

from twisted.internet import tcp
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactor, StringTransport

from txrevproxy._net.sending import send


def _server() -> tuple[tcp.Server, socket.socket, MemoryReactor]:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    reactor = MemoryReactor()
    transport = tcp.Server(ours, Protocol(), ("127.0.0.1", 1), None, 1, reactor)
    return transport, theirs, reactor


def _drain(sock: socket.socket) -> bytes:
    sock.setblocking(False)
    out = b""
    try:
        while data := sock.recv(1 << 20):
            out += data
    except BlockingIOError:
        pass
    return out


def test_small_write_goes_out_at_once():
    """With nothing buffered, the bytes are in the peer's socket before the reactor runs, and no writer is added."""
    transport, peer, reactor = _server()
    send(transport, b"hello")
    assert _drain(peer) == b"hello"
    assert transport not in reactor.getWriters()


def test_what_the_kernel_refuses_is_buffered_in_order():
    """A write larger than the socket takes is sent in part; the rest waits in the transport and follows in order."""
    transport, peer, reactor = _server()
    data = bytes(range(256)) * 8192  # 2 MiB
    send(transport, data)
    send(transport, b"after")  # something waits now: this one must queue behind it
    assert transport in reactor.getWriters()
    received = _drain(peer)
    assert 0 < len(received) < len(data)
    while transport in reactor.getWriters():
        transport.doWrite()
        received += _drain(peer)
    assert received == data + b"after"


def test_other_transports_use_write():
    """A transport that is not plain TCP (here a test transport) just gets transport.write."""
    transport = StringTransport()
    send(transport, b"x")
    assert transport.value() == b"x"


def test_a_failed_send_is_left_to_twisted():
    """When the socket refuses the bytes with an error (peer gone), they are queued and Twisted's writing meets it."""
    from twisted.internet.error import ConnectionLost

    transport, peer, reactor = _server()
    peer.close()
    send(transport, b"hello")
    assert transport in reactor.getWriters()
    # What the reactor does next: Twisted's writing meets the error and reports the connection lost.
    assert isinstance(transport.doWrite(), ConnectionLost)
