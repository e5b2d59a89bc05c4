"""
The servers under test and their origins, each started as a child process on 127.0.0.1:

- ``origin``: nginx serving static files, keep-alive, one worker;
- ``txrevproxy``: the twistd daemon as the ``txrevproxy`` console script runs it (``--reactor=txrevproxy``), by
  this very Python; again with ``--workers 2``, and with ``--busy-poll-us 50``; and (``run.py --baseline REV``) the
  same daemon with an earlier commit's package and plugin first on PYTHONPATH, ``txrevproxy @SHORTHASH``;
- ``twisted.web.proxy``: ``twisted_web_proxy.py``, the reference;
- ``nginx``: nginx ``proxy_pass`` with upstream keep-alive, one worker;
- the proxies again on a TLS listener (txrevproxy and nginx offering HTTP/2 too), with a certificate made by trustme;
- ``slow origin``: ``slow_origin.py``, reads request bodies at a fixed rate.

nginx gets a private configuration in the run's temporary directory (its own pid, log and temp paths).
"""

from __future__ import annotations

import os
import re
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from benchmarks import _baseline, _procs
from benchmarks._procs import Child

HERE = Path(__file__).resolve().parent
LISTENING = r"listening on (https?)://127\.0\.0\.1:(\d+)"

DIRECT = "direct"
TXREVPROXY = "txrevproxy"
TXREVPROXY_2 = "txrevproxy --workers 2"
TXREVPROXY_BUSY = "txrevproxy --busy-poll-us 50"
#: txrevproxy as run by the benchmark with options beyond the defaults: the options, and the name of its log.
TXREVPROXY_VARIANTS = {
    TXREVPROXY: ([], "txrevproxy.log"),
    TXREVPROXY_2: (["--workers", "2"], "txrevproxy-2.log"),
    TXREVPROXY_BUSY: (["--busy-poll-us", "50"], "txrevproxy-busy-poll.log"),
}
TWISTED = "twisted.web.proxy"
NGINX = "nginx"
PROXIES = (TXREVPROXY, TWISTED, NGINX)

# The files the origin serves: URL path -> size in bytes.
STATIC_FILES = {"/12b": 12, "/1k": 1024, "/1m": 1024 * 1024}


@dataclass(frozen=True)
class Tools:
    wrk: str | None
    nginx: str | None
    h2load: str | None = None


@dataclass(frozen=True)
class Certificate:
    """
    PEM files for 127.0.0.1: ``cert`` (the leaf, then its chain) and ``key``.
    """

    cert: Path
    key: Path


def write_certificate(directory: Path) -> Certificate:
    """
    A certificate for 127.0.0.1 from a throwaway CA (wrk and h2load do not verify it), written under ``directory``.
    """
    import trustme  # in txrevproxy's [test] extra; without it the runner skips the TLS scenarios

    leaf = trustme.CA().issue_cert("127.0.0.1", "localhost")
    cert, key = directory / "cert.pem", directory / "key.pem"
    leaf.private_key_pem.write_to_path(str(key))
    for i, pem in enumerate(leaf.cert_chain_pems):
        pem.write_to_path(str(cert), append=i > 0)
    return Certificate(cert, key)


def write_static_files(root: Path, big_size: int) -> dict[str, int]:
    """
    Write the origin's files (and one ``/big`` file of ``big_size`` bytes for the slow reader); return path -> size.
    """
    root.mkdir(parents=True, exist_ok=True)
    files = dict(STATIC_FILES, **{"/big": big_size})
    for path, size in files.items():
        with open(root / path.lstrip("/"), "wb") as f:
            if size == 12:
                f.write(b"hello world\n")
            else:
                f.write(b"x" * min(size, 1 << 20))
                f.truncate(size)  # the rest is a hole: no disk space, reads as zeros
    return files


def _nginx_main(workdir: Path, name: str) -> str:
    """
    The top of an nginx configuration: foreground, one worker, every path private to ``workdir``.
    """
    # As root, nginx's worker would run as nobody and could not read our 0700 temp dir.
    user = "user root root;\n" if os.geteuid() == 0 else ""
    return f"""\
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile {_procs.NOFILE};
{user}pid {workdir}/{name}.pid;
error_log {workdir}/{name}-error.log warn;
events {{ worker_connections 8192; }}
"""


