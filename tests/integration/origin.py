"""
A fake origin HTTP/1.1 server for the loopback integration tests, run as a child process: ``python origin.py``.

It binds 127.0.0.1 on port 0 and prints exactly one line, ``origin listening on PORT``, to stdout. Connections are
kept alive (one thread per connection). Requests are parsed by hand, strictly enough to see exactly what the proxy
sent: the request target and the header lines are kept byte for byte (decoded as latin-1), and request bodies are read
with ``Content-Length`` or ``Transfer-Encoding: chunked`` framing. Every response is framed by hand too, so the tests
control exactly what the proxy receives. A ``HEAD`` request gets the headers the ``GET`` would get and no body.

Endpoints (query parameters are plain ``name=value`` pairs separated by ``&``):

``/echo...`` (any path starting with ``/echo``, any method)
    200, JSON ``{"method", "target", "headers": [[name, value], ...], "body_length", "body_sha256"}``: the request
    as received; ``target`` is the raw request target, ``headers`` every header line in order, repeats kept.
``/response-headers``
    200, body ``ok\\n``, with two ``Set-Cookie`` lines, the hop-by-hop headers ``Connection: X-Hop``, ``X-Hop: 1``,
    ``Keep-Alive: timeout=5``, ``Proxy-Authenticate: x``, ``Trailer: X-T``, ``Upgrade: foo``, and the end-to-end
    ``X-End-To-End: kept``.
``/bytes?n=N[&chunked=1][&sndbuf=BYTES]``
    200 with an ``N``-byte body whose byte ``i`` is ``i % 256``, framed with ``Content-Length`` or (``chunked=1``)
    chunked in 64 KiB chunks. ``sndbuf`` sets the socket's ``SO_SNDBUF`` first. The body bytes written so far (by all
    ``/bytes`` writers) are counted in ``/stats`` as ``bytes_written``.
``/upload`` (any method)
    reads the body and answers 200, JSON ``{"body_length", "body_sha256"}``.
``/upload-progress`` (any method)
    answers at once with a chunked 200, then reads the body and writes a line ``N\\n`` (the body bytes read so far)
    after each piece it reads, and at the end of the body one line of JSON, ``{"body_length", "body_sha256",
    "framing"}`` (``framing``: the request's ``content-length``/``transfer-encoding`` values, by lowercase name).
``/stall-upload``
    reads the request head, shrinks its receive buffer, and then never reads the body nor answers; the connection is
    closed only when the peer closes it (counted in ``/stats`` as ``stall_started`` and ``stall_closed``).
``/truncate?declared=N&send=M``
    ``Content-Length: N`` (default 1000) but only ``M`` (default 100) body bytes, then the connection is closed.
``/truncate?chunked=1``
    chunked framing: three chunks, then the connection is closed without the final ``0`` chunk.
``/silent?declared=N&send=M``
    ``Content-Length: N`` (default 1000) and only ``M`` (default 100) body bytes, then silence: the connection is
    closed only when the peer closes it (counted in ``/stats`` as ``silent_started`` and ``silent_closed``).
``/raw?data=BYTES``
    writes ``BYTES`` (percent-decoded byte for byte; ``+`` is a plus) as the whole response, then closes the
    connection: a way to send any malformed response.
``/hang``
    reads the request and never answers; it waits for the peer to close the connection (counted in ``/stats`` as
    ``hang_started`` and ``hang_closed``).
``/status?code=C[&cl=N]``
    answers status ``C`` (e.g. 204, 304) with no body; ``cl=N`` adds ``Content-Length: N`` (allowed on a 304, where
    it describes the representation, not this message). ``ETag: "v1"`` is always sent.
``/stats``
    200, JSON ``{"accepted", "closed", "requests", "bytes_written", "hang_started", "hang_closed", "stall_started",
    "stall_closed", "silent_started", "silent_closed", "timed_out"}``:
    connections accepted and closed so far (including this request's own connection), requests answered, and so on.
    Before answering it can wait, server side, bounded by ``timeout=SECONDS`` (default 10), after which it answers
    anyway with ``"timed_out": true``:

    - ``settle=1``: until ``bytes_written`` has not changed for 0.5 s (the ``/bytes`` writer is stalled or done);
    - ``min_KEY=N`` (e.g. ``min_closed=3``, ``min_hang_closed=1``): until the counter ``KEY`` is at least ``N``.
"""

