"""
Every configuration record the library takes, in one place: frozen values, built once and passed down.

=====================  ===========================================================================================
:class:`ProxyConfig`   how requests are relayed: response timeout, ``Host``, forwarding headers, upgrades, the pool
:class:`PoolConfig`    the upstream connection pool: idle connections, connect/read/send timeouts, TLS
:class:`UpstreamTLS`   how ``https://`` upstreams are verified
:class:`ClientConfig`  client connections: head limits, body size, head/body/send timeouts
:class:`HeadLimits`    the size limits of a request head
:class:`GateConfig`    which clients may connect, and how many at once
:class:`AccessPolicy`  client networks allowed and denied
:class:`TrustedNetworks`  client networks whose forwarding headers are trusted
=====================  ===========================================================================================
"""

from txrevproxy._http.head import HeadLimits
from txrevproxy._http.headers import TrustedNetworks
from txrevproxy._http.networks import AccessPolicy
from txrevproxy._relay.exchange import ProxyConfig
from txrevproxy._server.config import ClientConfig
from txrevproxy._server.gate import GateConfig
from txrevproxy._tls.client import UpstreamTLS
from txrevproxy._upstream.pool import PoolConfig

__all__ = [
    "AccessPolicy",
    "ClientConfig",
    "GateConfig",
    "HeadLimits",
    "PoolConfig",
    "ProxyConfig",
    "TrustedNetworks",
    "UpstreamTLS",
]
