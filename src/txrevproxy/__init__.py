"""
txrevproxy: a streaming reverse proxy on Twisted, as a daemon (``twistd -n txrevproxy``) and a library.
"""

import importlib.metadata

from txrevproxy._http.head import HeadLimits
from txrevproxy._http.headers import TrustedNetworks
from txrevproxy._http.networks import AccessPolicy
from txrevproxy._relay.exchange import ProxyConfig
from txrevproxy._server.channel import ProxyChannel, ProxySite
from txrevproxy._server.config import ClientConfig
from txrevproxy._server.gate import GateConfig
from txrevproxy._server.request import ProxyRequest
from txrevproxy._tls.client import UpstreamTLS
from txrevproxy._upstream.pool import PoolConfig, UpstreamPool
from txrevproxy.resource import PassThroughProxyResource, ReverseProxyResource

try:
    __version__ = importlib.metadata.version("txrevproxy")
except importlib.metadata.PackageNotFoundError:  # (imported from a source tree that is not installed)
    __version__ = "0+unknown"

__all__ = [
    "AccessPolicy",
    "ClientConfig",
    "GateConfig",
    "HeadLimits",
    "PassThroughProxyResource",
    "PoolConfig",
    "ProxyChannel",
    "ProxyConfig",
    "ProxyRequest",
    "ProxySite",
    "ReverseProxyResource",
    "TrustedNetworks",
    "UpstreamPool",
    "UpstreamTLS",
]
