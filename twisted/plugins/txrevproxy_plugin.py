from twisted.application.reactors import Reactor
from twisted.application.service import ServiceMaker

txrevproxy = ServiceMaker(
    "txrevproxy",
    "txrevproxy.tap",
    "A streaming reverse proxy: pooled HTTP/1.1 upstreams, backpressure both ways.",
    "txrevproxy",
)

txrevproxy_reactor = Reactor(
    "txrevproxy",
    "txrevproxy._daemon.reactor",
    "epoll, without a log context pushed around every I/O event (Linux; used by the txrevproxy console script)",
)
