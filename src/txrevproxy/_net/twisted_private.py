"""
Every private name of Twisted's that txrevproxy uses, in one place: the rest of the code reaches them only through
this module, and ``tests/test_twisted_private.py`` checks each against the installed Twisted, so that an upgrade that
takes one away or changes it fails one clear test (``pyproject.toml`` pins Twisted below the next major release).

Four kinds of use:

- private modules and names, re-exported here: :class:`H2Connection`, :class:`H2Stream`, :data:`IEncodingResource`,
  :data:`IOpenSSLTrustRoot`;
- private attributes and methods we read, set or call: one small function each below, named for what it gives;
- hooks: private methods that Twisted calls and our subclasses override. Python finds an override by its name, so
  those classes define them by Twisted's names and call the base's through ``super()``; they are listed in
  :data:`REQUEST_HOOKS` and :data:`H2_CONNECTION_HOOKS`, and no other private name of Twisted's may be defined by
  our subclasses (the test checks it: an accidental one shadows Twisted's);
- copies: Twisted methods we re-implement in our subclasses, which must be kept in step with Twisted's (the test
  holds each to the names it referred to when it was copied): ``server.Request.__init__`` (``ProxyRequest``'s),
  ``server.Request.process`` and ``http.Request.finish`` (``ProxyRequest``'s, the latter for a relayed response),
  ``HTTPChannel.pauseProducing``/``resumeProducing`` (``ProxyChannel``'s), ``EPollReactor.doPoll``
  (``ProxyReactor``'s).

Name by name (module: where we use it; why):

``twisted.web._http2.H2Connection``, ``H2Stream``
    ``_server/h2.py``: Twisted's HTTP/2 server, subclassed by ``ProxyH2Connection``; there is no public name for it.
``twisted.web.resource._IEncodingResource``
    ``_server/request.py`` (``ProxyRequest.process``): a copy of ``Request.process``, which asks a resource for its
    encoder through it.
``twisted.internet._sslverify.IOpenSSLTrustRoot``
    ``_tls/client.py``'s annotations: the type of ``optionsForClientTLS``'s ``trustRoot=``, which
    ``twisted.internet.ssl`` does not export.
``HTTPChannel._networkProducer``
    ``_server/channel.py`` (``leaveForHTTP2``, ``switchProtocols``): the transport as the push producer that the
    channel registered with in ``connectionMade``; unregistered when the connection stops being HTTP/1.1.
``HTTPChannel._handlingRequest``
    ``_server/channel.py`` (``_bodyComplete``, ``requestDone``, ``switchProtocols``): whether a request is being
    answered, set as Twisted's own parsing would (our channel replaces that parsing).
``HTTPChannel._waitingForTransport``, ``HTTPChannel._requestProducer``
    ``_server/channel.py``: ``ProxyChannel.pauseProducing``/``resumeProducing`` are copies of Twisted's, pausing
    reading by a reason of ours instead of through ``_networkProducer``.
``Request._parsePOSTFormSubmission``, ``Componentized._adapterCache``
    ``_server/request.py``: ``ProxyRequest.__init__`` is a copy of ``server.Request.__init__`` (with
    ``http.Request.__init__`` and ``Componentized.__init__``), setting the same attributes directly, minus
    ``requestHeaders`` (built on demand), for speed.
``Request._disconnected``
    ``_server/request.py`` (``flushHead``, ``write``, ``finish``), ``_server/h2.py`` (``H2ProxyRequest._bodyFailed``):
    whether the client side is gone, so that nothing more is written.
``Request._encoder``
    ``_server/request.py`` (``process``, set; ``finish``, read): the resource's encoder, as ``Request.process`` sets
    it; an encoded response is finished by Twisted's ``finish``.
``Request._handleStar``
    ``_server/request.py`` (``process``): the answer to ``OPTIONS *``, as in ``Request.process``.
``Request._cleanup`` (hook)
    ``_server/request.py``: ``ProxyRequest._cleanup`` holds a request answered before its body ended in the
    channel's queue until the body is drained, then calls Twisted's (:func:`cleanup_request`).
``H2Connection._requestReceived``, ``_requestEnded``, ``_requestDone``, ``_requestAborted``, ``_isSecure`` (hooks)
    ``_server/h2.py``: stream limits, early answers, resets crossing ours, and a cached ``isSecure``.
``H2Connection.connectionLost``'s ``_cancelTimeouts`` parameter
    ``_server/h2.py``: ``ProxyH2Connection.connectionLost`` has Twisted's signature and passes it on.
``H2Connection._reactor``
    ``_server/h2.py`` (``_requestReceived``): the connection's clock, which times a stream's body deadline.
``H2Connection._stillProducing``, ``H2Connection._tryToWriteControlData``
    ``_server/h2.py`` (``_requestDone``): a stream answered before its body ended is reset (RST_STREAM), written
    as Twisted writes its own control frames.
``H2Stream._request``
    ``_server/h2.py`` (``_requestReceived``): the stream's request, told that the stream's headers are complete.
``EPollReactor._poller``, ``_selectables``, ``_PollLikeMixin._doReadOrWrite``
    ``_daemon/reactor.py`` (``ProxyReactor.doPoll``, ``_spin``): a copy of ``EPollReactor.doPoll`` without the log
    context around each event; ``_testing/threaded.py`` closes a stopped reactor's poller.
``FileDescriptor._writeDisconnected``, ``FileDescriptor._tempDataLen``
    ``_net/sending.py`` (``send``): bytes go to the socket at once only if nothing waits in the transport's buffers.
``TCP4ServerEndpoint``/``TCP6ServerEndpoint``/``SSL4ServerEndpoint`` ``_interface``, ``_port``, ``_backlog``, and
``SSL4ServerEndpoint._sslContextFactory``
    ``_daemon/service.py`` (``--workers`` binding each worker's socket), ``_tls/server.py`` (``tls_layers``): what
    Twisted parsed from a ``--listen`` description, rather than parsing it a second time.
``twisted.internet.endpoints._parse``
    ``_tls/server.py`` (``server_endpoint``): the splitter of endpoint strings that ``serverFromString`` uses, for
    our ``tls:`` listener's description, so that it is split exactly as every other ``--listen`` one.
``TLSMemoryBIOProtocol._tlsConnection``
    ``_tls/client.py`` (``tls_failure``): the OpenSSL connection, asked why certificate verification failed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from twisted.internet import endpoints
from twisted.internet._sslverify import IOpenSSLTrustRoot
from twisted.internet.endpoints import SSL4ServerEndpoint, TCP4ServerEndpoint, TCP6ServerEndpoint
from twisted.internet.interfaces import IReactorTime
from twisted.web import resource
from twisted.web._http2 import H2Connection, H2Stream
from twisted.web.http import HTTPChannel
from twisted.web.server import Request

if TYPE_CHECKING:
    from twisted.internet.epollreactor import EPollReactor  # (Linux only: for its type)

_P = TypeVar("_P")

__all__ = [
    "H2_CONNECTION_HOOKS",
    "REQUEST_HOOKS",
    "UNIX_PORT_HOOKS",
    "H2Connection",
    "H2Stream",
    "IEncodingResource",
    "IOpenSSLTrustRoot",
    "adopt_listening_port",
    "cleanup_request",
    "h2_producing",
    "h2_reactor",
    "h2_stream_request",
    "h2_write_control_data",
    "handle_star",
    "init_request_internals",
    "listen_address",
    "network_producer",
    "reactor_poller",
    "reactor_selectables",
    "read_or_write",
    "request_disconnected",
    "request_encoder",
    "request_producer",
    "set_handling_request",
    "set_request_encoder",
    "set_waiting_for_transport",
    "split_endpoint_description",
    "ssl_context_factory",
    "tls_connection",
    "write_blocked",
]

#: ``twisted.web.resource._IEncodingResource``: a resource that may give an encoder for a request's response.
IEncodingResource = resource._IEncodingResource

#: Private methods of ``twisted.web.server.Request`` that our request classes override.
REQUEST_HOOKS = ("_cleanup",)
#: Private methods of :class:`H2Connection` that ``ProxyH2Connection`` overrides.
H2_CONNECTION_HOOKS = ("_requestReceived", "_requestEnded", "_requestDone", "_requestAborted", "_isSecure")
#: Private attributes of ``twisted.internet.unix.Port`` that the workers' ``SharedUNIXPort`` overrides
#: (``_shouldShutdown``: whether stopping calls ``shutdown`` on the socket).
UNIX_PORT_HOOKS = ("_shouldShutdown",)


# -- HTTPChannel -----------------------------------------------------------------------------------------------------


def network_producer(channel: HTTPChannel) -> Any:
    """The channel's transport as the push producer it registered with (``_networkProducer``)."""
    return channel._networkProducer