def _nginx_http_common(workdir: Path, name: str) -> str:
    temp = workdir / f"{name}-temp"
    return f"""\
    client_body_temp_path {temp}/client_body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    default_type application/octet-stream;
    keepalive_timeout 300s;
    keepalive_requests 1000000;
"""


def origin_config(workdir: Path, port: int, root: Path) -> str:
    return f"""{_nginx_main(workdir, "origin")}
http {{
{_nginx_http_common(workdir, "origin")}
    access_log off;
    sendfile on;
    tcp_nopush on;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {root};
        location / {{ }}
    }}
}}
"""


def _nginx_listen(port: int, cert: Certificate | None) -> str:
    if cert is None:
        return f"listen 127.0.0.1:{port} backlog=4096;"
    # Like txrevproxy's TLS listener: HTTP/2 and HTTP/1.1 over ALPN on one port, TLS 1.2 or newer (nginx 1.22 does
    # not offer 1.3 unless told), a full handshake per connection (no session tickets, no session cache).
    return f"""listen 127.0.0.1:{port} ssl http2 backlog=4096;
        ssl_certificate {cert.cert};
        ssl_certificate_key {cert.key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_tickets off;"""


def nginx_proxy_config(workdir: Path, port: int, upstream_port: int, cert: Certificate | None = None) -> str:
    return f"""{_nginx_main(workdir, "nginx")}
http {{
{_nginx_http_common(workdir, "nginx")}
    access_log {workdir}/nginx-access.log;
    upstream origin {{
        server 127.0.0.1:{upstream_port};
        keepalive 64;
    }}
    server {{
        {_nginx_listen(port, cert)}
        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


def _start_nginx(nginx: str, workdir: Path, name: str, config: str, port: int) -> Child:
    conf = workdir / f"{name}.conf"
    conf.write_text(config)
    (workdir / f"{name}-temp").mkdir(exist_ok=True)
    error_log = workdir / f"{name}-error.log"
    argv = [nginx, "-p", str(workdir), "-e", str(error_log), "-c", str(conf)]
    child = _procs.start(name, argv, workdir / f"{name}.out")
    child.port = port
    child.error_log = error_log
    try:
        _procs.wait_for_port(child)
    except BaseException:
        _procs.stop(child)
        raise
    return child


def start_origin(tools: Tools, workdir: Path, root: Path) -> Child:
    assert tools.nginx
    port = _procs.free_port()
    return _start_nginx(tools.nginx, workdir, "origin", origin_config(workdir, port, root), port)


def tls_endpoint(cert: Certificate) -> str:
    """
    The Twisted endpoint string of a TLS listener on a free port of 127.0.0.1 with ``cert``.
    """
    return f"ssl:0:interface=127.0.0.1:backlog=4096:privateKey={cert.key}:certKey={cert.cert}"


def txrevproxy_command(
    kind: str, workdir: Path, upstream_port: int, cert: Certificate | None = None, baseline: Path | None = None
) -> tuple[list[str], Path, dict[str, str] | None]:
    """
    The command line, log file and environment (None: this process's) of the txrevproxy variant ``kind``: the
    baseline's is the default's command line with the tree exported to ``baseline`` first on PYTHONPATH.
    """
    # ``python -m twisted.scripts.twistd`` is a silent no-op (that module has no __main__ block), so call
    # its run() ourselves: the same interpreter and the same twistd command line as the console script
    # ``txrevproxy`` runs (on txrevproxy's reactor).
    argv = [
        sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
        "-n", "--pidfile=", "--reactor=txrevproxy", "txrevproxy",
        "--listen", tls_endpoint(cert) if cert else "tcp:0:interface=127.0.0.1",
        "--upstream", f"http://127.0.0.1:{upstream_port}",
    ]  # fmt: skip
    if kind in TXREVPROXY_VARIANTS:
        options, log_name = TXREVPROXY_VARIANTS[kind]
        return argv + options, workdir / log_name, None
    if not _baseline.is_baseline(kind):
        raise ValueError(f"{kind!r} is no txrevproxy variant")
    if baseline is None:
        raise ValueError(f"{kind}: no baseline directory")
    return argv, workdir / "txrevproxy-baseline.log", _baseline.environment(baseline)


def start_proxy(
    kind: str,
    tools: Tools,
    workdir: Path,
    upstream_port: int,
    cert: Certificate | None = None,
    baseline: Path | None = None,
) -> Child:
    """
    Start one proxy of ``kind`` (``PROXIES``, a txrevproxy variant, or the baseline exported to ``baseline``) in
    front of 127.0.0.1:``upstream_port`` and wait until it listens: plain HTTP, or TLS with ``cert`` (txrevproxy and
    nginx offering HTTP/2 there too; twisted.web.proxy only HTTP/1.1).
    """
    if kind in TXREVPROXY_VARIANTS or _baseline.is_baseline(kind):
        argv, log_path, env = txrevproxy_command(kind, workdir, upstream_port, cert, baseline)
        # In the working directory, which has no twisted/plugins/: from the repository root, the current directory
        # (first on a ``-c`` interpreter's sys.path) would give twistd this tree's plugin before the baseline's.
        return _start_reporting_port(kind, argv, log_path, env=env, cwd=workdir)
    if kind == TWISTED:
        argv = [sys.executable, str(HERE / "twisted_web_proxy.py"), str(upstream_port)]
        argv += [tls_endpoint(cert)] if cert else []
        return _start_reporting_port(kind, argv, workdir / "twisted-web-proxy.log")
    if kind == NGINX:
        assert tools.nginx
        port = _procs.free_port()
        config = nginx_proxy_config(workdir, port, upstream_port, cert)
        child = _start_nginx(tools.nginx, workdir, NGINX, config, port)
        child.scheme = "https" if cert else "http"
        return child
    raise ValueError(f"unknown proxy {kind!r}")


def start_slow_origin(workdir: Path, rate: int) -> Child:
    argv = [sys.executable, str(HERE / "slow_origin.py"), "--rate", str(rate)]
    return _start_reporting_port("slow origin", argv, workdir / "slow-origin.log")


def _start_reporting_port(
    name: str, argv: list[str], log_path: Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> Child:
    child = _procs.start(name, argv, log_path, env=env, cwd=cwd)
    try:
        child.scheme, port = _procs.wait_for_log(child, LISTENING).groups()
        child.port = int(port)
    except BaseException:
        _procs.stop(child)
        raise
    return child


_TROUBLE = (
    "Unhandled",
    "#warn]",
    "#error]",
    "#critical]",
    "[error]",
    "[crit]",
    "[alert]",
    "[emerg]",
)
# The timestamps that start twistd's, twisted.python.log's and nginx's log lines.
_TIMESTAMP = re.compile(r"^\d{4}[-/]\d\d[-/]\d\d[T ]\d\d:\d\d:\d\d(?:[+-]\d{4})?\s+")


def log_issues(child: Child, limit: int = 8) -> list[str]:
    """
    Trouble in a child's logs, counted: each traceback by its exception line, each warning or error line by its
    text with the numbers blurred (so that one repeated problem is one entry), most frequent first.
    """
    text = child.log_text()
    if child.error_log is not None and child.error_log.exists():
        text += "\n" + child.error_log.read_text(errors="replace")
    counts: Counter[str] = Counter()
    examples: dict[str, str] = {}
    for line in _trouble_lines(text.splitlines()):
        message = _TIMESTAMP.sub("", line.strip())
        key = re.sub(r"\d+", "N", message)
        counts[key] += 1
        examples.setdefault(key, message)
    found = [f"{n}× {examples[key]}" for key, n in counts.most_common(limit)]
    if len(counts) > limit:
        found.append(f"... and {len(counts) - limit} other kinds")
    return found


def _trouble_lines(lines: list[str]) -> Iterator[str]:
    """
    The exception line of every traceback (what follows its ``File``/source line pairs) and every warning line.
    """
    in_traceback = skip_source = False
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("Traceback"):
            in_traceback = True
        elif in_traceback and skip_source:
            skip_source = False
        elif in_traceback and stripped.startswith("File "):
            skip_source = True
        elif in_traceback:
            in_traceback = False
            yield "Traceback: " + stripped
        elif any(marker in line for marker in _TROUBLE) and "Unhandled Error" not in line:
            yield line
