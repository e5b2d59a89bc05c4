"""
TLS through the real daemon: listening with ``ssl:`` (one certificate) and ``tls:`` (certificates chosen by SNI),
and ``https://`` upstreams verified (CA, host name, expiry), unverified on request, and with a client certificate.
Certificates are made at test time by a throwaway CA (``tests/_certs.py``).
"""

from __future__ import annotations

import datetime
import http.client
import http.server
import json
import shutil
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509

from tests._certs import TestCA

TIMEOUT = 20


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    return TestCA(tmp_path / "ca")


def tls_port(proxy: object) -> int:
    match = proxy.wait_for_log(r"listening on https://127\.0\.0\.1:(\d+) \((?:ssl|tls):")  # type: ignore[attr-defined]
    return int(match.group(1))


def handshake(port: int, context: ssl.SSLContext, name: str | None) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    return context.wrap_socket(raw, server_hostname=name)


def get(sock: ssl.SSLSocket, target: str, host: str) -> tuple[int, bytes]:
    """
    One request on an open connection; the status and body (``Content-Length`` framing).
    """
    sock.sendall(f"GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    reader = sock.makefile("rb")
    response = http.client.HTTPResponse(sock)
    response.fp = reader
    response.begin()
    return response.status, response.read()


# -- listening -------------------------------------------------------------------------------------------------


def test_ssl_listener(proxy_factory: Callable[..., object], ca: TestCA) -> None:
    """An ssl: listener serves its certificate, HTTP/1.1 to a client that asks for it over ALPN, and tells the
    upstream the proto is https."""
    leaf = ca.issue("localhost")
    proxy = proxy_factory("--listen", f"ssl:0:interface=127.0.0.1:privateKey={leaf.key}:certKey={leaf.cert}")
    port = tls_port(proxy)
    context = ssl.create_default_context(cafile=str(ca.ca_file))
    context.set_alpn_protocols(["http/1.1"])
    with handshake(port, context, "localhost") as sock:
        assert sock.selected_alpn_protocol() == "http/1.1"
        status, body = get(sock, "/echo", "localhost")
    assert status == 200
    headers = {name.lower(): value for name, value in json.loads(body)["headers"]}
    assert headers["x-forwarded-proto"] == "https"
    assert "proto=https" in headers["forwarded"]


@pytest.mark.parametrize(("flags", "chosen"), [((), "h2"), (("--no-http2",), "http/1.1")])
def test_alpn(proxy_factory: Callable[..., object], ca: TestCA, flags: tuple[str, ...], chosen: str) -> None:
    """A TLS listener prefers h2 over ALPN, or offers HTTP/1.1 alone with --no-http2."""
    leaf = ca.issue("localhost")
    proxy = proxy_factory("--listen", f"ssl:0:interface=127.0.0.1:privateKey={leaf.key}:certKey={leaf.cert}", *flags)
    context = ssl.create_default_context(cafile=str(ca.ca_file))
    context.set_alpn_protocols(["h2", "http/1.1"])
    with handshake(tls_port(proxy), context, "localhost") as sock:
        assert sock.selected_alpn_protocol() == chosen


def served_names(sock: ssl.SSLSocket) -> list[str]:
    """
    The DNS names of the certificate the server sent (read without verifying it).
    """
    cert = x509.load_der_x509_certificate(sock.getpeercert(binary_form=True))
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)


def sni_directory(ca: TestCA, tmp_path: Path) -> Path:
    """
    A tls: directory: a default certificate (its file sorts first), one for a.example, a wildcard for *.b.example.
    """
    certs = tmp_path / "certs"
    certs.mkdir()
    for names, stem in ((("default.example",), "00-default"), (("a.example",), "a"), (("*.b.example",), "b")):
        shutil.copy(ca.issue(*names, stem=stem).both, certs / f"{stem}.pem")
    return certs