def set_handling_request(channel: HTTPChannel, handling: bool) -> None:
    """Tell Twisted's half of the channel whether a request is being answered (``_handlingRequest``)."""
    channel._handlingRequest = handling


def set_waiting_for_transport(channel: HTTPChannel, waiting: bool) -> None:
    """Whether the channel's transport has asked it to pause (``_waitingForTransport``)."""
    channel._waitingForTransport = waiting


def request_producer(channel: HTTPChannel) -> Any:
    """The producer a request registered with the channel, or ``None`` (``_requestProducer``)."""
    return channel._requestProducer


# -- Request ---------------------------------------------------------------------------------------------------------


def init_request_internals(request: Request) -> None:
    """
    The private attributes that ``Request.__init__`` sets: no form parsing (``_parsePOSTFormSubmission``) and an
    empty adapter cache (``Componentized._adapterCache``).
    """
    request._parsePOSTFormSubmission = False
    request._adapterCache = {}


def request_disconnected(request: Request) -> bool:
    """Whether the request's client side has been lost (``_disconnected``)."""
    return bool(request._disconnected)


def request_encoder(request: Request) -> Any:
    """The encoder the request's resource gave, or ``None`` (``_encoder``)."""
    return request._encoder


def set_request_encoder(request: Request, encoder: object) -> None:
    """Encode the request's response with ``encoder`` (``_encoder``), as ``Request.process`` does."""
    request._encoder = encoder  # type: ignore[assignment]  # Twisted declares it None


