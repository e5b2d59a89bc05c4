"""
``--workers 2`` through a real supervisor and worker processes on loopback: both workers serve, a killed worker is
replaced, SIGTERM stops everything cleanly, and workers do not outlive a killed supervisor.
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import signal
import socket
import ssl
import time

import pytest

from tests._certs import TestCA

TIMEOUT = 15.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) counts as gone.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] != "Z"


def _wait_gone(pids: list[int]) -> None:
    deadline = time.monotonic() + TIMEOUT
    while any(_alive(pid) for pid in pids):
        assert time.monotonic() < deadline, f"still running: {[p for p in pids if _alive(p)]}"
        time.sleep(0.05)


def _worker_pids(proxy, count: int) -> dict[int, int]:
    pids: dict[int, int] = {}
    deadline = time.monotonic() + TIMEOUT
    while True:
        for line in proxy.log_lines():
            match = re.search(r"worker (\d+) \(pid (\d+)\) serving", line)
            if match:
                pids[int(match.group(1))] = int(match.group(2))
        if len(pids) >= count:
            return pids
        assert time.monotonic() < deadline, "\n".join(proxy.log_lines())
        time.sleep(0.05)


def _sockets_of(pid: int) -> int:
    return sum(1 for fd in os.listdir(f"/proc/{pid}/fd") if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"))


def _get(proxy, path: str = "/echo") -> int:
    connection = proxy.connection(timeout=TIMEOUT)
    connection.request("GET", path)
    response = connection.getresponse()
    response.read()
    connection.close()
    return response.status


def test_both_workers_accept(proxy_factory):
    """Connections are spread over both workers: each ends up holding client connections."""
    proxy = proxy_factory("--workers", "2")
    pids = _worker_pids(proxy, 2)
    before = {index: _sockets_of(pid) for index, pid in pids.items()}
    clients = [socket.create_connection(("127.0.0.1", proxy.port), timeout=TIMEOUT) for _ in range(60)]
    try:
        for sock in clients:
            sock.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
        for sock in clients:
            assert sock.recv(12) == b"HTTP/1.1 200"
        gained = {index: _sockets_of(pid) - before[index] for index, pid in pids.items()}
        assert all(n > 0 for n in gained.values()), gained
    finally:
        for sock in clients:
            sock.close()


def test_killed_worker_is_replaced_and_sigterm_stops_all(proxy_factory):
    """A worker killed with SIGKILL is restarted; SIGTERM to the supervisor stops it and every worker, status 0."""
    proxy = proxy_factory("--workers", "2")
    pids = _worker_pids(proxy, 2)
    assert _get(proxy) == 200
    os.kill(pids[1], signal.SIGKILL)
    proxy.wait_for_log(rf"worker 1 \(pid {pids[1]}\) exited after .*killed by SIGKILL; restarting", TIMEOUT)
    replacement = int(proxy.wait_for_log(rf"worker 1 \(pid (?!{pids[1]}\))(\d+)\) serving", TIMEOUT).group(1))
    for _ in range(10):
        assert _get(proxy) == 200
    proxy.process.send_signal(signal.SIGTERM)
    # twistd stops cleanly, then exits by the signal that stopped it (so the status shows SIGTERM).
    assert proxy.process.wait(TIMEOUT) in (0, -signal.SIGTERM)
    proxy.wait_for_log(r"Server Shut Down", TIMEOUT)
    _wait_gone([pids[1], pids[2], replacement])
    trouble = [line for line in proxy.log_lines() if "Traceback" in line or "#critical]" in line]
    assert trouble == []


def test_workers_stop_when_the_supervisor_is_killed(proxy_factory):
    """Workers notice their supervisor is gone (their stdin pipe closes) and stop on their own."""
    proxy = proxy_factory("--workers", "2")
    pids = _worker_pids(proxy, 2)
    proxy.process.send_signal(signal.SIGKILL)
    proxy.process.wait(TIMEOUT)
    _wait_gone(list(pids.values()))


@pytest.mark.parametrize("kind", ["ssl", "tls"])
def test_workers_serve_tls(proxy_factory, tmp_path, kind):
    """Each worker serves an ssl: or tls: (SNI) listener itself: HTTPS requests are answered and h2 is offered."""
    ca = TestCA(tmp_path / "ca")
    leaf = ca.issue("localhost", "127.0.0.1")
    if kind == "ssl":
        listen = f"ssl:0:interface=127.0.0.1:privateKey={leaf.key}:certKey={leaf.cert}"
    else:
        (tmp_path / "certs").mkdir()
        shutil.copy(leaf.both, tmp_path / "certs" / "localhost.pem")
        listen = f"tls:{tmp_path / 'certs'}:port=0:interface=127.0.0.1"
    proxy = proxy_factory("--workers", "2", "--listen", listen)
    port = int(proxy.wait_for_log(rf"listening on https://127\.0\.0\.1:(\d+) \({kind}:").group(1))
    assert len(_worker_pids(proxy, 2)) == 2
    context = ssl.create_default_context(cafile=str(ca.ca_file))
    context.set_alpn_protocols(["h2", "http/1.1"])
    with context.wrap_socket(
        socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT), server_hostname="localhost"
    ) as sock:
        assert sock.selected_alpn_protocol() == "h2"
    context.set_alpn_protocols(["http/1.1"])
    for _ in range(10):  # new connections, spread over the workers' sockets
        connection = http.client.HTTPSConnection("127.0.0.1", port, timeout=TIMEOUT, context=context)
        connection.request("GET", "/echo")
        assert connection.getresponse().status == 200
        connection.close()
    assert "Traceback" not in "\n".join(proxy.log_lines())


def test_missing_key_file_is_a_clear_error(run_daemon, tmp_path):
    """An ssl: listener whose key file does not exist is a one-line option error, not a traceback."""
    result = run_daemon("--demo", "--listen", f"ssl:0:privateKey={tmp_path}/missing.pem")
    assert result.returncode == 2
    assert "invalid --listen endpoint" in result.stderr and "Traceback" not in result.stderr


def _get_over_unix(path) -> bytes:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(TIMEOUT)
        sock.connect(str(path))
        sock.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return sock.recv(12)


def test_workers_share_a_unix_socket_and_stop_cleanly(proxy_factory, tmp_path):
    """--workers 2 on a unix: listener: both serve it, a worker stopped with SIGTERM leaves the socket's path to
    its replacement, and SIGTERM to the supervisor stops everything without a traceback, the path removed."""
    path = tmp_path / "proxy.sock"
    proxy = proxy_factory("--workers", "2", "--listen", f"unix:{path}")
    serving = rf"worker (\d) \(pid (\d+)\) serving .*\(unix:{re.escape(str(path))}\)"
    pids = {int(m[1]): int(m[2]) for m in (re.search(serving, line) for line in proxy.wait_for_log_count(serving, 2))}
    assert _get_over_unix(path) == b"HTTP/1.1 200"
    os.kill(pids[1], signal.SIGTERM)
    proxy.wait_for_log(rf"worker 1 \(pid {pids[1]}\) exited after .*; restarting", TIMEOUT)
    proxy.wait_for_log_count(serving, 3, TIMEOUT)
    assert path.exists()
    for _ in range(4):
        assert _get_over_unix(path) == b"HTTP/1.1 200"
    proxy.process.send_signal(signal.SIGTERM)
    assert proxy.process.wait(TIMEOUT) in (0, -signal.SIGTERM)
    proxy.wait_for_log(r"Server Shut Down", TIMEOUT)
    trouble = [line for line in proxy.log_lines() if "Traceback" in line or "#critical]" in line or "Error" in line]
    assert trouble == []
    assert not path.exists()
