"""
txrevproxy in other people's tests.

:class:`MemoryProxy`
    For ``twisted.trial.unittest.SynchronousTestCase``: a real proxy wired *in memory* (no sockets) to a fake
    origin resource and to clients, driven by a ``MemoryReactorClock``: time passes only when the test says
    (:meth:`MemoryProxy.advance`), so timeouts are tested without waiting.
:func:`listen_proxy`
    For tests that run a reactor (trial's ``TestCase``, pytest-twisted): a proxy listening on 127.0.0.1 (port 0) in
    that reactor, in front of a URL or of a fake origin resource; a :class:`LiveProxy`.
:func:`start_proxy`
    For synchronous tests with any HTTP client (``urllib``, requests, httpx): the same proxy on a reactor of its own
    in a background thread; a :class:`RunningProxy`. The pytest plugin's fixtures (``txrevproxy_to_url``,
    ``txrevproxy_to_resource``) are built on it.

Each of them records the requests the proxy saw (:class:`SeenRequest`), those the fake origin saw, and the upstream
connections the proxy opened. :class:`ProxySettings` types their settings (``config``, ``client``, ``access``).
"""

from txrevproxy._testing.proxies import (
    LiveProxy,
    MemoryClient,
    MemoryProxy,
    MemoryResponse,
    ProxySettings,
    listen_proxy,
)
from txrevproxy._testing.recording import SeenRequest
from txrevproxy._testing.threaded import RunningProxy, start_proxy

__all__ = [
    "LiveProxy",
    "MemoryClient",
    "MemoryProxy",
    "MemoryResponse",
    "ProxySettings",
    "RunningProxy",
    "SeenRequest",
    "listen_proxy",
    "start_proxy",
]