def test_sni_listener(proxy_factory: Callable[..., object], ca: TestCA, tmp_path: Path) -> None:
    """A tls: listener picks the certificate for the name the client sends (wildcards included), serves the
    default one to a client with no name or an unknown one, offers h2 over ALPN, and logs nothing per handshake."""
    proxy = proxy_factory("--listen", f"tls:{sni_directory(ca, tmp_path)}:port=0:interface=127.0.0.1")
    port = tls_port(proxy)
    logged = len(proxy.log_lines())  # type: ignore[attr-defined]
    context = ssl.create_default_context(cafile=str(ca.ca_file))
    for name, names in (("a.example", ["a.example"]), ("x.b.example", ["*.b.example"])):
        with handshake(port, context, name) as sock:  # verification checks the name against the certificate
            assert served_names(sock) == names
            assert get(sock, "/echo", name)[0] == 200
    context.set_alpn_protocols(["h2", "http/1.1"])
    with handshake(port, context, "a.example") as sock:
        assert sock.selected_alpn_protocol() == "h2"
    unverified = ssl.create_default_context()
    unverified.check_hostname, unverified.verify_mode = False, ssl.CERT_NONE
    for name in (None, "unknown.example"):
        with handshake(port, unverified, name) as sock:
            assert served_names(sock) == ["default.example"]
            assert get(sock, "/echo", "unknown.example")[0] == 200
    proxy.wait_for_log_count(r"GET /echo", 4)  # type: ignore[attr-defined]  # (the access log: one line a request)
    later = proxy.log_lines()[logged:]  # type: ignore[attr-defined]
    assert [line for line in later if "#warn" in line or "#error" in line] == []


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
@pytest.mark.parametrize("kind", ["ssl", "tls"])
def test_old_tls_refused(proxy_factory: Callable[..., object], ca: TestCA, tmp_path: Path, kind: str) -> None:
    """TLS listeners refuse TLS 1.1 (TLS 1.2 is the least they speak) and accept TLS 1.2."""
    if kind == "ssl":
        leaf = ca.issue("a.example")
        listen = f"ssl:0:interface=127.0.0.1:privateKey={leaf.key}:certKey={leaf.cert}"
    else:
        listen = f"tls:{sni_directory(ca, tmp_path)}:port=0:interface=127.0.0.1"
    port = tls_port(proxy_factory("--listen", listen))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    context.set_ciphers("DEFAULT:@SECLEVEL=0")  # so that this client itself would speak TLS 1.1
    context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises(ssl.SSLError, match=r"PROTOCOL_VERSION|protocol version"):
        handshake(port, context, "a.example")
    context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1_2
    with handshake(port, context, "a.example") as sock:
        assert sock.version() == "TLSv1.2"


@pytest.mark.parametrize("problem", ["empty directory", "bad file", "key of another certificate", "not a certificate"])
def test_unusable_listener_files(run_daemon: Callable[..., object], ca: TestCA, tmp_path: Path, problem: str) -> None:
    """TLS listener files that cannot serve are a one-line option error at start, with exit status 2."""
    leaf, other = ca.issue("a.example"), ca.issue("b.example")
    certs = tmp_path / "certs"
    certs.mkdir()
    if problem == "empty directory":
        listen, message = f"tls:{certs}:port=0", "no private key with its certificate"
    elif problem == "bad file":
        (certs / "a.pem").write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
        listen, message = f"tls:{certs}:port=0", "a.pem' cannot be loaded"
    elif problem == "key of another certificate":
        listen, message = f"ssl:0:privateKey={other.key}:certKey={leaf.cert}", "keys do not match"
    else:
        listen, message = f"ssl:0:privateKey={leaf.key}:certKey={leaf.key}", "invalid --listen endpoint"
    result = run_daemon("--demo", "--listen", listen)
    assert result.returncode == 2  # type: ignore[attr-defined]
    lines = result.stderr.strip().splitlines()  # type: ignore[attr-defined]
    assert len(lines) == 1 and "invalid --listen endpoint" in lines[0] and message in lines[0]


# -- https upstreams -------------------------------------------------------------------------------------------


class TLSOrigin:
    """
    An HTTPS origin in a thread (``http.server`` over ``ssl``): answers every GET with ``ok``, keeps connections
    alive and counts them, and records the name each client sent (SNI).
    """

    def __init__(self, cert: Path, key: Path, client_ca: Path | None = None) -> None:
        origin = self
        self.connections = 0
        self.server_names: list[str | None] = []  # what each TLS client sent as SNI

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                origin.connections += 1
                super().setup()

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(cert), str(key))
        context.sni_callback = lambda sslobj, name, ctx: self.server_names.append(name)
        if client_ca is not None:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(str(client_ca))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.handle_error = lambda request, address: None  # type: ignore[method-assign]
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def tls_origin() -> Iterator[Callable[..., TLSOrigin]]:
    started: list[TLSOrigin] = []

    def start(cert: Path, key: Path, client_ca: Path | None = None) -> TLSOrigin:
        origin = TLSOrigin(cert, key, client_ca)
        started.append(origin)
        return origin

    yield start
    for origin in started:
        origin.close()


def statuses(proxy: object, count: int) -> list[int]:
    connection = proxy.connection()  # type: ignore[attr-defined]
    found = []
    for _ in range(count):
        connection.request("GET", "/")
        response = connection.getresponse()
        response.read()
        found.append(response.status)
    return found


def test_verified_upstream_keeps_alive(proxy_factory, ca, tls_origin) -> None:
    """An https upstream verified against --upstream-ca answers, and one TLS connection carries every request."""
    leaf = ca.issue("localhost", "127.0.0.1")
    origin = tls_origin(leaf.cert, leaf.key)
    proxy = proxy_factory("--upstream-ca", str(ca.ca_file), upstream=f"https://127.0.0.1:{origin.port}")
    assert statuses(proxy, 3) == [200, 200, 200]
    assert origin.connections == 1


