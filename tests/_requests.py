"""
Raw requests the proxy must refuse before forwarding anything, with the status each gets: shared by the in-memory
channel tests and the loopback tests. The body cap is assumed to be 100 bytes; other limits are the defaults.
"""

HOST = b"Host: example.com\r\n"

REFUSED = [
    # Content-Length
    (b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400),
    (b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 1, 2\r\n\r\nab", 400),
    (b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: +1\r\n\r\na", 400),
    (b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: -1\r\n\r\na", 400),
    (b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 0x1\r\n\r\na", 400),
    (b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 1 1\r\n\r\na", 400),
    (b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 1.0\r\n\r\na", 400),
    (b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: " + b"1" * 21 + b"\r\n\r\na", 400),
    (b"POST / HTTP/1.1\r\n" + HOST + b"Content_Length: 5\r\n\r\n", 400),
    # Transfer-Encoding
    (b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: identity\r\nContent-Length: 1\r\n\r\na", 400),
    (b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: identity\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n0\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked, chunked\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked, identity\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: xchunked\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked;q=1\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\n" + HOST + b'Transfer-Encoding: "chunked"\r\n\r\n', 400),
    (b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: gzip, chunked\r\n\r\n", 501),
    (b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding : chunked\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding:\x0bchunked\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\x00\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding:\r\n chunked\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\n" + HOST + b"Transfer_Encoding: chunked\r\n\r\n", 400),
    (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    # header syntax
    (b"GET / HTTP/1.1\r\n Host: example.com\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n" + HOST + b"X-A: 1\r\n folded\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n" + HOST + b"X-A : 1\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n" + HOST + b"X-A: 1\rX-B: 2\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n" + HOST + b"X-A: 1\nX-B: 2\r\n\r\n", 400),
    (b"GET / HTTP/1.1\n" + HOST + b"\r\n", 400),
    (b"GET / HTTP/1.1\r\n" + HOST + b"X-A: a\x00b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n" + HOST + b"X-A: a\x01b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n" + HOST + b"X[A]: 1\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n" + HOST + b": 1\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n" + HOST + b"X-A\r\n\r\n", 400),
    # request line
    (b"G@T / HTTP/1.1\r\n" + HOST + b"\r\n", 400),
    (b"GET /\r\n\r\n", 400),
    (b"GET / HTTP/2.0\r\n" + HOST + b"\r\n", 505),
    (b"GET / HTTP/1.2\r\n" + HOST + b"\r\n", 505),
    (b"GET / HTTP/1.x\r\n" + HOST + b"\r\n", 400),
    (b"GET /a\x7f HTTP/1.1\r\n" + HOST + b"\r\n", 400),
    (b"GET /a\x80 HTTP/1.1\r\n" + HOST + b"\r\n", 400),
    (b"GET /a\xb0 HTTP/1.1\r\n" + HOST + b"\r\n", 400),
    (b"GET /a\x01 HTTP/1.1\r\n" + HOST + b"\r\n", 400),
    (b"GET /a#frag HTTP/1.1\r\n" + HOST + b"\r\n", 400),
    (b"GET  / HTTP/1.1\r\n" + HOST + b"\r\n", 400),
    (b"GET / HTTP/1.1 \r\n" + HOST + b"\r\n", 400),
    (b" GET / HTTP/1.1\r\n" + HOST + b"\r\n", 400),
    (b"GET a HTTP/1.1\r\n" + HOST + b"\r\n", 400),
    # Host
    (b"GET / HTTP/1.1\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n" + HOST + HOST + b"\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a@b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", 400),
    (b"GET http://other.example/ HTTP/1.1\r\n" + HOST + b"\r\n", 400),
    # limits (defaults, a body cap of 100 bytes)
    (b"GET /" + b"a" * 8192 + b" HTTP/1.1\r\n" + HOST + b"\r\n", 414),
    (b"GET / HTTP/1.1\r\n" + HOST + b"X: " + b"a" * 8190 + b"\r\n\r\n", 431),
    (b"GET / HTTP/1.1\r\n" + HOST + b"".join(b"X-%d: 1\r\n" % i for i in range(100)) + b"\r\n", 431),
    (b"GET / HTTP/1.1\r\n" + HOST + b"".join(b"X-%d: %s\r\n" % (i, b"a" * 4000) for i in range(9)) + b"\r\n", 431),
    (b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 101\r\n\r\n", 413),
    # expectations
    (b"POST / HTTP/1.1\r\n" + HOST + b"Expect: 200-ok\r\nContent-Length: 1\r\n\r\na", 417),
]
