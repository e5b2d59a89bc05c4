"""
Every private name of Twisted's that txrevproxy relies on (gathered in ``txrevproxy._net.twisted_private``) is still
there, with the signatures we use, on the installed Twisted; the Twisted code we copied is still what we copied.
"""

from __future__ import annotations

import ast
import inspect
import select
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import abstract, tcp, unix
from twisted.internet.address import IPv4Address
from twisted.internet.endpoints import SSL4ServerEndpoint, serverFromString
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.ssl import optionsForClientTLS
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.components import Componentized
from twisted.python.failure import Failure
from twisted.web import http, resource, server
from twisted.web.http_headers import Headers
from zope.interface.interface import InterfaceClass

from txrevproxy._daemon.sharedunix import SharedUNIXPort
from txrevproxy._net import twisted_private as private
from txrevproxy._server.channel import ProxyChannel, ProxySite
from txrevproxy._server.h2 import H2ProxyRequest, ProxyH2Connection
from txrevproxy._server.request import ProxyRequest

SRC = Path(private.__file__).resolve().parent.parent
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the epoll reactor is Linux's")


def parameters(function: Callable[..., object]) -> list[tuple[str, object]]:
    return [(p.name, p.default) for p in inspect.signature(function).parameters.values()]


def connected_channel() -> http.HTTPChannel:
    channel = http.HTTPChannel()
    channel.site = server.Site(resource.Resource())
    channel.makeConnection(StringTransport())
    return channel


# -- private modules and names -----------------------------------------------------------------------------------


def test_the_http2_module_and_the_private_interfaces_are_re_exported() -> None:
    """H2Connection, H2Stream, IEncodingResource and IOpenSSLTrustRoot are Twisted's private objects themselves."""
    import twisted.internet._sslverify as sslverify
    import twisted.web._http2 as http2

    assert (private.H2Connection, private.H2Stream) == (http2.H2Connection, http2.H2Stream)
    assert private.IEncodingResource is resource._IEncodingResource
    assert isinstance(private.IEncodingResource, InterfaceClass)
    assert "getEncoder" in private.IEncodingResource.names()
    assert private.IOpenSSLTrustRoot is sslverify.IOpenSSLTrustRoot
    assert "_addCACertsToContext" in private.IOpenSSLTrustRoot.names()


# -- HTTPChannel ---------------------------------------------------------------------------------------------------


def test_http_channel_has_the_producer_and_request_state_we_use() -> None:
    """A connected HTTPChannel has _networkProducer, _handlingRequest, _waitingForTransport and _requestProducer."""
    channel = connected_channel()
    assert {"_networkProducer", "_handlingRequest"} <= set(vars(channel))
    assert hasattr(private.network_producer(channel), "unregisterProducer")
    assert private.request_producer(channel) is None
    private.set_handling_request(channel, True)
    private.set_waiting_for_transport(channel, True)
    assert (channel._handlingRequest, channel._waitingForTransport) == (True, True)
    producer = StringTransport()
    channel.registerProducer(producer, True)
    assert private.request_producer(channel) is producer


# -- Request -------------------------------------------------------------------------------------------------------


def test_request_init_has_the_signature_and_attributes_our_copy_sets() -> None:
    """ProxyRequest.__init__ sets what Twisted's Request.__init__ sets (less requestHeaders), on the same signature."""
    assert parameters(http.Request.__init__) == [
        ("self", inspect.Parameter.empty),
        ("channel", inspect.Parameter.empty),
        ("queued", http._QUEUED_SENTINEL),
        ("parsePOSTFormSubmission", True),
    ]
    assert parameters(server.Request.__init__) == [
        ("self", inspect.Parameter.empty),
        ("channel", inspect.Parameter.empty),
        ("args", inspect.Parameter.empty),
        ("parsePOSTFormSubmission", None),
        ("kw", inspect.Parameter.empty),
    ]
    assert parameters(Componentized.__init__) == [("self", inspect.Parameter.empty)]
    channel = connected_channel()
    stock = server.Request(channel, parsePOSTFormSubmission=False)
    proxy_channel = ProxyChannel()
    proxy_channel.site = ProxySite(resource.Resource(), reactor=MemoryReactorClock())
    proxy_channel.makeConnection(StringTransport())
    ours = ProxyRequest(proxy_channel)
    assert set(vars(stock)) - {"requestHeaders"} == set(vars(ours)) - {"connection"}  # (ours: its typed channel)
    assert ours._parsePOSTFormSubmission is stock._parsePOSTFormSubmission is False
    assert ours._adapterCache == stock._adapterCache == {}