from __future__ import annotations

import hashlib
import json
import select
import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from urllib.parse import parse_qsl, unquote_to_bytes, urlsplit

_MAX_LINE = 65536
_BLOCK = bytes(range(256)) * 256  # 64 KiB; every slice starting at a multiple of 256 continues the pattern
_SETTLE_SECONDS = 0.5
FRAMING_HEADERS = ("content-length", "transfer-encoding")

_lock = threading.Lock()
_stats = {
    "accepted": 0,
    "closed": 0,
    "requests": 0,
    "bytes_written": 0,
    "hang_started": 0,
    "hang_closed": 0,
    "stall_started": 0,
    "stall_closed": 0,
    "silent_started": 0,
    "silent_closed": 0,
}


def _bump(key: str, amount: int = 1) -> None:
    with _lock:
        _stats[key] += amount


def _snapshot() -> dict[str, int]:
    with _lock:
        return dict(_stats)


class BadRequest(Exception):
    pass


class _Close(Exception):
    """
    Stop serving this connection (and close it) without answering anything more.
    """


class Request:
    def __init__(self, method: str, target: str, version: str, headers: list[list[str]]) -> None:
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        split = urlsplit(target)
        self.path = split.path
        self.query = dict(parse_qsl(split.query, keep_blank_values=True))

    def values(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n.lower() == name.lower()]

    def tokens(self, name: str) -> list[str]:
        return [t.strip().lower() for v in self.values(name) for t in v.split(",") if t.strip()]


