"""
HTTP/2 through the real daemon on an ssl: listener, with an h2 client (tests/_h2client.py) in front of the fake
origin: requests and bodies, many streams on one connection, per-stream backpressure, limits and validation.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from urllib.parse import quote

import pytest

from tests._certs import TestCA
from tests._h2client import H2Client


@pytest.fixture
def h2(proxy_factory: Callable[..., object], tmp_path) -> Iterator[Callable[..., tuple[object, H2Client]]]:
    ca = TestCA(tmp_path / "ca")
    leaf = ca.issue("localhost")
    clients: list[H2Client] = []

    def start(*flags: str, validate: bool = True, **kwargs: object) -> tuple[object, H2Client]:
        listen = f"ssl:0:interface=127.0.0.1:privateKey={leaf.key}:certKey={leaf.cert}"
        proxy = proxy_factory("--listen", listen, *flags, **kwargs)
        port = int(proxy.wait_for_log(r"listening on https://127\.0\.0\.1:(\d+)").group(1))  # type: ignore[attr-defined]
        client = H2Client(port, str(ca.ca_file), validate=validate)
        clients.append(client)
        return proxy, client

    yield start
    for client in clients:
        client.close()


def echoed(stream: object) -> dict:
    return json.loads(bytes(stream.data))  # type: ignore[attr-defined]


def test_get(h2) -> None:
    """A GET over HTTP/2 is relayed: Host from :authority, forwarding headers, Via 2, lowercase response headers."""
    proxy, client = h2()
    [stream] = client.wait(client.request("GET", "/echo?x=1", [(b"x-test", b"yes")]))
    assert stream.status == 200 and stream.ended
    seen = echoed(stream)
    assert seen["target"] == "/echo?x=1"
    headers = {name.lower(): value for name, value in seen["headers"]}
    assert headers["x-forwarded-host"] == client.authority.decode()
    assert headers["x-forwarded-proto"] == "https" and headers["via"] == "2 txrevproxy"
    assert headers["x-test"] == "yes"
    assert all(name == name.lower() for name in stream.headers)
    assert b"connection" not in stream.headers and b"transfer-encoding" not in stream.headers
    proxy.wait_for_log(r'"GET /echo\?x=1 HTTP/2" 200 ')  # type: ignore[attr-defined]


def test_post_body(h2) -> None:
    """A request body over several DATA frames reaches the upstream whole."""
    _, client = h2()
    body = bytes(range(256)) * 4096  # 1 MiB
    [stream] = client.wait(client.request("POST", "/upload", [(b"content-length", str(len(body)).encode())], body))
    assert echoed(stream) == {"body_length": len(body), "body_sha256": hashlib.sha256(body).hexdigest()}


def test_concurrent_streams(h2, origin) -> None:
    """Twenty streams at once on one connection all get their own answers."""
    _, client = h2()
    ids = [client.request("GET", f"/echo/{index}") for index in range(20)]
    streams = client.wait(*ids)
    assert [echoed(stream)["target"] for stream in streams] == [f"/echo/{index}" for index in range(20)]


def test_slow_reader_pauses_the_upstream(h2, origin) -> None:
    """A stream whose window stays shut stops the upstream read: the origin has written far less than the body."""
    _, client = h2()
    client.acknowledge = False
    size = 32 * 1024 * 1024
    stream_id = client.request("GET", f"/bytes?n={size}&sndbuf=65536")
    client.read_for(stream_id, 65535)  # the initial window's worth
    written = origin.stats()["bytes_written"]
    assert written < 8 * 1024 * 1024, written
    client.acknowledge = True
    client.conn.acknowledge_received_data(len(client.streams[stream_id].data), stream_id)
    client._flush()
    [stream] = client.wait(stream_id)
    assert len(stream.data) == size and stream.ended


@pytest.mark.parametrize(
    "headers, framing",
    [([], {"transfer-encoding": "chunked"}), ([(b"content-length", b"101000")], {"content-length": "101000"})],
    ids=["unknown length", "declared length"],
)
def test_upload_streams_to_the_origin(h2, headers: list[tuple[bytes, bytes]], framing: dict[str, str]) -> None:
    """The origin reads the first bytes of an upload before the client has sent the rest, framed as declared."""
    _, client = h2()
    stream_id = client.request("POST", "/upload-progress", headers, b"a" * 1000, end=False)
    client.read_until_line(stream_id, b"1000")  # the origin has read them; the client has not finished
    assert not client.streams[stream_id].done
    client.send_body(stream_id, b"b" * 100_000)
    [stream] = client.wait(stream_id)
    assert stream.status == 200 and stream.ended
    summary = json.loads(bytes(stream.data).splitlines()[-1])
    body_sha256 = hashlib.sha256(b"a" * 1000 + b"b" * 100_000).hexdigest()
    assert summary == {"body_length": 101_000, "body_sha256": body_sha256, "framing": framing}


def test_upload_to_an_origin_that_reads_nothing(h2, origin) -> None:
    """An upload to an origin that stops reading shuts its stream's window long before 32 MiB; other streams go on,
    and resetting the stream closes the upstream connection."""
    _, client = h2()
    stalled = client.request("POST", "/stall-upload", end=False)
    sent = client.upload_until_stalled(stalled, 32 * 1024 * 1024)
    assert sent < 16 * 1024 * 1024, sent
    body = b"x" * 200_000
    [other] = client.wait(client.request("POST", "/upload", [(b"content-length", b"200000")], body))
    assert echoed(other) == {"body_length": len(body), "body_sha256": hashlib.sha256(body).hexdigest()}
    client.conn.reset_stream(stalled)
    client._flush()
    stats = origin.stats(min_stall_closed=1, timeout=20)
    assert stats["stall_closed"] == 1 and not stats["timed_out"]


def test_truncated_response_resets_the_stream(h2) -> None:
    """A response the upstream cut short is never ended normally: the stream is reset."""
    _, client = h2()
    [stream] = client.wait(client.request("GET", "/truncate?declared=100000&send=50000"))
    assert stream.reset is not None and not stream.ended


def test_body_too_large(h2) -> None:
    """A body over --max-body-size gets 413 and nothing goes upstream; the connection goes on."""
    _, client = h2("--max-body-size", "1k")
    big = client.request("POST", "/upload", [(b"content-length", b"4096")], b"x" * 4096)
    small = client.request("GET", "/echo")
    too_large, fine = client.wait(big, small)
    assert too_large.status == 413 and fine.status == 200


def test_header_list_too_large(h2, origin) -> None:
    """A header list over --max-header-size gets 431 on its stream, and another over --max-headers too; nothing of
    them goes upstream, and the connection goes on."""
    _, client = h2("--max-header-size", "4k", "--max-headers", "5")
    big = client.request("GET", "/echo", [(b"x-big", b"y" * 6000)])
    many = client.request("GET", "/echo", [(b"x-%d" % i, b"v") for i in range(6)])
    fine = client.request("GET", "/echo")
    assert [stream.status for stream in client.wait(big, many, fine)] == [431, 431, 200]
    assert origin.stats()["requests"] == 1


def test_no_authority(h2, origin) -> None:
    """A request with neither :authority nor host ends the connection with PROTOCOL_ERROR; nothing goes upstream."""
    _, client = h2(validate=False)
    client.request("GET", "/echo", authority=False)
    client.wait(*client.streams)
    assert client.terminated is not None and client.terminated.error_code == 1
    assert origin.stats()["requests"] == 0


def test_connection_specific_header(h2) -> None:
    """A connection-specific header ends the connection with PROTOCOL_ERROR; nothing goes upstream."""
    _, client = h2(validate=False)
    client.request("GET", "/echo", [(b"connection", b"keep-alive")])
    client.wait(*client.streams)
    assert client.terminated is not None and client.terminated.error_code == 1


def test_content_length_disagreeing(h2, origin) -> None:
    """A content-length the DATA does not match ends the connection and the request is never relayed."""
    _, client = h2(validate=False)
    client.request("POST", "/upload", [(b"content-length", b"10")], b"12345")
    client.wait(*client.streams)
    assert client.terminated is not None
    assert origin.stats()["requests"] == 0


def test_settings_announced(h2) -> None:
    """The stream and header-list limits are announced in SETTINGS."""
    _, client = h2("--max-streams", "7", "--max-header-size", "16k")
    client.wait(client.request("GET", "/echo"))
    assert client.remote_settings[0x3] == 7  # MAX_CONCURRENT_STREAMS
    assert client.remote_settings[0x6] == 16384  # MAX_HEADER_LIST_SIZE


def test_upstream_down(h2) -> None:
    """An unreachable upstream gets the stream a 502."""
    _, client = h2(upstream="http://127.0.0.1:9")
    [stream] = client.wait(client.request("GET", "/"))
    assert stream.status == 502


def test_stalled_body_gets_408(h2, origin) -> None:
    """A stream whose body stops short of its content-length gets 408 at --body-timeout; the upstream request is
    aborted, never answered, and the connection serves the next stream."""
    proxy, client = h2("--body-timeout", "0.5")
    [stream] = client.wait(client.request("POST", "/upload", [(b"content-length", b"1000")], b"x" * 100, end=False))
    assert stream.status == 408 and stream.ended
    logged = r"rejected HTTP/2 request from 127\.0\.0\.1: 408 request body made no progress for 0\.5s"
    proxy.wait_for_log(logged)  # type: ignore[attr-defined]
    stats = origin.stats(min_closed=1)
    assert stats["closed"] >= 1 and stats["requests"] == 0 and not stats["timed_out"]
    [following] = client.wait(client.request("GET", "/echo"))
    assert following.status == 200


def test_no_server_header_of_the_proxys(h2) -> None:
    """Over HTTP/2 the proxy's own responses name no server, a relayed response has the origin's server value as it
    was sent, and one whose origin named none has no server header."""
    _, client = h2("--max-header-line", "100")
    named = b"HTTP/1.1 200 OK\r\nServer: origin/1.0 (x)\r\nContent-Length: 2\r\n\r\nok"
    invalid = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"
    ids = [
        client.request("GET", "/raw?data=" + quote(named, safe="")),
        client.request("GET", "/echo"),
        client.request("GET", "/echo", [(b"x-big", b"y" * 100)]),
        client.request("GET", "/raw?data=" + quote(invalid, safe="")),
    ]
    streams = client.wait(*ids)
    assert [stream.status for stream in streams] == [200, 200, 431, 502]
    assert [stream.headers.get(b"server") for stream in streams] == [b"origin/1.0 (x)", None, None, None]