def test_request_has_the_private_state_and_methods_we_use() -> None:
    """A Request has _disconnected (set when its connection is lost), _encoder, _handleStar and _cleanup."""
    channel = connected_channel()
    request = server.Request(channel)
    assert private.request_disconnected(request) is False
    assert private.request_encoder(request) is None
    encoder = object()
    private.set_request_encoder(request, encoder)
    assert request._encoder is encoder
    assert parameters(server.Request._handleStar) == [("self", inspect.Parameter.empty)]
    request.connectionLost(Failure(ConnectionDone()))
    assert private.request_disconnected(request) is True


def test_handle_star_answers_options_star() -> None:
    """handle_star answers OPTIONS * with 200 and an empty body, as Request.process does."""
    channel = connected_channel()
    request = server.Request(channel)
    channel.requests.append(request)
    request.method, request.uri, request.path, request.clientproto = b"OPTIONS", b"*", b"*", b"HTTP/1.1"
    private.handle_star(request)
    assert request.code == 200 and request.finished
    assert channel.transport.value().startswith(b"HTTP/1.1 200 OK\r\n")


# -- HTTP/2 --------------------------------------------------------------------------------------------------------


class _StubRequest:
    """What H2Stream asks of its request while it is built."""

    def __init__(self, stream: object, queued: bool) -> None:
        self.stream = stream
        self.requestHeaders = Headers()

    def gotLength(self, length: int | None) -> None:
        pass

    def parseCookies(self) -> None:
        pass


def test_h2_connection_has_the_state_and_methods_we_use() -> None:
    """H2Connection(reactor) has _reactor, _stillProducing, _tryToWriteControlData, conn and streams."""
    assert parameters(private.H2Connection.__init__) == [("self", inspect.Parameter.empty), ("reactor", None)]
    reactor = MemoryReactorClock()
    connection = private.H2Connection(reactor)
    assert private.h2_reactor(connection) is reactor
    assert private.h2_producing(connection) is True
    assert parameters(private.H2Connection._tryToWriteControlData) == [("self", inspect.Parameter.empty)]
    assert private.h2_write_control_data(connection) is True  # nothing queued yet: nothing written
    assert connection.streams == {} and hasattr(connection.conn, "reset_stream")


def test_h2_stream_keeps_its_request_command_and_path() -> None:
    """H2Stream(...) keeps its request in _request, and the :method and :path in command and path."""
    assert [name for name, _ in parameters(private.H2Stream.__init__)] == [
        "self",
        "streamID",
        "connection",
        "headers",
        "requestFactory",
        "site",
        "factory",
    ]
    connection = private.H2Connection(MemoryReactorClock())
    headers = [(b":method", b"GET"), (b":path", b"/x"), (b":authority", b"example")]
    stream = private.H2Stream(1, connection, headers, _StubRequest, None, None)
    request = private.h2_stream_request(stream)
    assert isinstance(request, _StubRequest) and request.stream is stream
    assert (stream.command, stream.path) == (b"GET", b"/x")


@pytest.mark.parametrize(
    ("hook", "expected"),
    [
        ("_requestReceived", ["self", "event"]),
        ("_requestEnded", ["self", "event"]),
        ("_requestDone", ["self", "streamID"]),
        ("_requestAborted", ["self", "event"]),
        ("_isSecure", ["self"]),
    ],
)
def test_h2_connection_hooks_have_the_signatures_we_override(hook: str, expected: list[str]) -> None:
    """Each H2Connection hook that ProxyH2Connection overrides is there, taking what our override takes."""
    assert hook in private.H2_CONNECTION_HOOKS
    assert [name for name, _ in parameters(getattr(private.H2Connection, hook))] == expected
    assert [name for name, _ in parameters(getattr(ProxyH2Connection, hook))] == expected


