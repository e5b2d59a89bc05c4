"""
txrevproxy: a streaming reverse proxy on Twisted, as a daemon (``twistd -n txrevproxy``) and a library.
"""

from ._access import AccessPolicy
from ._channel import ClientConfig, ProxyChannel, ProxySite
from ._head import HeadLimits
from ._request import ProxyRequest
from ._headers import TrustedNetworks
from ._relay import ProxyConfig
from ._tls import UpstreamTLS
from ._upstream import PoolConfig, UpstreamPool
from .resource import PassThroughProxyResource, ReverseProxyResource

__all__ = [
    "AccessPolicy",
    "ClientConfig",
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