def test_upstream_by_name_gets_sni(proxy_factory, ca, tls_origin) -> None:
    """An https upstream named by host name is sent that name (SNI) and verified against it; an IP address is sent
    no name."""
    leaf = ca.issue("localhost", "127.0.0.1")
    origin = tls_origin(leaf.cert, leaf.key)
    by_name = proxy_factory("--upstream-ca", str(ca.ca_file), upstream=f"https://localhost:{origin.port}")
    assert statuses(by_name, 2) == [200, 200]
    by_address = proxy_factory("--upstream-ca", str(ca.ca_file), upstream=f"https://127.0.0.1:{origin.port}")
    assert statuses(by_address, 1) == [200]
    assert origin.server_names == ["localhost", None]


@pytest.mark.parametrize(
    ("issue", "host", "reason"),
    [
        ("other-ca", "127.0.0.1", "certificate verify failed: unable to get local issuer certificate"),
        ("wrong-name", "127.0.0.1", "hostname mismatch: the certificate is not valid for 127.0.0.1"),
        ("expired", "127.0.0.1", "certificate verify failed: certificate has expired"),
    ],
)
def test_failed_verification(proxy_factory, ca, tls_origin, tmp_path, issue, host, reason) -> None:
    """A certificate that fails verification gets the client a 502 and the proxy logs why."""
    if issue == "other-ca":
        leaf = TestCA(tmp_path / "other").issue("127.0.0.1")
    elif issue == "wrong-name":
        leaf = ca.issue("other.example")
    else:
        past = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=1)
        leaf = ca.issue("127.0.0.1", not_before=past - datetime.timedelta(days=30), not_after=past)
    origin = tls_origin(leaf.cert, leaf.key)
    proxy = proxy_factory("--upstream-ca", str(ca.ca_file), upstream=f"https://{host}:{origin.port}")
    assert statuses(proxy, 1) == [502]
    proxy.wait_for_log("502 TLS with upstream failed: " + reason.replace(".", r"\."))


def test_stalled_handshake(proxy_factory, tmp_path) -> None:
    """An upstream that accepts TCP but never answers the TLS handshake gets the client a 504 at the connect
    timeout (not the much longer response timeout)."""
    with socket.create_server(("127.0.0.1", 0)) as silent:
        url = f"https://127.0.0.1:{silent.getsockname()[1]}"
        flags = ("--upstream-insecure", "--connect-timeout", "1", "--response-timeout", "300")
        proxy = proxy_factory(*flags, upstream=url)
        assert statuses(proxy, 1) == [504]
        proxy.wait_for_log("504 connecting to upstream timed out after 1s")


def test_insecure_upstream(proxy_factory, tls_origin, tmp_path) -> None:
    """--upstream-insecure relays to an upstream nobody can verify, and warns at start."""
    leaf = TestCA(tmp_path / "unknown").issue("nobody.example")
    origin = tls_origin(leaf.cert, leaf.key)
    proxy = proxy_factory("--upstream-insecure", upstream=f"https://127.0.0.1:{origin.port}")
    assert statuses(proxy, 2) == [200, 200]
    proxy.wait_for_log(r"--upstream-insecure: the certificate and name of https://127\.0\.0\.1:\d+ are not verified")


def test_client_certificate(proxy_factory, ca, tls_origin) -> None:
    """An upstream requiring a client certificate accepts --upstream-client-cert and refuses a proxy without one."""
    leaf = ca.issue("127.0.0.1")
    client = ca.issue("txrevproxy.client", stem="client")
    origin = tls_origin(leaf.cert, leaf.key, client_ca=ca.ca_file)
    url = f"https://127.0.0.1:{origin.port}"
    with_cert = proxy_factory(
        "--upstream-ca", str(ca.ca_file), "--upstream-client-cert", str(client.both), upstream=url
    )
    assert statuses(with_cert, 2) == [200, 200]
    without = proxy_factory("--upstream-ca", str(ca.ca_file), upstream=url)
    assert statuses(without, 1) == [502]
    without.wait_for_log(r"502 TLS with upstream failed: .*certificate required")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--upstream", "http://127.0.0.1:1", "--upstream-insecure"], "--upstream-insecure needs an https:// upstream"),
        (["--upstream", "https://127.0.0.1:1", "--upstream-ca", "/nonexistent.pem"], "cannot read the CA file"),
        (
            ["--upstream", "https://127.0.0.1:1", "--upstream-ca", "CA", "--upstream-insecure"],
            "give either --upstream-ca or --upstream-insecure, not both",
        ),
    ],
)
def test_upstream_tls_option_errors(run_daemon, ca, flags, message) -> None:
    """Upstream TLS options that cannot work are one-line option errors."""
    flags = [str(ca.ca_file) if flag == "CA" else flag for flag in flags]
    result = run_daemon(*flags)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