def test_h2_connection_lost_takes_cancel_timeouts() -> None:
    """H2Connection.connectionLost takes (reason, _cancelTimeouts=True), the signature our override passes on."""
    expected = [("self", inspect.Parameter.empty), ("reason", inspect.Parameter.empty), ("_cancelTimeouts", True)]
    assert parameters(private.H2Connection.connectionLost) == expected
    # Ours also defaults reason, as IProtocol's connectionLost does.
    assert parameters(ProxyH2Connection.connectionLost) == [expected[0], ("reason", connectionDone), expected[2]]


def test_unix_ports_have_the_shutdown_switch_and_the_adopting_constructor() -> None:
    """unix.Port stops with shutdown() unless _shouldShutdown is false, and adopts a socket by a classmethod."""
    assert unix.Port._shouldShutdown is True
    assert list(inspect.signature(unix.Port._fromListeningDescriptor).parameters) == ["reactor", "fd", "factory"]


def test_request_hooks_are_there() -> None:
    """Request._cleanup, which ProxyRequest overrides and cleanup_request calls, is there and takes no argument."""
    assert (
        parameters(server.Request._cleanup) == parameters(ProxyRequest._cleanup) == [("self", inspect.Parameter.empty)]
    )


# -- the epoll reactor ---------------------------------------------------------------------------------------------


@pytest.fixture
def epoll_reactor() -> Iterator[Any]:
    from twisted.internet.epollreactor import EPollReactor

    reactor = EPollReactor()
    yield reactor
    reactor.waker.connectionLost(None)
    private.reactor_poller(reactor).close()


@linux_only
def test_epoll_reactor_has_the_poller_selectables_and_handler_we_use(epoll_reactor: Any) -> None:
    """EPollReactor has _poller (an epoll), _selectables (by fd) and _doReadOrWrite(selectable, fd, event)."""
    assert isinstance(private.reactor_poller(epoll_reactor), select.epoll)
    selectables = private.reactor_selectables(epoll_reactor)
    assert isinstance(selectables, dict)
    waker = epoll_reactor.waker
    assert selectables[waker.fileno()] is waker
    handle = private.read_or_write(epoll_reactor)
    assert [name for name, _ in parameters(handle)] == ["selectable", "fd", "event"]
    assert private.reactor_poller(object()) is None


# -- transports and endpoints --------------------------------------------------------------------------------------


def test_tcp_transports_have_the_write_state_send_reads() -> None:
    """tcp.Server and tcp.Client are FileDescriptors with _writeDisconnected, _tempDataLen, dataBuffer and offset."""
    assert issubclass(tcp.Server, abstract.FileDescriptor) and issubclass(tcp.Client, abstract.FileDescriptor)
    one, other = socket.socketpair()
    try:
        connection = tcp.Connection(one, Protocol(), MemoryReactorClock())
        connection.connected = 1
        assert (connection._writeDisconnected, connection._tempDataLen, connection.dataBuffer) == (False, 0, b"")
        assert connection.offset == 0
        assert private.write_blocked(connection) is False
        connection.write(b"queued")  # held in the sequence buffer until the reactor finds the socket writable
        assert private.write_blocked(connection) is True
    finally:
        one.close()
        other.close()


def test_server_endpoints_keep_what_they_were_given() -> None:
    """TCP and ssl: server endpoints keep their interface, port, backlog (and context factory) as we read them."""
    reactor = MemoryReactorClock()
    assert private.listen_address(serverFromString(reactor, "tcp:8080:interface=127.0.0.1:backlog=7")) == (
        "127.0.0.1",
        8080,
        7,
    )
    assert private.listen_address(serverFromString(reactor, "tcp6:8443:interface=\\:\\:1")) == ("::1", 8443, 50)
    context = object()
    endpoint = SSL4ServerEndpoint(reactor, 443, context, 9, "::")
    assert private.listen_address(endpoint) == ("::", 443, 9)
    assert private.ssl_context_factory(endpoint) is context


