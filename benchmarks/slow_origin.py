"""
An origin that reads request bodies slowly, for the slow-upstream memory scenario.

    python benchmarks/slow_origin.py --rate BYTES_PER_SECOND

Listens on 127.0.0.1 (any free port), logs ``listening on http://127.0.0.1:PORT``. Every request body (framed by
Content-Length; anything else counts as no body) is read in small ``recv`` calls paced to ``--rate``, through a
small receive buffer, and then answered ``200`` with ``received N bytes``. Connections are kept alive.
"""

import argparse
import socket
import socketserver
import time

RECV_SIZE = 16 * 1024
RCVBUF = 64 * 1024
MAX_HEAD = 64 * 1024


class Handler(socketserver.BaseRequestHandler):
    rate: int

    def handle(self) -> None:
        self.buffer = b""
        while True:
            head = self.read_head()
            if head is None:
                return
            length, close = parse_head(head)
            received = self.read_body(length)
            body = f"received {received} bytes\n".encode()
            connection = b"close" if close else b"keep-alive"
            self.request.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: %s\r\n\r\n%s"
                % (len(body), connection, body)
            )
            if close or received < length:
                return

    def read_head(self) -> bytes | None:
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.request.recv(RECV_SIZE)
            if not chunk or len(self.buffer) > MAX_HEAD:
                return None
            self.buffer += chunk
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        return head

    def read_body(self, length: int) -> int:
        """
        Read ``length`` bytes at no more than ``rate`` bytes per second; return how many arrived.
        """
        received = min(len(self.buffer), length)
        self.buffer = self.buffer[received:]
        start = time.monotonic()
        while received < length:
            chunk = self.request.recv(min(RECV_SIZE, length - received))
            if not chunk:
                break
            received += len(chunk)
            ahead = received / self.rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)
        return received


def parse_head(head: bytes) -> tuple[int, bool]:
    """
    The Content-Length (0 if none) and whether the client asked to close, from a request head.
    """
    lines = head.split(b"\r\n")
    length, close = 0, lines[0].endswith(b"HTTP/1.0")
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection":
            close = b"close" in value
    return length, close


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def server_bind(self) -> None:
        # Accepted sockets inherit this small buffer, so the kernel cannot soak up much of a slow upload.
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        super().server_bind()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--rate", type=int, default=2 * 1024 * 1024, help="bytes per second (default 2 MiB/s)")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    Handler.rate = args.rate
    with Server(("127.0.0.1", args.port), Handler) as server:
        print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
        server.serve_forever()


if __name__ == "__main__":
    main()