class Handler(socketserver.StreamRequestHandler):
    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        _bump("accepted")

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            _bump("closed")

    # -- reading ---------------------------------------------------------------------------------------------------

    def _line(self) -> bytes:
        line = self.rfile.readline(_MAX_LINE + 1)
        if len(line) > _MAX_LINE:
            raise BadRequest("line too long")
        return line

    def read_head(self) -> Request | None:
        line = self._line()
        while line in (b"\r\n", b"\n"):  # RFC 9112 section 2.2: ignore empty lines before a request line
            line = self._line()
        if not line:
            return None
        if not line.endswith(b"\r\n"):
            raise BadRequest("request line not ended by CRLF")
        parts = line[:-2].decode("latin-1").split(" ")
        if len(parts) != 3:
            raise BadRequest(f"bad request line {line!r}")
        method, target, version = parts
        headers: list[list[str]] = []
        while True:
            line = self._line()
            if not line.endswith(b"\r\n"):
                raise BadRequest("header line not ended by CRLF")
            if line == b"\r\n":
                break
            text = line[:-2].decode("latin-1")
            name, colon, value = text.partition(":")
            if not colon or not name or name != name.strip():
                raise BadRequest(f"bad header line {line!r}")
            headers.append([name, value.strip(" \t")])
        return Request(method, target, version, headers)

    def read_body(self, request: Request) -> bytes:
        return b"".join(self.body_pieces(request))

    def body_pieces(self, request: Request) -> Iterator[bytes]:
        """
        The request body, piece by piece as it is read (at most 64 KiB at a time).
        """
        codings = request.tokens("Transfer-Encoding")
        if codings:
            if codings != ["chunked"]:
                raise BadRequest(f"unsupported transfer coding {codings}")
            yield from self._read_chunked()
            return
        lengths = request.values("Content-Length")
        if not lengths:
            return
        if len(set(lengths)) != 1 or not lengths[0].isdigit():
            raise BadRequest(f"bad Content-Length {lengths}")
        remaining = int(lengths[0])
        while remaining:
            piece = self.rfile.read1(min(remaining, len(_BLOCK)))
            if not piece:
                raise _Close()
            remaining -= len(piece)
            yield piece

    def _read_chunked(self) -> Iterator[bytes]:
        while True:
            line = self._line()
            if not line.endswith(b"\r\n"):
                raise _Close() if not line else BadRequest("chunk size line not ended by CRLF")
            size_text = line[:-2].split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise BadRequest(f"bad chunk size {line!r}") from None
            if size == 0:
                break
            data = self.rfile.read(size)
            if len(data) != size:
                raise _Close()
            yield data
            if self.rfile.read(2) != b"\r\n":
                raise BadRequest("chunk data not followed by CRLF")
        while True:  # trailer section
            line = self._line()
            if not line:
                raise _Close()
            if line == b"\r\n":
                break

    # -- writing ---------------------------------------------------------------------------------------------------

    def send_head(self, status: str, headers: list[tuple[str, str]], body: bytes = b"") -> None:
        lines = [f"HTTP/1.1 {status}\r\n"] + [f"{n}: {v}\r\n" for n, v in headers] + ["\r\n"]
        self.connection.sendall("".join(lines).encode("latin-1") + body)

    def send(self, request: Request, status: str, headers: list[tuple[str, str]], body: bytes) -> None:
        framed = [*headers, ("Content-Length", str(len(body)))]
        self.send_head(status, framed, b"" if request.method == "HEAD" else body)

    def send_json(self, request: Request, value: object) -> None:
        body = json.dumps(value).encode("ascii") + b"\n"
        self.send(request, "200 OK", [("Content-Type", "application/json")], body)

    def wait_for_peer_close(self) -> None:
        """
        Block until the peer closes (or resets) the connection, without reading anything more from it.
        """
        events = getattr(select, "POLLRDHUP", 0) | select.POLLHUP | select.POLLERR
        if not events & ~(select.POLLHUP | select.POLLERR):
            while self.connection.recv(65536):  # no POLLRDHUP: read (and drop) until EOF
                pass
            return
        poller = select.poll()
        poller.register(self.connection, events)
        while not poller.poll(1000):
            pass

    # -- serving ---------------------------------------------------------------------------------------------------

    def handle(self) -> None:
        try:
            while True:
                request = self.read_head()
                if request is None:
                    return
                keep_alive = "close" not in request.tokens("Connection")
                self.dispatch(request)
                _bump("requests")
                if not keep_alive:
                    return
        except BadRequest as e:
            try:
                body = f"bad request: {e}\n".encode()
                self.connection.sendall(
                    b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body) + body
                )
            except OSError:
                pass
        except (_Close, OSError):
            pass

    def dispatch(self, request: Request) -> None:
        path = request.path
        if path.startswith("/echo"):
            self.do_echo(request)
        elif path == "/response-headers":
            self.read_body(request)
            self.send(
                request,
                "200 OK",
                [
                    ("Content-Type", "text/plain"),
                    ("Set-Cookie", "a=1; Path=/"),
                    ("Set-Cookie", "b=2; Path=/"),
                    ("Connection", "X-Hop"),
                    ("X-Hop", "1"),
                    ("Keep-Alive", "timeout=5"),
                    ("Proxy-Authenticate", "x"),
                    ("Trailer", "X-T"),
                    ("Upgrade", "foo"),
                    ("X-End-To-End", "kept"),
                ],
                b"ok\n",
            )
        elif path == "/bytes":
            self.read_body(request)
            self.do_bytes(request)
        elif path == "/upload":
            body = self.read_body(request)
            self.send_json(request, {"body_length": len(body), "body_sha256": hashlib.sha256(body).hexdigest()})
        elif path == "/upload-progress":
            self.do_upload_progress(request)
        elif path == "/stall-upload":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            _bump("stall_started")
            try:
                self.wait_for_peer_close()
            finally:
                _bump("stall_closed")
            raise _Close()
        elif path == "/truncate":
            self.read_body(request)
            self.do_truncate(request)
        elif path == "/silent":
            self.read_body(request)
            declared = int(request.query.get("declared", "1000"))
            send = int(request.query.get("send", "100"))
            self.send_head("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(declared))])
            self.connection.sendall(_BLOCK[:send])
            _bump("silent_started")
            try:
                self.wait_for_peer_close()
            finally:
                _bump("silent_closed")
            raise _Close()
        elif path == "/raw":
            self.read_body(request)
            pairs = [p.partition("=") for p in urlsplit(request.target).query.split("&")]
            data = next((unquote_to_bytes(value) for name, _, value in pairs if name == "data"), b"")
            self.connection.sendall(data)
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            raise _Close()
        elif path == "/hang":
            self.read_body(request)
            _bump("hang_started")
            try:
                self.wait_for_peer_close()
            finally:
                _bump("hang_closed")
            raise _Close()
        elif path == "/status":
            self.read_body(request)
            code = int(request.query.get("code", "204"))
            headers = [("ETag", '"v1"')]
            if "cl" in request.query:
                headers.append(("Content-Length", request.query["cl"]))
            self.send_head(f"{code} Status {code}", headers)
        elif path == "/stats":
            self.read_body(request)
            self.send_json(request, self.stats(request))
        else:
            self.read_body(request)
            self.send(request, "404 Not Found", [("Content-Type", "text/plain")], b"not found\n")

    def do_echo(self, request: Request) -> None:
        body = self.read_body(request)
        self.send_json(
            request,
            {
                "method": request.method,
                "target": request.target,
                "version": request.version,
                "headers": request.headers,
                "body_length": len(body),
                "body_sha256": hashlib.sha256(body).hexdigest(),
            },
        )

    def do_upload_progress(self, request: Request) -> None:
        self.send_head("200 OK", [("Content-Type", "text/plain"), ("Transfer-Encoding", "chunked")])
        digest, length = hashlib.sha256(), 0
        for piece in self.body_pieces(request):
            digest.update(piece)
            length += len(piece)
            line = b"%d\n" % length
            self.connection.sendall(b"%x\r\n%s\r\n" % (len(line), line))
        framing = {name.lower(): value for name, value in request.headers if name.lower() in FRAMING_HEADERS}
        summary = json.dumps({"body_length": length, "body_sha256": digest.hexdigest(), "framing": framing}).encode()
        self.connection.sendall(b"%x\r\n%s\r\n0\r\n\r\n" % (len(summary), summary))

    def do_bytes(self, request: Request) -> None:
        n = int(request.query.get("n", "0"))
        chunked = request.query.get("chunked") == "1"
        if "sndbuf" in request.query:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, int(request.query["sndbuf"]))
        framing = ("Transfer-Encoding", "chunked") if chunked else ("Content-Length", str(n))
        self.send_head("200 OK", [("Content-Type", "application/octet-stream"), framing])
        if request.method == "HEAD":
            return
        sent = 0
        while sent < n:
            piece = _BLOCK[: min(len(_BLOCK), n - sent)]
            if chunked:
                self.connection.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
            else:
                self.connection.sendall(piece)
            sent += len(piece)
            _bump("bytes_written", len(piece))
        if chunked:
            self.connection.sendall(b"0\r\n\r\n")

    def do_truncate(self, request: Request) -> None:
        if request.query.get("chunked") == "1":
            self.send_head("200 OK", [("Content-Type", "text/plain"), ("Transfer-Encoding", "chunked")])
            for word in (b"one\n", b"two\n", b"three\n"):
                self.connection.sendall(b"%x\r\n" % len(word) + word + b"\r\n")
        else:
            declared = int(request.query.get("declared", "1000"))
            send = int(request.query.get("send", "100"))
            self.send_head("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(declared))])
            self.connection.sendall(_BLOCK[:send])
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        raise _Close()

    def stats(self, request: Request) -> dict[str, object]:
        deadline = time.monotonic() + float(request.query.get("timeout", "10"))
        timed_out = False
        minimums = {k[4:]: int(v) for k, v in request.query.items() if k.startswith("min_")}
        while minimums and not timed_out:
            current = _snapshot()
            if all(current.get(k, 0) >= v for k, v in minimums.items()):
                break
            timed_out = time.monotonic() > deadline
            time.sleep(0.02)
        if request.query.get("settle") == "1" and not timed_out:
            last = _snapshot()["bytes_written"]
            changed_at = time.monotonic()
            while time.monotonic() - changed_at < _SETTLE_SECONDS:
                if time.monotonic() > deadline:
                    timed_out = True
                    break
                time.sleep(0.05)
                now = _snapshot()["bytes_written"]
                if now != last:
                    last, changed_at = now, time.monotonic()
        return {**_snapshot(), "timed_out": timed_out}


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def main() -> None:
    server = Server(("127.0.0.1", 0), Handler)
    print(f"origin listening on {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