def test_endpoint_descriptions_split_as_server_from_string_splits_them() -> None:
    """endpoints._parse splits a description into positional and key=value arguments, unescaping colons."""
    from twisted.internet import endpoints

    assert parameters(endpoints._parse) == [("description", inspect.Parameter.empty)]
    split = private.split_endpoint_description("tls:/etc/c\\:d:port=8443:interface=\\:\\:1")
    assert split == (["tls", "/etc/c:d"], {"port": "8443", "interface": "::1"})


def test_tls_protocol_keeps_its_openssl_connection() -> None:
    """A connected TLSMemoryBIOProtocol keeps its OpenSSL connection in _tlsConnection."""
    from OpenSSL.SSL import Connection

    factory = TLSMemoryBIOFactory(optionsForClientTLS("example.com"), True, Factory.forProtocol(Protocol))
    protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 443))
    protocol.makeConnection(StringTransport())
    assert isinstance(private.tls_connection(protocol), Connection)
    assert private.tls_connection(StringTransport()) is None


# -- copies of Twisted's code --------------------------------------------------------------------------------------


def _copies() -> list[tuple[str, Callable[..., object], set[str]]]:
    copies: list[tuple[str, Callable[..., object], set[str]]] = [
        (
            "ProxyRequest.process",
            server.Request.process,
            {"BaseException", "Failure", "_IEncodingResource", "_encoder", "_handleStar", "channel"}
            | {"datetimeToString", "failure", "getEncoder", "getResourceFor", "list", "map", "path", "postpath"}
            | {"prepath", "processingFailed", "providedBy", "render", "resource", "setHeader", "site", "split"}
            | {"unquote", "version"},
        ),
        (
            "ProxyRequest.finish",
            http.Request.finish,
            {"RuntimeError", "_cleanup", "_disconnected", "channel", "chunked", "factory", "finished", "hasattr"}
            | {"log", "queued", "startedWriting", "warn", "warnings", "write"},
        ),
        (
            "ProxyChannel.pauseProducing",
            http.HTTPChannel.pauseProducing,
            {"_handlingRequest", "_networkProducer", "_requestProducer", "_waitingForTransport", "pauseProducing"},
        ),
        (
            "ProxyChannel.resumeProducing",
            http.HTTPChannel.resumeProducing,
            {"_handlingRequest", "_networkProducer", "_requestProducer", "_waitingForTransport", "resumeProducing"},
        ),
    ]
    if sys.platform.startswith("linux"):
        from twisted.internet.epollreactor import EPollReactor

        assert EPollReactor.doIteration is EPollReactor.doPoll
        copies.append(
            (
                "ProxyReactor.doPoll",
                EPollReactor.doPoll,
                {"EINTR", "KeyError", "OSError", "_doReadOrWrite", "_poller", "_selectables", "callWithLogger"}
                | {"errno", "len", "log", "poll"},
            )
        )
    return copies


COPIES = _copies()


@pytest.mark.parametrize(("copy", "original", "names"), COPIES, ids=[copy for copy, _, _ in COPIES])
def test_the_twisted_code_we_copied_is_unchanged(copy: str, original: Callable[..., object], names: set[str]) -> None:
    """Each Twisted method we re-implement still refers to the names it did when we copied it."""
    found = set(original.__code__.co_names)
    assert found == names, f"{original.__qualname__} changed: bring {copy} in step, then update this test"


# -- nothing else --------------------------------------------------------------------------------------------------


def _own_private_names(cls: type, base: type, instance: object = None, stock: object = None) -> set[str]:
    names: set[str] = set()
    for klass in cls.__mro__:
        if klass in base.__mro__:
            continue
        names.update(vars(klass), vars(klass).get("__annotations__", {}))
    if instance is not None:
        names.update(set(vars(instance)) - set(vars(stock)))
    return {name for name in names if name.startswith("_") and not name.startswith("__")}


def _twisted_names(base: type, stock: object = None) -> set[str]:
    names = set(dir(base)) | set(vars(stock) if stock is not None else ())
    for klass in base.__mro__:
        names.update(vars(klass).get("__annotations__", {}))
    return names


