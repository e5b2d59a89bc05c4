"""
The relay through the daemon's ProxySite, entirely in memory: client and upstream connections on the in-memory
network, time on its MemoryReactorClock.
"""

from __future__ import annotations

import gc
import weakref

import pytest

from tests._harness import CapturedLog, Harness, head_and_body, header_lines
from txrevproxy import PoolConfig, ProxyConfig, TrustedNetworks

GET = b"GET /a/b?x=1+2&y=%2F HTTP/1.1\r\nHost: example.com\r\n\r\n"


def test_request_head_forwarded_with_rebuilt_headers():
    """The upstream gets the target untouched, its own Host, forwarding headers and no hop-by-hop headers."""
    h = Harness()
    h.send(
        b"GET /a%2Fb?q=a+b%20c HTTP/1.1\r\nHost: example.com\r\nConnection: keep-alive, X-Hop\r\n"
        b"X-Hop: 1\r\nKeep-Alive: 5\r\nTE: trailers\r\nCookie: a=1\r\nCookie: b=2\r\n"
        b"X-Forwarded-For: 6.6.6.6\r\nProxy-Authorization: secret\r\n\r\n"
    )
    up = h.upstream().accept()
    sent = up.received()
    assert sent.startswith(b"GET /a%2Fb?q=a+b%20c HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n")
    lines = header_lines(head_and_body(sent)[0])
    assert b"Cookie: a=1" in lines and b"Cookie: b=2" in lines
    assert lines.index(b"Cookie: a=1") < lines.index(b"Cookie: b=2")
    assert b"X-Forwarded-For: 10.0.0.1" in lines
    assert b"X-Forwarded-Host: example.com" in lines
    assert b"Forwarded: for=10.0.0.1;proto=http;host=example.com" in lines
    assert b"Via: 1.1 txrevproxy" in lines
    for name in (b"connection", b"x-hop", b"keep-alive", b"te", b"proxy-authorization"):
        assert not [line for line in lines if line.lower().startswith(name + b":")], name
    assert sent.endswith(b"\r\n\r\n")


def test_trusted_peer_forwarding_headers_are_appended():
    """From a configured proxy network, X-Forwarded-For is appended to."""
    h = Harness(ProxyConfig(trusted=TrustedNetworks.parse(["10.0.0.0/8"])))
    h.send(b"GET / HTTP/1.1\r\nHost: e\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n")
    assert b"X-Forwarded-For: 1.2.3.4, 10.0.0.1\r\n" in h.upstream().accept().received()


def test_preserve_host_sends_client_host():
    """With preserve_host the client's Host goes upstream."""
    h = Harness(ProxyConfig(preserve_host=True))
    h.send(GET)
    assert b"\r\nHost: example.com\r\n" in h.upstream().accept().received()


def test_response_streams_before_upstream_finishes():
    """Response head and the first body bytes reach the client before the upstream response is complete."""
    h = Harness()
    h.send(GET)
    up = h.upstream().accept()
    up.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nSet-Cookie: a\r\nSet-Cookie: b\r\n\r\nhello")
    head, body = head_and_body(h.response())
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert b"Content-Length: 10" in header_lines(head)
    assert header_lines(head).count(b"Set-Cookie: a") == 1 and b"Set-Cookie: b" in header_lines(head)
    assert body == b"hello"
    up.respond(b"world")
    assert head_and_body(h.response())[1] == b"helloworld"


def test_chunked_upstream_body_is_rechunked_for_client():
    """A chunked upstream body is decoded and re-framed by the proxy, its trailers dropped."""
    h = Harness()
    h.send(GET)
    up = h.upstream().accept()
    up.respond(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\n"
    )
    head, body = head_and_body(h.response())
    assert b"Transfer-Encoding: chunked" in header_lines(head)
    assert b"Trailer: X-T" not in header_lines(head)
    assert body == b"5\r\nhello\r\n0\r\n\r\n"


