"""
The access log of a real daemon: on standard output by default, in a file, or off.
"""

from __future__ import annotations

import time

ACCESS_LINE = (
    r"^127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000\] "
    r'"GET /echo\?log HTTP/1\.1" 200 \d+ "-" "agent/1" \d+\.\d{3}$'
)


def _get(proxy) -> None:
    connection = proxy.connection(timeout=10)
    connection.request("GET", "/echo?log", headers={"User-Agent": "agent/1"})
    assert connection.getresponse().read()
    connection.close()


def test_access_log_on_stdout(proxy):
    """By default each request is one combined-format line on standard output, alone on its line."""
    _get(proxy)
    proxy.wait_for_log(ACCESS_LINE, timeout=10)


def test_access_log_to_a_file(proxy_factory, tmp_path):
    """--access-log FILE appends the lines to FILE, not to standard output."""
    path = tmp_path / "access.log"
    proxy = proxy_factory("--access-log", str(path))
    _get(proxy)
    deadline = time.monotonic() + 10
    while not (path.exists() and path.read_text().endswith("\n")):
        assert time.monotonic() < deadline, "no access log line in the file"
        time.sleep(0.05)
    assert '"GET /echo?log HTTP/1.1" 200' in path.read_text()
    assert not [line for line in proxy.log_lines() if "GET /echo?log" in line]


def test_access_log_off(proxy_factory):
    """--access-log off writes no request lines, not even when the daemon stops (which flushes the log)."""
    proxy = proxy_factory("--access-log", "off")
    _get(proxy)
    proxy.process.terminate()
    proxy.process.wait(10)
    proxy.wait_for_log(r"Server Shut Down", timeout=10)
    assert not [line for line in proxy.log_lines() if "GET /echo?log" in line]


def test_access_log_flushed_at_stop(proxy_factory):
    """Lines still waiting in the batch are written when the daemon stops."""
    proxy = proxy_factory()
    _get(proxy)
    proxy.process.terminate()
    proxy.process.wait(10)
    proxy.wait_for_log(ACCESS_LINE, timeout=10)
