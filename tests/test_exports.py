"""
The public API is the real objects.
"""

import txrevproxy
from txrevproxy import _channel, _head, _relay, resource


def test_exports_are_the_implementations():
    """The names in __all__ are the implementation classes, not copies."""
    assert txrevproxy.ReverseProxyResource is resource.ReverseProxyResource
    assert txrevproxy.ProxySite is _channel.ProxySite
    assert txrevproxy.ProxyConfig is _relay.ProxyConfig
    assert txrevproxy.ClientConfig is _channel.ClientConfig
    assert txrevproxy.HeadLimits is _head.HeadLimits
    assert all(hasattr(txrevproxy, name) for name in txrevproxy.__all__)


def test_plugin_is_discoverable():
    """twistd finds the txrevproxy plugin and its options."""
    from twisted.application.service import IServiceMaker
    from twisted.plugin import getPlugins

    makers = {maker.tapname: maker for maker in getPlugins(IServiceMaker)}
    assert makers["txrevproxy"].options is txrevproxy.tap.Options


def test_testing_exports():
    """txrevproxy.testing exports the helpers themselves, and the pytest plugin module defines the fixtures."""
    from txrevproxy import _recording, _threaded, pytest_plugin, testing

    assert testing.start_proxy is _threaded.start_proxy
    assert testing.RunningProxy is _threaded.RunningProxy
    assert testing.SeenRequest is _recording.SeenRequest
    assert all(hasattr(testing, name) for name in testing.__all__)
    assert callable(pytest_plugin.txrevproxy_to_url) and callable(pytest_plugin.txrevproxy_to_resource)
