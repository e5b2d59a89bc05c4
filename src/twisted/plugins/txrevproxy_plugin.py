from twisted.application.service import ServiceMaker

txrevproxy = ServiceMaker(
    "txrevproxy",
    "txrevproxy.tap",
    "A streaming reverse proxy: pooled HTTP/1.1 upstreams, backpressure both ways.",
    "txrevproxy",
)
