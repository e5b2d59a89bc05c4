"""
Loopback tests of the daemon's connection gate: ``--allow``/``--deny``, ``--max-connections``, the cap fitted to
the open-file limit, and the accept back-off when the process runs out of file descriptors.

A refused connection is accepted and closed by the daemon before it reads a byte: the client sees EOF (or a reset,
if its own bytes arrived after the close) and no HTTP response. No test sleeps; every wait is bounded.
"""

from __future__ import annotations

import http.client
import os
import re
import resource
import socket
import ssl
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.integration.conftest import Proxy

SOCKET_TIMEOUT = 10.0
linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not hasattr(resource, "prlimit"),
    reason="needs /proc and prlimit",
)


def refused(port: int) -> bytes:
    """
    Connect, send a request, and read until the daemon closes: the bytes received (expected: none).

    Fails if the daemon keeps the connection open for SOCKET_TIMEOUT seconds.
    """
    received = b""
    try:
        # (Under load the reset may come before connect() has even returned.)
        with socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT) as client:
            client.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
            while True:
                data = client.recv(65536)
                if not data:
                    break
                received += data
    except (ConnectionResetError, BrokenPipeError):
        pass
    except TimeoutError:
        pytest.fail(f"the connection was held open for {SOCKET_TIMEOUT} s, not closed at once")
    return received


def get(proxy: Proxy, target: str = "/echo") -> int:
    """
    The status of a GET through the proxy on a new connection.
    """
    connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=SOCKET_TIMEOUT)
    try:
        connection.request("GET", target)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def held_connection(proxy: Proxy) -> http.client.HTTPConnection:
    """
    A keep-alive connection that has been served one request and is now idle, held open by the daemon.
    """
    connection = proxy.connection(timeout=SOCKET_TIMEOUT)
    connection.request("GET", "/echo")
    response = connection.getresponse()
    response.read()
    assert response.status == 200
    return connection


def cpu_seconds(pid: int) -> float:
    """
    User plus system CPU time of process ``pid``, from ``/proc/PID/stat``.
    """
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # After the command name: state is field 3, utime and stime are fields 14 and 15 (proc(5)).
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.parametrize(
    "flags, rule",
    [
        (["--deny", "127.0.0.0/8"], "deny 127.0.0.0/8"),
        (["--allow", "10.0.0.0/8"], "no allow network matches"),
        (["--allow", "127.0.0.0/8", "--deny", "127.0.0.1"], "deny 127.0.0.1/32"),
    ],
)
def test_refused_client_is_closed_without_a_response(
    proxy_factory: Callable[..., Proxy], flags: list[str], rule: str
) -> None:
    """A client outside the access rules is closed at once, gets no HTTP bytes, and the refusal is logged."""
    proxy = proxy_factory(*flags)
    assert refused(proxy.port) == b""
    proxy.wait_for_log(re.escape(f"refused connection from 127.0.0.1: {rule}"))


def test_allowed_client_is_served(proxy_factory: Callable[..., Proxy]) -> None:
    """A client inside --allow gets its response as usual."""
    proxy = proxy_factory("--allow", "127.0.0.1/32", "--deny", "10.0.0.0/8")
    assert get(proxy) == 200
    assert not [line for line in proxy.log_lines() if "refused connection" in line]


def test_connection_cap_closes_the_extra_connection_until_one_closes(proxy_factory: Callable[..., Proxy]) -> None:
    """At --max-connections 3, three idle connections are held, a fourth is closed at once, then one fits again."""
    proxy = proxy_factory("--max-connections", "3")
    held = [held_connection(proxy) for _ in range(3)]
    assert refused(proxy.port) == b""
    proxy.wait_for_log(r"refused connection from 127\.0\.0\.1: 3 connections open, at --max-connections 3")
    for connection in held[1:]:  # still served
        connection.request("GET", "/echo")
        assert connection.getresponse().read()
    held[0].close()
    # The daemon learns of the close asynchronously: retry until the freed slot is used, within a bound.
    deadline = time.monotonic() + SOCKET_TIMEOUT
    while True:
        try:
            assert get(proxy) == 200
            break
        except (ConnectionError, http.client.RemoteDisconnected):
            if time.monotonic() > deadline:
                raise