def handle_star(request: Request) -> None:
    """Answer a request for ``*`` as Twisted does (``_handleStar``)."""
    request._handleStar()


def cleanup_request(request: Request) -> None:
    """Twisted's own ``Request._cleanup``: the answered request leaves its channel's queue."""
    Request._cleanup(request)


# -- HTTP/2 ----------------------------------------------------------------------------------------------------------


def h2_reactor(connection: H2Connection) -> IReactorTime:
    """The reactor the HTTP/2 connection times things with (``_reactor``)."""
    reactor: IReactorTime = connection._reactor
    return reactor


def h2_producing(connection: H2Connection) -> bool:
    """Whether the HTTP/2 connection is still up (``_stillProducing``)."""
    return bool(connection._stillProducing)


def h2_write_control_data(connection: H2Connection) -> bool:
    """
    Write the frames the h2 state machine has queued, as Twisted writes its control frames
    (``_tryToWriteControlData``); ``False`` when that aborted the connection (too much unread output).
    """
    return bool(connection._tryToWriteControlData())


def h2_stream_request(stream: H2Stream) -> Any:
    """The request object of an HTTP/2 stream (``_request``)."""
    return stream._request


# -- reactor ---------------------------------------------------------------------------------------------------------


def reactor_poller(reactor: object) -> Any:
    """A poll-like reactor's poller (``select.epoll`` for epoll; ``_poller``), or ``None`` for other reactors."""
    return getattr(reactor, "_poller", None)


def reactor_selectables(reactor: EPollReactor) -> dict[int, Any]:
    """A poll-like reactor's descriptors by file number (``_selectables``)."""
    selectables: dict[int, Any] = reactor._selectables
    return selectables


def read_or_write(reactor: EPollReactor) -> Callable[[Any, int, int], None]:
    """A poll-like reactor's handler of one event, ``(selectable, fd, event)`` (``_doReadOrWrite``)."""
    handle: Callable[[Any, int, int], None] = reactor._doReadOrWrite
    return handle


# -- transports and endpoints ----------------------------------------------------------------------------------------


def write_blocked(transport: Any) -> bool:
    """
    Whether a ``FileDescriptor`` transport cannot take bytes straight to its socket: its writing is shut
    (``_writeDisconnected``) or bytes wait in its sequence buffer (``_tempDataLen``).
    """
    return bool(transport._writeDisconnected or transport._tempDataLen)


def listen_address(endpoint: TCP4ServerEndpoint | TCP6ServerEndpoint | SSL4ServerEndpoint) -> tuple[str, int, int]:
    """
    The interface, port and backlog of a TCP (or ``ssl:``) server endpoint (``_interface``, ``_port``,
    ``_backlog``).
    """
    return endpoint._interface, endpoint._port, endpoint._backlog


def split_endpoint_description(description: str) -> tuple[list[str], dict[str, str]]:
    """
    An endpoint string's ``:``-separated arguments, positional and ``key=value``, unescaped as ``serverFromString``
    splits them (``endpoints._parse``).
    """
    split: tuple[list[str], dict[str, str]] = endpoints._parse(description)
    return split


def ssl_context_factory(endpoint: SSL4ServerEndpoint) -> Any:
    """What makes an ``ssl:`` server endpoint's TLS connections (``SSL4ServerEndpoint._sslContextFactory``)."""
    return endpoint._sslContextFactory


def tls_connection(transport: object) -> Any:
    """A TLS transport's OpenSSL connection (``TLSMemoryBIOProtocol._tlsConnection``), or ``None`` for others."""
    return getattr(transport, "_tlsConnection", None)


# -- UNIX ports --------------------------------------------------------------------------------------------------


def adopt_listening_port(cls: type[_P], reactor: object, fd: int, factory: object) -> _P:
    """
    A port of ``cls`` (a ``tcp.Port`` or ``unix.Port`` subclass) on the listening socket ``fd`` (duplicated), made
    as ``reactor.adoptStreamPort`` makes one (``Port._fromListeningDescriptor``), not yet listening.
    """
    port: _P = cls._fromListeningDescriptor(reactor, fd, factory)  # type: ignore[attr-defined]  # private classmethod
    return port
