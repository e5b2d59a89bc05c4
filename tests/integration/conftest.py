"""
Fixtures for the loopback integration tests: a fake origin (``origin.py``) and the real ``twistd -n txrevproxy``
daemon, each a child process on 127.0.0.1 port 0, killed at teardown.

``origin``
    an :class:`Origin` (``.port``, ``.url``, ``.stats(**query)``), fresh for every test so its counters start at 0.
``proxy_factory``
    ``proxy_factory(*flags, upstream=URL)`` starts a daemon with ``--listen tcp:0:interface=127.0.0.1``, the
    ``--upstream`` (the origin's URL unless given; ``upstream=None`` for none, e.g. with ``--demo``) and the extra
    flags (``reactor=NAME``: twistd's ``--reactor``), waits until it logs ``listening on http://127.0.0.1:PORT`` and
    returns a :class:`Proxy` (``.port``,
    ``.url``, ``.log_lines()``, ``.wait_for_log(regex)``, ``.wait_for_log_count(regex, n)``). ``nofile=N`` starts
    it with ``RLIMIT_NOFILE`` set to ``(N, N)`` (set by the child itself before it runs ``twistd``: ``preexec_fn``
    is not safe while the output reader threads run).
``proxy``
    a daemon with default flags in front of ``origin``.
``run_daemon``
    ``run_daemon(*args, timeout=20)`` runs ``twistd -n --pidfile= txrevproxy *args`` to completion and returns the
    ``subprocess.CompletedProcess`` (text stdout and stderr), for command-line errors.

``twistd`` is started as ``python -c "from twisted.scripts.twistd import run; run()"``: ``python -m
twisted.scripts.twistd`` runs nothing, that module having no ``__main__`` block.

Waits are bounded by timeouts and never fixed sleeps.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
STARTUP_TIMEOUT = 20.0
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
# The proxy's own listening line; with --demo the embedded origin logs "demo origin listening on ..." first.
_PROXY_LISTENING = re.compile(r"(?<!origin )listening on http://127\.0\.0\.1:(\d+)")


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    return env


class OutputReader:
    """
    Collects a child process's stdout lines in a background thread so that tests can wait for and assert on them.
    """

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self._lines: list[str] = []
        self._done = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self._lines.append(line.rstrip("\r\n"))
                self._changed.notify_all()
        with self._changed:
            self._done = True
            self._changed.notify_all()

    def lines(self) -> list[str]:
        with self._changed:
            return list(self._lines)

    def wait_for(self, pattern: re.Pattern[str] | str, timeout: float) -> re.Match[str]:
        """
        The first match of ``pattern`` in a collected line, waiting up to ``timeout`` seconds for one to arrive.
        """
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self._lines:
                    match = regex.search(line)
                    if match:
                        return match
                remaining = deadline - time.monotonic()
                if self._done or remaining <= 0:
                    output = "\n".join(self._lines)
                    why = "exited" if self._done else f"did not log it within {timeout} s"
                    raise AssertionError(f"no line matching {regex.pattern!r}; the process {why}; output:\n{output}")
                self._changed.wait(remaining)

    def wait_for_count(self, pattern: re.Pattern[str] | str, count: int, timeout: float) -> list[str]:
        """
        The collected lines matching ``pattern`` once there are at least ``count``, waiting up to ``timeout`` seconds.
        """
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                matching = [line for line in self._lines if regex.search(line)]
                if len(matching) >= count:
                    return matching
                remaining = deadline - time.monotonic()
                if self._done or remaining <= 0:
                    output = "\n".join(self._lines)
                    why = "exited" if self._done else f"did not log them within {timeout} s"
                    raise AssertionError(
                        f"{len(matching)} of {count} lines matching {regex.pattern!r}; the process {why}; output:\n"
                        f"{output}"
                    )
                self._changed.wait(remaining)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


def stop(process: subprocess.Popen[str], reader: OutputReader | None = None) -> None:
    """
    End the child (SIGTERM, then SIGKILL after 5 s) and close its pipe.
    """
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
    if reader is not None:
        reader.join(5)
    if process.stdout is not None:
        process.stdout.close()


class Origin:
    def __init__(self, process: subprocess.Popen[str], port: int) -> None:
        self.process = process
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    def stats(self, **query: object) -> dict[str, int]:
        """
        The origin's ``/stats`` over a new direct connection (counted in ``accepted``); ``query`` as in origin.py.
        """
        target = "/stats"
        if query:
            target += "?" + "&".join(f"{k}={v}" for k, v in query.items())
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.request("GET", target)
            response = connection.getresponse()
            assert response.status == 200
            return json.loads(response.read())
        finally:
            connection.close()


class Proxy:
    def __init__(self, process: subprocess.Popen[str], reader: OutputReader, port: int) -> None:
        self.process = process
        self.reader = reader
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.host = f"127.0.0.1:{port}"
        self._opened: list[http.client.HTTPConnection] = []

    def log_lines(self) -> list[str]:
        """
        Every line the daemon has written to stdout/stderr so far.
        """
        return self.reader.lines()

    def wait_for_log(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        return self.reader.wait_for(pattern, timeout)

    def wait_for_log_count(self, pattern: str, count: int, timeout: float = 10.0) -> list[str]:
        return self.reader.wait_for_count(pattern, count, timeout)

    def connection(self, timeout: float = 30.0) -> http.client.HTTPConnection:
        """
        A new client connection to the proxy, closed at teardown if the test has not closed it.
        """
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        self._opened.append(connection)
        return connection

    def close_connections(self) -> None:
        for connection in self._opened:
            connection.close()


@pytest.fixture
def run_daemon(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    def run(*args: str, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*TWISTD, "-n", "--pidfile=", "txrevproxy", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=child_env(),
            cwd=tmp_path,
        )

    return run


@pytest.fixture
def origin() -> Iterator[Origin]:
    process = subprocess.Popen(
        [sys.executable, str(HERE / "origin.py")],
        stdout=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    reader = OutputReader(process)
    try:
        port = int(reader.wait_for(r"^origin listening on (\d+)$", STARTUP_TIMEOUT).group(1))
        yield Origin(process, port)
    finally:
        stop(process, reader)


_DEFAULT = object()


@pytest.fixture
def proxy_factory(origin: Origin, tmp_path: Path) -> Iterator[Callable[..., Proxy]]:
    started: list[Proxy] = []

    def start(*flags: str, upstream: object = _DEFAULT, nofile: int | None = None, reactor: str | None = None) -> Proxy:
        argv = [*TWISTD, "-n", "--pidfile=", *([f"--reactor={reactor}"] if reactor else [])]
        argv += ["txrevproxy", "--listen", "tcp:0:interface=127.0.0.1"]
        if nofile is not None:
            limit = f"import resource; resource.setrlimit(resource.RLIMIT_NOFILE, ({nofile:d}, {nofile:d})); "
            argv[2] = limit + argv[2]
        if upstream is _DEFAULT:
            upstream = origin.url
        if upstream is not None:
            argv += ["--upstream", str(upstream)]
        argv += flags
        process = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=child_env(),
            cwd=tmp_path,
        )
        reader = OutputReader(process)
        try:
            port = int(reader.wait_for(_PROXY_LISTENING, STARTUP_TIMEOUT).group(1))
        except BaseException:
            stop(process, reader)
            raise
        proxy = Proxy(process, reader, port)
        started.append(proxy)
        return proxy

    try:
        yield start
    finally:
        for proxy in started:
            proxy.close_connections()
            stop(proxy.process, proxy.reader)


@pytest.fixture
def proxy(proxy_factory: Callable[..., Proxy]) -> Proxy:
    return proxy_factory()
