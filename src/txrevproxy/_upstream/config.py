"""
The upstream side's values, shared by the protocol and the pool: where an upstream listens (:class:`UpstreamAddress`)
and how connections to it are made and kept (:class:`PoolConfig`).
"""

from __future__ import annotations

from attrs import field, frozen

from txrevproxy._tls.client import UpstreamTLS


@frozen
class UpstreamAddress:
    """
    Where an upstream listens; also the pool's key.
    """

    host: str
    port: int
    scheme: str = "http"

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@frozen
class PoolConfig:
    """
    :ivar max_idle: idle keep-alive connections kept per upstream; more are closed when released.
    :ivar idle_timeout: seconds an idle connection is kept before it is closed.
    :ivar connect_timeout: seconds allowed for the TCP connection to be established.
    :ivar read_timeout: seconds the upstream may send nothing while a response body is being read, before the
        connection is aborted (and the client's response with it). Time while the proxy has paused reading
        because the client is slow does not count.
    :ivar send_timeout: seconds the upstream may leave a request body upload stalled before the connection is
        aborted (504 if no response has started, else the client connection is aborted too). Measured from the
        moment the connection's write buffer is full and the upload is paused until it has drained; an upstream
        that reads, but slower than that buffer (64 KiB) per ``send_timeout``, counts as stalled.
    :ivar tls: how ``https://`` upstreams are verified (see :class:`~txrevproxy._tls.client.UpstreamTLS`).
    """

    max_idle: int = 128
    idle_timeout: float = 30.0
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    send_timeout: float = 60.0
    tls: UpstreamTLS = field(factory=UpstreamTLS)
