"""
The configuration of client connections: :class:`ClientConfig`.
"""

from __future__ import annotations

from attrs import field, frozen

from txrevproxy._http.head import HeadLimits


@frozen
class ClientConfig:
    """
    Limits and deadlines for client connections (the keep-alive idle timeout is the ``Site``'s ``timeout``).

    :ivar head: size limits of a request head.
    :ivar max_body: largest request body accepted, in bytes; 0 for no limit.
    :ivar head_timeout: seconds from the first byte of a request until its head is complete (else 408).
    :ivar body_timeout: seconds the request body may make no progress (else 408, or an abort once answering).
    :ivar send_timeout: seconds a client may read none of the response while it waits to be sent (else abort).
    """

    head: HeadLimits = field(factory=HeadLimits)
    max_body: int = 1 << 30
    head_timeout: float = 10.0
    body_timeout: float = 30.0
    send_timeout: float = 60.0