def test_hop_by_hop_response_headers_stripped():
    """Response headers named in Connection and hop-by-hop ones are not relayed; end-to-end ones are."""
    h = Harness()
    h.send(GET)
    up = h.upstream().accept()
    up.respond(
        b"HTTP/1.1 200 OK\r\nConnection: X-Secret\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\n"
        b"Proxy-Authenticate: Basic\r\nUpgrade: foo\r\nX-Kept: yes\r\nContent-Length: 0\r\n\r\n"
    )
    lines = [line.lower() for line in header_lines(head_and_body(h.response())[0])]
    assert b"x-kept: yes" in lines
    for name in (b"x-secret", b"keep-alive", b"proxy-authenticate", b"upgrade"):
        assert not [line for line in lines if line.startswith(name + b":")], name


def test_slow_client_pauses_upstream_and_resumes_it():
    """When the client transport asks the channel to pause, the upstream connection stops being read."""
    h = Harness()
    h.send(GET)
    up = h.upstream().accept()
    up.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")
    h.channel.pauseProducing()
    assert not up.transport.reading
    h.channel.resumeProducing()
    assert up.transport.reading


def test_upload_streams_before_body_complete_and_slow_upstream_pauses_client():
    """A Content-Length body is relayed as it arrives; when the upstream is slow the client is paused."""
    h = Harness()
    h.send(b"POST /up HTTP/1.1\r\nHost: e\r\nContent-Length: 10\r\n\r\nabc")
    up = h.upstream().accept()
    assert up.received().endswith(b"Content-Length: 10\r\n\r\nabc") or b"\r\n\r\nabc" in up.received()
    h.send(b"def")
    assert up.received().endswith(b"abcdef")
    up.transport.producer.pauseProducing()
    assert not h.client.reading
    up.transport.producer.resumeProducing()
    assert h.client.reading
    h.send(b"ghij")
    assert up.received().endswith(b"abcdefghij")
    assert up.transport.producer is None  # upload done: the upstream transport is free for the next request


def test_chunked_upload_is_relayed_chunked():
    """A chunked request body goes upstream re-chunked by the proxy, with no client chunk extensions."""
    h = Harness()
    h.send(b"POST / HTTP/1.1\r\nHost: e\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n")
    up = h.upstream().accept()
    h.send(b"0\r\n\r\n")
    sent = up.received()
    assert b"Transfer-Encoding: chunked\r\n" in sent
    assert sent.endswith(b"\r\n\r\n3\r\nabc\r\n0\r\n\r\n")


def test_body_before_upstream_connects_is_held_then_client_paused():
    """Body bytes that arrive before the upstream connection is made are held, then the client is paused."""
    h = Harness()
    size = 200_000
    h.send(b"POST / HTTP/1.1\r\nHost: e\r\nContent-Length: %d\r\n\r\n" % size)
    h.send(b"x" * 100_000)
    assert not h.client.reading
    up = h.upstream().accept()
    assert h.client.reading
    h.send(b"x" * 100_000)
    assert up.received().endswith(b"\r\n\r\n" + b"x" * size)


def test_refused_upstream_gives_502_with_text_body():
    """A refused connection becomes a 502 with a short text/plain body."""
    h = Harness()
    h.send(GET)
    h.upstream().refuse()
    head, body = head_and_body(h.response())
    assert head.startswith(b"HTTP/1.1 502 Bad Gateway")
    assert b"Content-Type: text/plain; charset=utf-8" in header_lines(head)
    assert body == b"502 Bad Gateway\n"


def test_connect_timeout_gives_504():
    """An upstream that does not accept the connection in time becomes a 504."""
    h = Harness(ProxyConfig(pool=PoolConfig(connect_timeout=2)))
    h.send(GET)
    h.advance(1.9)
    assert h.response() == b""
    h.advance(0.2)
    assert h.response().startswith(b"HTTP/1.1 504 ")


def test_first_byte_timeout_gives_504_and_discards_connection():
    """No response head within response_timeout: 504 and the upstream connection is aborted."""
    h = Harness(ProxyConfig(response_timeout=3))
    h.send(GET)
    up = h.upstream().accept()
    h.advance(2.9)
    assert h.response() == b""
    h.advance(0.2)
    assert h.response().startswith(b"HTTP/1.1 504 ")
    assert up.transport.aborted


def test_truncated_length_response_aborts_client():
    """Upstream closing before Content-Length bytes arrived aborts the client connection."""
    h = Harness()
    h.send(GET)
    up = h.upstream().accept()
    up.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")
    up.close()
    assert h.client.aborted  # aborted, not a clean close
    assert head_and_body(h.response())[1] == b"half"


