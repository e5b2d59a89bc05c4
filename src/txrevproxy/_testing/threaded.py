"""
A listening proxy for synchronous tests: a reactor of its own (never the global one) running in a background
thread, the proxy on it, and a handle whose every method may be called from the test's thread.

Its own reactor, because the global one may be in use by the test (pytest-twisted, trial) or may never run (a plain
pytest test); everything in txrevproxy takes its reactor as an argument, so a second reactor serves it fully. A fake
origin resource that schedules work must use the reactor it is given (pass a callable ``reactor -> resource``), not
the global one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, ParamSpec, TypeVar, cast, overload

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import blockingCallFromThread
from twisted.web.resource import IResource

from txrevproxy._net.reactor import IProxyReactor
from txrevproxy._testing.proxies import LiveProxy, ProxySettings, listen_proxy

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from txrevproxy._testing.recording import SeenRequest

T = TypeVar("T")
P = ParamSpec("P")

#: Seconds to wait for the reactor thread to end after the proxy has stopped.
STOP_TIMEOUT = 10.0


class IThreadedReactor(IProxyReactor, IReactorFromThreads):
    """
    The reactor of a :class:`RunningProxy`: the proxy's, reached from other threads. For type checking only, as
    :class:`~txrevproxy._net.reactor.IProxyReactor` is.
    """


def new_reactor() -> IThreadedReactor:
    """
    A new reactor, not installed as the global one: epoll where there is epoll, else select.
    """
    try:
        from twisted.internet.epollreactor import EPollReactor as Reactor
    except ImportError:  # not Linux
        from twisted.internet.selectreactor import SelectReactor as Reactor
    # (either provides each interface of IThreadedReactor: Twisted declares them one by one, some by classImplements)
    return cast(IThreadedReactor, Reactor())


def _close(reactor: IThreadedReactor) -> None:
    # A stopped reactor still holds its waker's pipe and its poller: give them back.
    from txrevproxy._net.twisted_private import reactor_poller

    waker = getattr(reactor, "waker", None)
    if waker is not None:
        waker.connectionLost(None)
    poller = reactor_poller(reactor)
    if poller is not None:
        poller.close()


class RunningProxy:
    """
    A proxy on 127.0.0.1 served by a reactor thread of its own (see :func:`start_proxy`); usable from any thread.
    Also a context manager that stops it on exit.

    :ivar url: ``http://127.0.0.1:PORT``, the proxy.
    :ivar port: the proxy's port.
    :ivar origin_url: the fake origin's URL, with ``origin=`` (else ``None``).
    :ivar reactor: the proxy's reactor (running in another thread: reach it through :meth:`call`).
    """

    def __init__(self, reactor: IThreadedReactor, thread: threading.Thread, live: LiveProxy) -> None:
        self.reactor = reactor
        self._thread = thread
        self._live = live
        self.url = live.url
        self.port = live.port
        self.origin_url = live.origin_url
        self.stopped = False

    @overload
    def call(self, function: Callable[P, Deferred[T]], *args: P.args, **kwargs: P.kwargs) -> T: ...

    @overload
    def call(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T: ...

    def call(self, function: Callable[P, Deferred[T]] | Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """
        ``function(*args, **kwargs)`` run in the proxy's reactor thread; its result (a ``Deferred``'s waited for).
        """
        return blockingCallFromThread(self.reactor, function, *args, **kwargs)

    @property
    def requests(self) -> list[SeenRequest]:
        """
        The requests that reached the proxy, each with the status answered once the answer is complete.
        """
        return self.call(lambda: self._live.requests)

    @property
    def origin_requests(self) -> list[SeenRequest]:
        """
        The requests the fake origin received, with their bodies (empty without a fake origin).
        """
        return self.call(lambda: self._live.origin_requests)

    @property
    def upstream_connections(self) -> int:
        """
        The connections the proxy opened to its upstream.
        """
        return self.call(lambda: self._live.upstream_connections)

    def stop(self) -> None:
        """
        Close every connection and the listening sockets, then end the reactor thread. Idempotent.
        """
        if self.stopped:
            return
        self.stopped = True
        try:
            self.call(self._live.stop)
        finally:
            _end(self.reactor, self._thread)

    def __enter__(self) -> RunningProxy:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _end(reactor: IThreadedReactor, thread: threading.Thread) -> None:
    reactor.callFromThread(reactor.stop)
    thread.join(STOP_TIMEOUT)
    if thread.is_alive():
        raise RuntimeError(f"the proxy's reactor thread did not end within {STOP_TIMEOUT:g} s")
    _close(reactor)


def start_proxy(
    *,
    upstream: str | None = None,
    origin: IResource | Callable[[IProxyReactor], IResource] | None = None,
    **settings: Unpack[ProxySettings],
) -> RunningProxy:
    """
    A proxy listening on 127.0.0.1 (a free port) before this returns, in front of the ``upstream`` URL or of
    ``origin`` (exactly one): a ``twisted.web`` resource served as a fake origin, or a callable that makes one from
    the proxy's reactor. ``settings`` are :func:`~txrevproxy.testing.listen_proxy`'s (``config``, ``client``,
    ``access``). Stop it with :meth:`RunningProxy.stop`, or use it as a context manager.
    """
    reactor = new_reactor()
    thread = threading.Thread(
        target=reactor.run, kwargs={"installSignalHandlers": False}, name="txrevproxy test reactor", daemon=True
    )
    thread.start()

    def listen() -> LiveProxy:
        resource = origin(reactor) if callable(origin) else origin
        return listen_proxy(reactor, upstream=upstream, origin=resource, **settings)

    try:
        live = blockingCallFromThread(reactor, listen)
    except BaseException:
        _end(reactor, thread)
        raise
    return RunningProxy(reactor, thread, live)
