"""
The public API is the real objects.
"""

import txrevproxy
from txrevproxy import resource
from txrevproxy._http import head
from txrevproxy._relay import exchange
from txrevproxy._server import channel
from txrevproxy._server import config as server_config


def test_exports_are_the_implementations():
    """The names in __all__ are the implementation classes, not copies."""
    assert txrevproxy.ReverseProxyResource is resource.ReverseProxyResource
    assert txrevproxy.ProxySite is channel.ProxySite
    assert txrevproxy.ProxyConfig is exchange.ProxyConfig
    assert txrevproxy.ClientConfig is server_config.ClientConfig
    assert txrevproxy.HeadLimits is head.HeadLimits
    assert all(hasattr(txrevproxy, name) for name in txrevproxy.__all__)


def test_config_module_holds_every_config_record():
    """txrevproxy.config exports the configuration records themselves, each also exported by txrevproxy."""
    from txrevproxy import config
    from txrevproxy._server import gate
    from txrevproxy._upstream import pool

    assert config.PoolConfig is pool.PoolConfig and config.GateConfig is gate.GateConfig
    assert config.ProxyConfig is exchange.ProxyConfig and config.ClientConfig is server_config.ClientConfig
    for name in config.__all__:
        assert getattr(txrevproxy, name) is getattr(config, name)


def test_plugin_is_discoverable():
    """twistd finds the txrevproxy plugin and its options."""
    from twisted.application.service import IServiceMaker
    from twisted.plugin import getPlugins

    makers = {maker.tapname: maker for maker in getPlugins(IServiceMaker)}
    assert makers["txrevproxy"].options is txrevproxy.tap.Options


def test_testing_exports():
    """txrevproxy.testing exports the helpers themselves, and the pytest plugin module defines the fixtures."""
    from txrevproxy import pytest_plugin, testing
    from txrevproxy._testing import recording, threaded

    assert testing.start_proxy is threaded.start_proxy
    assert testing.RunningProxy is threaded.RunningProxy
    assert testing.SeenRequest is recording.SeenRequest
    assert all(hasattr(testing, name) for name in testing.__all__)
    assert callable(pytest_plugin.txrevproxy_to_url) and callable(pytest_plugin.txrevproxy_to_resource)