def test_truncated_chunked_response_never_gets_last_chunk():
    """Upstream closing mid-chunked-body aborts the client without writing the final chunk."""
    h = Harness()
    h.send(GET)
    up = h.upstream().accept()
    up.respond(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nhalf\r\n")
    up.close()
    assert h.client.aborted
    assert not h.response().endswith(b"0\r\n\r\n")


def test_close_delimited_response_completes_on_close():
    """A response with no length ends when the upstream closes, and is finished for the client."""
    h = Harness()
    h.send(GET)
    up = h.upstream().accept()
    up.respond(b"HTTP/1.1 200 OK\r\n\r\nall of it")
    up.close()
    assert not h.client.aborted
    assert h.response().endswith(b"9\r\nall of it\r\n0\r\n\r\n")


def test_invalid_upstream_response_gives_502():
    """An upstream response with both Transfer-Encoding and Content-Length is refused with 502."""
    h = Harness()
    h.send(GET)
    up = h.upstream().accept()
    up.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert h.response().startswith(b"HTTP/1.1 502 ")
    assert up.transport.aborted


def test_client_disconnect_aborts_upstream():
    """The client going away aborts the upstream request at once."""
    h = Harness()
    h.send(GET)
    up = h.upstream().accept()
    h.client_closed()
    assert up.transport.aborted


def test_client_disconnect_while_connecting_cancels_attempt():
    """The client going away while the upstream connection is being made cancels the attempt."""
    h = Harness()
    h.send(GET)
    h.client_closed()
    assert h.upstream().connector.stoppedConnecting


def test_keep_alive_connection_reused():
    """Two requests in a row use one upstream connection."""
    h = Harness()
    h.send(GET)
    first = h.upstream().accept()
    first.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    h.send(GET)
    first.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert h.attempts == 1
    assert first.received().count(b"GET /a/b") == 2
    assert h.response().count(b"HTTP/1.1 200 OK") == 2


def test_connection_close_response_not_reused():
    """An upstream response with Connection: close ends that connection's use."""
    h = Harness()
    h.send(GET)
    up = h.upstream().accept()
    up.respond(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
    assert up.transport.disconnecting
    h.send(GET)
    assert h.attempts == 2


def test_interim_responses_skipped():
    """A 100 Continue from the upstream is not relayed; the final response is."""
    h = Harness()
    h.send(GET)
    up = h.upstream().accept()
    up.respond(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n")
    assert h.response().startswith(b"HTTP/1.1 204 No Content\r\n")


def test_head_response_keeps_length_without_body():
    """A HEAD response keeps the upstream's Content-Length and has no body."""
    h = Harness()
    h.send(b"HEAD / HTTP/1.1\r\nHost: e\r\n\r\n")
    up = h.upstream().accept()
    up.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n")
    head, body = head_and_body(h.response())
    assert b"Content-Length: 1234" in header_lines(head)
    assert body == b""
    h.send(GET)
    assert h.attempts == 1  # the connection went back to the pool


def test_early_response_drains_body_then_serves_next_request():
    """A response ending before its request body: the rest of the body is discarded, the next request is served."""
    h = Harness()
    h.send(b"POST / HTTP/1.1\r\nHost: e\r\nContent-Length: 6\r\n\r\nabc")
    up = h.upstream().accept()
    up.respond(b"HTTP/1.1 413 Too Big\r\nContent-Length: 0\r\n\r\n")
    assert h.response().startswith(b"HTTP/1.1 413 ")
    assert up.transport.disconnecting  # the request was not fully sent: not reusable
    h.send(b"def" + GET)
    assert h.attempts == 2
    second = h.upstream().accept()
    assert second.received().startswith(b"GET /a/b")
    assert b"def" not in second.received()


def test_ambiguous_request_rejected_before_connecting():
    """Transfer-Encoding together with Content-Length is answered 400 and nothing goes upstream."""
    h = Harness()
    h.send(
        b"POST / HTTP/1.1\r\nHost: e\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    )
    assert h.response().startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert h.attempts == 0
    assert h.client.disconnecting


def test_missing_host_rejected():
    """An HTTP/1.1 request without Host is answered 400."""
    h = Harness()
    h.send(b"GET / HTTP/1.1\r\n\r\n")
    assert h.response().startswith(b"HTTP/1.1 400 ")
    assert h.attempts == 0


def test_http10_client_gets_unchunked_body_and_close():
    """An HTTP/1.0 client gets a chunked upstream body unchunked, ended by closing."""
    h = Harness()
    h.send(b"GET / HTTP/1.0\r\n\r\n")
    up = h.upstream().accept()
    assert b"Via: 1.0 txrevproxy" in up.received()
    up.respond(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
    _head, body = head_and_body(h.response())
    assert body == b"abc"
    assert h.client.disconnecting


def test_stale_pooled_connection_is_retried_once():
    """A bodiless request on a pooled connection the upstream closed before answering is retried on a new one."""
    h = Harness()
    h.send(GET)
    up = h.upstream().accept()
    up.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    h.send(GET)
    assert h.attempts == 1
    up.close()
    assert h.attempts == 2
    h.upstream().accept().respond(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert h.response().endswith(b"ok")


def test_empty_reason_phrase_gets_the_standard_one():
    """An upstream status line without a reason phrase is relayed with the standard phrase."""
    h = Harness()
    h.send(GET)
    h.upstream().accept().respond(b"HTTP/1.1 404\r\nContent-Length: 0\r\n\r\n")
    assert h.response().startswith(b"HTTP/1.1 404 Not Found\r\n")


POST_1K = b"POST /up HTTP/1.1\r\nHost: e\r\nContent-Length: 1000\r\n\r\n" + b"x" * 100


def test_client_gone_during_stalled_upload_is_not_an_upstream_failure():
    """A client leaving while the upstream has paused its upload is logged as the client's doing, never as a 502."""
    h = Harness()
    h.send(POST_1K)
    up = h.upstream().accept()
    up.transport.producer.pauseProducing()
    with CapturedLog() as log:
        h.client_closed()
        assert up.transport.aborted  # (and the network has carried the abort: connectionLost has followed)
    assert "client went away" in log.text()
    assert "502" not in log.text() and "upstream closed" not in log.text()


def test_shutdown_drop_is_not_reported_as_upstream_failure():
    """Connections dropped after the pool is closed (the proxy stopping) are not logged as upstream failures or 502s."""
    h = Harness()
    h.send(POST_1K)
    up = h.upstream().accept()
    with CapturedLog() as log:
        h.resource.pool.close()
        up.close(clean=False)  # what reactor.disconnectAll does at shutdown
    assert "shutting down" in log.text()
    assert "502" not in log.text() and "upstream closed" not in log.text()
    assert h.response() == b""
    assert h.client.aborted


def test_shutdown_while_streaming_aborts_client_without_upstream_blame():
    """A response cut by the proxy stopping aborts the client and is logged as the shutdown, not the upstream."""
    h = Harness()
    h.send(GET)
    up = h.upstream().accept()
    up.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")
    with CapturedLog() as log:
        h.resource.pool.close()
        up.close(clean=False)
    assert h.client.aborted
    assert "shutting down" in log.text() and "mid-body" not in log.text()


# -- the upload (send) deadline ---------------------------------------------------------------------------------------


def _uploading(send_timeout: float = 60.0):
    h = Harness(ProxyConfig(pool=PoolConfig(send_timeout=send_timeout)))
    h.send(POST_1K)
    up = h.upstream().accept()
    return h, up


def test_send_timeout_default_is_60s():
    """The upstream send timeout defaults to 60 seconds."""
    assert PoolConfig().send_timeout == 60.0


def test_stalled_upload_gives_504_and_discards_connection():
    """An upstream that leaves the upload paused for send_timeout, before any response: 504, the connection aborted."""
    h, up = _uploading(send_timeout=20)
    up.transport.producer.pauseProducing()
    assert not h.client.reading
    with CapturedLog() as log:
        h.advance(19.9)
        assert h.response() == b"" and not up.transport.aborted
        h.advance(0.2)
    assert h.response().startswith(b"HTTP/1.1 504 ")
    assert up.transport.aborted
    assert "stopped reading the request body for 20s (send timeout)" in log.text()
    assert h.client.reading  # the rest of the body is read and discarded
    h.send(b"x" * 900 + GET)
    assert h.attempts == 2  # the next request gets a new connection


def test_upload_progress_restarts_the_send_deadline():
    """Each time the upstream drains the upload (resume) the stall count starts again."""
    h, up = _uploading(send_timeout=10)
    producer = up.transport.producer
    for _ in range(5):
        producer.pauseProducing()
        h.advance(9)
        producer.resumeProducing()
    producer.pauseProducing()
    h.advance(9.9)
    assert h.response() == b""
    h.advance(0.2)
    assert h.response().startswith(b"HTTP/1.1 504 ")


def test_slow_client_upload_is_not_an_upstream_stall():
    """A client sending its body slowly (upload not paused by the upstream) does not trip the send deadline."""
    h, up = _uploading(send_timeout=10)
    h.advance(25)  # (below the client's own --body-timeout of 30 s)
    assert h.response() == b"" and not up.transport.aborted


def test_stalled_upload_after_response_head_aborts_client():
    """An upload stalled after the response has started streaming: the upstream and the client are aborted."""
    h, up = _uploading(send_timeout=10)
    up.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\npart")
    up.transport.producer.pauseProducing()
    h.advance(10.1)
    assert up.transport.aborted
    assert h.client.aborted
    assert head_and_body(h.response())[1] == b"part"


def test_finished_upload_leaves_no_send_timer():
    """An upload that completes after a pause cancels its send deadline; the response deadline takes over."""
    h, up = _uploading(send_timeout=10)
    up.transport.producer.pauseProducing()
    h.advance(5)
    up.transport.producer.resumeProducing()
    h.send(b"x" * 900)
    assert up.transport.producer is None
    assert "_checkSendDeadline" not in [call.func.__name__ for call in h.reactor.getDelayedCalls()]
    up.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert h.response().endswith(b"ok")


def test_responses_in_pieces_on_one_connection():
    """Two responses that arrive in pieces on one keep-alive client connection both stream (the producer is
    registered while a response is incomplete and unregistered when it ends)."""
    h = Harness()
    h.send(b"GET /1 HTTP/1.1\r\nHost: e\r\n\r\n")
    up = h.upstream().accept()
    with CapturedLog() as captured:
        for n in (1, 2):
            if n == 2:
                h.send(b"GET /2 HTTP/1.1\r\nHost: e\r\n\r\n")
            up.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab")
            assert h.channel._requestProducer is not None
            h.channel.pauseProducing()
            assert not up.transport.reading
            h.channel.resumeProducing()
            up.respond(b"cd")
    assert h.response().count(b"\r\n\r\nabcd") == 2
    assert [e["log_failure"] for e in captured.events if "log_failure" in e] == []


def test_whole_response_registers_no_producer():
    """A response that arrives whole is relayed without registering a producer at all."""
    h = Harness()
    h.send(GET)
    up = h.upstream().accept()
    calls = []
    h.channel.registerProducer = lambda producer, streaming: calls.append(producer)
    up.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert calls == [] and h.response().endswith(b"\r\n\r\nok")


def test_response_deadline_on_a_reused_connection():
    """On a reused upstream connection each request gets its own response_timeout, counted from its sending."""
    h = Harness(ProxyConfig(response_timeout=30))
    h.send(GET)
    up = h.upstream().accept()
    h.advance(10)
    up.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    h.advance(10)
    h.send(GET)  # sent at t=20 on the same connection
    assert h.attempts == 1
    h.advance(29.9)  # t=49.9: the first request's timer (t=30) has come and gone
    assert h.response().count(b"HTTP/1.1 ") == 1
    h.advance(0.2)
    assert h.response().count(b"HTTP/1.1 504 ") == 1
    assert up.transport.aborted


# -- memory ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_bytes",
    [
        GET,
        b"POST /p HTTP/1.1\r\nHost: example.com\r\nContent-Length: 5\r\n\r\nhello",
        b"POST /p HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ],
)
def test_a_relayed_request_is_freed_by_reference_counting(request_bytes):
    """Once answered, a request and its relay are freed at once: no reference cycle is left for the garbage
    collector, which would otherwise have to find one per request."""
    h = Harness()
    h.send(request_bytes)
    up = h.upstream().accept()
    request = weakref.ref(h.channel.requests[-1])
    relay = weakref.ref(up.protocol._wrappedProtocol._receiver)
    gc.disable()
    try:
        up.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        assert h.response().endswith(b"\r\n\r\nok")
        assert request() is None and relay() is None
    finally:
        gc.enable()