@linux_only
def test_cap_fits_a_low_open_file_limit(proxy_factory: Callable[..., Proxy]) -> None:
    """Under RLIMIT_NOFILE 128 the cap is lowered so that connections past it are refused before fds run out."""
    proxy = proxy_factory("--pool-size", "4", nofile=128)
    cap = int(
        proxy.wait_for_log(r"--max-connections 10000 lowered to (\d+) to fit the open-file limit of 128").group(1)
    )
    assert 10 <= cap < 64
    held = [held_connection(proxy) for _ in range(cap)]
    for _ in range(3):
        assert refused(proxy.port) == b""
    proxy.wait_for_log(rf"at --max-connections {cap}")
    for connection in held:  # every held connection can still reach the upstream
        connection.request("GET", "/echo")
        assert connection.getresponse().read()
    assert not [line for line in proxy.log_lines() if "EMFILE" in line or "cannot accept" in line]


@linux_only
def test_out_of_file_descriptors_backs_off_instead_of_spinning(proxy_factory: Callable[..., Proxy]) -> None:
    """With no fd left, accepting pauses between attempts (low CPU, few log lines) and resumes when fds return."""
    proxy = proxy_factory("--accept-backoff", "0.25")
    pid = proxy.process.pid
    assert get(proxy) == 200
    soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    clients: list[socket.socket] = []
    pauses = 8
    try:
        before = cpu_seconds(pid)
        # fds 0-2 are open: no new descriptor fits, Twisted's own EMFILE reserve included.
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (3, hard))
        for _ in range(20):  # they wait in the listen backlog
            clients.append(socket.create_connection(("127.0.0.1", proxy.port), timeout=SOCKET_TIMEOUT))
        # Each pause logs our line and Twisted's "Could not accept"; a spinning daemon logs only the latter, fast.
        lines = proxy.wait_for_log_count(
            r"cannot accept connections on .*: EMFILE|Could not accept new connection", 2 * pauses, timeout=30
        )
        used = cpu_seconds(pid) - before
    finally:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
    pause_lines = [line for line in lines if "cannot accept connections on" in line]
    assert len(pause_lines) >= pauses - 1, f"{len(lines) - len(pause_lines)} failed accepts, {len(pause_lines)} pauses"
    # At least (pauses - 2) * 0.25 s passed out of descriptors; spinning would have used about that much CPU.
    assert used < 0.5, f"{used:.2f} s of CPU while out of file descriptors"
    for client in clients:  # the waiting clients are served once descriptors are back
        client.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert client.recv(12) == b"HTTP/1.1 200"
        client.close()
    assert get(proxy) == 200


def _self_signed_pem(path: Path) -> None:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    path.write_bytes(key_pem + cert.public_bytes(serialization.Encoding.PEM))


def test_refused_client_on_a_tls_listener_is_closed_cleanly(
    proxy_factory: Callable[..., Proxy], tmp_path: Path
) -> None:
    """On an ssl: listener a denied client is closed before the handshake, without an error in the log."""
    pem = tmp_path / "server.pem"
    _self_signed_pem(pem)
    proxy = proxy_factory("--listen", f"ssl:0:interface=127.0.0.1:privateKey={pem}", "--deny", "127.0.0.0/8")
    tls_port = int(proxy.wait_for_log(r"listening on https://127\.0\.0\.1:(\d+) \(ssl:").group(1))
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    # (Under load the reset may come before connect() has even returned.)
    with (
        pytest.raises((ssl.SSLError, ConnectionError, OSError)) as failed,
        socket.create_connection(("127.0.0.1", tls_port), timeout=SOCKET_TIMEOUT) as raw,
    ):
        context.wrap_socket(raw)
    assert not isinstance(failed.value, TimeoutError)
    proxy.wait_for_log(r"refused connection from 127\.0\.0\.1: deny 127\.0\.0\.0/8")
    assert refused(proxy.port) == b""  # the plain listener too
    assert not [line for line in proxy.log_lines() if "Traceback" in line or "Unhandled" in line]