def _subclasses() -> list[tuple[type, type, tuple[str, ...], object, object]]:
    # (ours, Twisted's, the hooks ours overrides, an instance of each when their __init__ sets private names)
    reactor = MemoryReactorClock()
    h2 = (ProxyH2Connection(reactor), private.H2Connection(reactor))
    subclasses: list[tuple[type, type, tuple[str, ...], object, object]] = [
        (ProxyChannel, http.HTTPChannel, (), ProxyChannel(), http.HTTPChannel()),
        (ProxyRequest, server.Request, private.REQUEST_HOOKS, None, None),
        (H2ProxyRequest, server.Request, (), None, None),
        (ProxyH2Connection, private.H2Connection, private.H2_CONNECTION_HOOKS, *h2),
    ]
    if sys.platform.startswith("linux"):
        from twisted.internet.epollreactor import EPollReactor

        from txrevproxy._daemon.reactor import ProxyReactor

        subclasses.append((ProxyReactor, EPollReactor, (), None, None))
    subclasses.append((SharedUNIXPort, unix.Port, private.UNIX_PORT_HOOKS, None, None))
    return subclasses


SUBCLASSES = _subclasses()


@pytest.mark.parametrize(
    ("cls", "base", "hooks", "instance", "stock"), SUBCLASSES, ids=[c[0].__name__ for c in SUBCLASSES]
)
def test_our_subclasses_take_no_private_name_of_twisted_but_the_hooks(
    cls: type, base: type, hooks: tuple[str, ...], instance: object, stock: object
) -> None:
    """Our subclasses of Twisted's classes define none of its private names but the hooks (else they shadow)."""
    taken = _own_private_names(cls, base, instance, stock) & _twisted_names(base, stock)
    assert taken == set(hooks)
    assert all(hasattr(base, hook) for hook in hooks)


# Private attributes of Twisted's that the rest of the code must reach through twisted_private.
_ACCESSED = frozenset(
    {
        "_networkProducer",
        "_handlingRequest",
        "_waitingForTransport",
        "_requestProducer",
        "_parsePOSTFormSubmission",
        "_adapterCache",
        "_disconnected",
        "_encoder",
        "_handleStar",
        "_IEncodingResource",
        "_reactor",
        "_stillProducing",
        "_tryToWriteControlData",
        "_request",
        "_poller",
        "_selectables",
        "_doReadOrWrite",
        "_reads",
        "_writes",
        "_writeDisconnected",
        "_tempDataLen",
        "_interface",
        "_port",
        "_backlog",
        "_sslContextFactory",
        "_tlsConnection",
        "_parse",
        "_fromListeningDescriptor",
    }
)
_HOOKS = frozenset(private.REQUEST_HOOKS + private.H2_CONNECTION_HOOKS + private.UNIX_PORT_HOOKS)


def _private_uses(tree: ast.AST) -> Iterator[ast.AST]:
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "twisted":
            names = [*(node.module or "").split("."), *(alias.name for alias in node.names)]
            if any(name.startswith("_") for name in names):
                yield node
        elif isinstance(node, ast.Import):
            if any(a.name.split(".")[0] == "twisted" and "._" in a.name for a in node.names):
                yield node
        elif isinstance(node, ast.Attribute):
            on_self = isinstance(node.value, ast.Name) and node.value.id == "self"
            on_super = isinstance(node.value, ast.Call) and getattr(node.value.func, "id", None) == "super"
            if node.attr in _ACCESSED or (node.attr in _HOOKS and not (on_self or on_super)):
                yield node
        elif isinstance(node, ast.Constant) and node.value in _ACCESSED:
            yield node  # getattr(obj, "_name")


def test_private_names_are_used_only_through_twisted_private() -> None:
    """No module but twisted_private imports a private Twisted module or name, or touches a known private attribute."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        if path.name != "twisted_private.py":
            source = path.read_text()
            lines = source.splitlines()
            for node in _private_uses(ast.parse(source)):
                found.append(f"{path.relative_to(SRC)}:{node.lineno}: {lines[node.lineno - 1].strip()}")
    assert found == []
