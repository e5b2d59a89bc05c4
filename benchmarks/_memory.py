"""
The memory scenarios' clients (plain sockets, in this process) and an RSS sampler for the proxy process.

- ``slow_download``: GET a large response through a small receive buffer, reading at a fixed rate;
- ``upload``: POST a large Content-Length body as fast as the proxy accepts it;
- ``open_idle_connections``: many keep-alive connections, one request each, left open.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

RECV_SIZE = 16 * 1024
SLOW_RCVBUF = 16 * 1024


class RssSampler:
    """
    Samples ``read_kib()`` every ``interval`` seconds on a thread, keeping the peak. If ``cap_kib`` is set and the
    growth over ``baseline_kib`` passes it, ``on_cap`` is called once (to abort the transfer) and ``capped`` is set.
    """

    def __init__(
        self,
        read_kib: Callable[[], int],
        baseline_kib: int,
        *,
        interval: float = 0.05,
        cap_kib: int | None = None,
        on_cap: Callable[[], None] = lambda: None,
    ) -> None:
        self.read_kib = read_kib
        self.baseline_kib = baseline_kib
        self.peak_kib = baseline_kib
        self.interval = interval
        self.cap_kib = cap_kib
        self.on_cap = on_cap
        self.capped = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_kib = max(self.peak_kib, self.read_kib())
            if self.cap_kib is not None and not self.capped and self.peak_kib - self.baseline_kib > self.cap_kib:
                self.capped = True
                self.on_cap()


def settled_rss_kib(read_kib: Callable[[], int], seconds: float = 1.0) -> int:
    """
    The process's RSS after ``seconds`` of quiet (the median of a few readings).
    """
    readings = []
    for _ in range(5):
        time.sleep(seconds / 5)
        readings.append(read_kib())
    return sorted(readings)[2]


@dataclass
class Transfer:
    """
    What a client saw: the status, the body bytes moved, how many were expected, and the time it took.
    """

    status: int | None
    bytes: int
    expected: int
    seconds: float
    error: str | None = None

    @property
    def complete(self) -> bool:
        return self.error is None and self.status == 200 and self.bytes == self.expected


def abort(sock: socket.socket) -> None:
    """
    Unblock whatever the client thread is doing on ``sock`` (used by the RSS cap and the deadline).
    """
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _read_head(sock: socket.socket, buffer: bytes = b"") -> tuple[int, dict[bytes, bytes], bytes]:
    """
    Read a response head; return the status, the headers (lower-cased names) and the body bytes read past it.
    """
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(RECV_SIZE)
        if not chunk:
            raise ConnectionError(f"connection closed before the response head ({len(buffer)} bytes)")
        buffer += chunk
    head, rest = buffer.split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, rest


def slow_download(port: int, path: str, expected: int, rate: float, sock: socket.socket) -> Transfer:
    """
    GET ``path`` on an unconnected ``sock`` and read the body at no more than ``rate`` bytes per second.
    """
    # Set before connecting, so that the advertised window stays small.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SLOW_RCVBUF)
    start = time.monotonic()
    status, received = None, 0
    try:
        sock.connect(("127.0.0.1", port))
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        status, _, rest = _read_head(sock)
        received = len(rest)
        body_start = time.monotonic()
        while True:
            chunk = sock.recv(RECV_SIZE)
            if not chunk:
                break
            received += len(chunk)
            ahead = received / rate - (time.monotonic() - body_start)
            if ahead > 0:
                time.sleep(ahead)
    except OSError as e:
        return Transfer(status, received, expected, time.monotonic() - start, f"{type(e).__name__}: {e}")
    return Transfer(status, received, expected, time.monotonic() - start)


def upload(port: int, size: int, sock: socket.socket) -> Transfer:
    """
    POST ``size`` bytes (Content-Length) on an unconnected ``sock`` as fast as it takes them; read the answer.
    """
    block = memoryview(b"u" * (256 * 1024))
    start = time.monotonic()
    sent = 0
    try:
        sock.connect(("127.0.0.1", port))
        head = f"POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n"
        sock.sendall(head.encode())
        while sent < size:
            sent += sock.send(block[: size - sent])
        status, headers, rest = _read_head(sock)
        length = int(headers.get(b"content-length", b"0"))
        while len(rest) < length and (chunk := sock.recv(RECV_SIZE)):
            rest += chunk
    except OSError as e:
        return Transfer(None, sent, size, time.monotonic() - start, f"{type(e).__name__}: {e}")
    return Transfer(status, sent, size, time.monotonic() - start)


@dataclass
class IdleConnections:
    """
    Client connections left open after one request each (close them with ``close()``).
    """

    sockets: list[socket.socket]
    ok: int
    failed: int
    first_error: str | None

    def still_open(self) -> int:
        """
        How many of the connections the server has not closed (no EOF or reset waiting on them).
        """
        count = 0
        for sock in self.sockets:
            sock.setblocking(False)
            try:
                waiting = sock.recv(1, socket.MSG_PEEK)
            except BlockingIOError:
                count += 1  # nothing to read: still open
            except OSError:
                pass  # reset
            else:
                count += bool(waiting)  # b"" is EOF; unexpected bytes still mean open
        return count

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


def open_idle_connections(port: int, count: int, path: str = "/12b") -> IdleConnections:
    """
    Open ``count`` keep-alive connections, send one GET on each and read its whole response; keep them open.
    """
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    sockets, ok, failed, first_error = [], 0, 0, None
    for _ in range(count):
        sock = socket.socket()
        sockets.append(sock)
        try:
            sock.settimeout(10)
            sock.connect(("127.0.0.1", port))
            sock.sendall(request)
            status, headers, body = _read_head(sock)
            length = int(headers.get(b"content-length", b"0"))
            while len(body) < length and (chunk := sock.recv(RECV_SIZE)):
                body += chunk
            if status != 200 or len(body) != length:
                raise ConnectionError(f"status {status}, {len(body)} of {length} body bytes")
            ok += 1
        except OSError as e:
            failed += 1
            first_error = first_error or f"{type(e).__name__}: {e}"
    return IdleConnections(sockets, ok, failed, first_error)
