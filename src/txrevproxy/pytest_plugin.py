"""
The pytest plugin (registered through the ``pytest11`` entry point, so active wherever txrevproxy is installed).

Fixtures, each a factory that starts a real proxy on 127.0.0.1 (a free port), listening before it returns, and
stops it (every connection closed, the port released, its thread ended) when the test ends:

``txrevproxy_to_url(url, **settings)``
    a proxy in front of ``url``.
``txrevproxy_to_resource(resource, **settings)``
    a proxy in front of a fake origin serving ``resource`` (a ``twisted.web`` resource, or a callable making one
    from the proxy's reactor).

Both return a :class:`txrevproxy.testing.RunningProxy`: ``.url``, ``.requests``, ``.origin_requests``,
``.upstream_connections``, ``.stop()``. ``settings`` are ``config=`` (:class:`~txrevproxy.ProxyConfig`),
``client=`` (:class:`~txrevproxy.ClientConfig`) and ``access=`` (:class:`~txrevproxy.AccessPolicy`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, ParamSpec

import pytest

if TYPE_CHECKING:
    from twisted.web.resource import IResource
    from typing_extensions import Unpack

    from txrevproxy._net.reactor import IProxyReactor
    from txrevproxy.testing import ProxySettings, RunningProxy

P = ParamSpec("P")

# (txrevproxy.testing is imported in the functions: the plugin loads in every pytest run, most of which never start a
# proxy.)


def _to_url(target: str, **settings: Unpack[ProxySettings]) -> RunningProxy:
    from txrevproxy.testing import start_proxy

    return start_proxy(upstream=target, **settings)


def _to_resource(
    target: IResource | Callable[[IProxyReactor], IResource], **settings: Unpack[ProxySettings]
) -> RunningProxy:
    from txrevproxy.testing import start_proxy

    return start_proxy(origin=target, **settings)


def _factory(start_one: Callable[P, RunningProxy]) -> Iterator[Callable[P, RunningProxy]]:
    started: list[RunningProxy] = []

    def start(*args: P.args, **kwargs: P.kwargs) -> RunningProxy:
        proxy = start_one(*args, **kwargs)
        started.append(proxy)
        return proxy

    yield start
    errors = []
    for proxy in reversed(started):
        try:
            proxy.stop()
        except Exception as error:  # stop them all; report the first failure
            errors.append(error)
    if errors:
        raise errors[0]


@pytest.fixture
def txrevproxy_to_url() -> Iterator[Callable[..., RunningProxy]]:
    """
    ``txrevproxy_to_url(url, **settings)``: a running proxy in front of ``url``, stopped when the test ends.
    """
    yield from _factory(_to_url)


@pytest.fixture
def txrevproxy_to_resource() -> Iterator[Callable[..., RunningProxy]]:
    """
    ``txrevproxy_to_resource(resource, **settings)``: a running proxy in front of a fake origin serving
    ``resource``, stopped when the test ends.
    """
    yield from _factory(_to_resource)
