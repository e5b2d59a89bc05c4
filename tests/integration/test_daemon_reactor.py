"""
The daemon on txrevproxy's own reactor (``--reactor=txrevproxy``, what the console script uses): the relay,
backpressure both ways, truncation and ``--workers`` behave as on Twisted's default reactor.

The scenarios are test_daemon's, collected here again with this module's ``proxy`` fixture, which starts the
daemon with ``--reactor=txrevproxy``: once as it is by default, once busy-polling (``--busy-poll-us``).
"""

from __future__ import annotations

import http.client
import subprocess
import sys
import sysconfig
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.conftest import STARTUP_TIMEOUT, Origin, OutputReader, Proxy, child_env, stop

# The tests are collected again here, with this module's proxy fixture.
from tests.integration.test_daemon import (  # noqa: F401
    _close_sockets,
    assert_one_line_error,
    test_large_chunked_upload_arrives_intact,
    test_large_download_arrives_intact,
    test_request_hop_by_hop_headers_are_not_forwarded,
    test_slow_client_pauses_the_origin_writer,
    test_stalled_origin_pauses_the_uploading_client,
    test_truncated_chunked_response_is_not_completed,
    test_truncated_content_length_response_is_not_completed,
)

REACTOR_LINE = r"reactor class: txrevproxy\._daemon\.reactor\.ProxyReactor"


BUSY_POLL_LINE = r"busy polling for 200 µs after I/O"


@pytest.fixture(params=["blocking", "busy-polling"])
def proxy(request: pytest.FixtureRequest, proxy_factory: Callable[..., Proxy]) -> Proxy:
    busy = request.param == "busy-polling"
    proxy = proxy_factory(*(["--busy-poll-us", "200"] if busy else []), reactor="txrevproxy")
    proxy.wait_for_log(REACTOR_LINE)
    if busy:
        proxy.wait_for_log(BUSY_POLL_LINE)
    return proxy


def test_workers_run_on_the_supervisors_reactor(proxy_factory: Callable[..., Proxy]) -> None:
    """Under --reactor=txrevproxy, --workers 2 starts both workers on that reactor too, busy-polling as asked
    (the supervisor does not), and they serve."""
    proxy = proxy_factory("--workers", "2", "--busy-poll-us", "200", reactor="txrevproxy")
    proxy.wait_for_log_count(r"worker \d \(pid \d+\) serving", 2)
    assert len(proxy.wait_for_log_count(REACTOR_LINE, 3)) == 3  # the supervisor and each worker
    assert len(proxy.wait_for_log_count(BUSY_POLL_LINE, 2)) == 2
    connection = proxy.connection()
    connection.request("GET", "/echo")
    assert connection.getresponse().status == 200


def test_console_script_runs_on_txrevproxys_reactor(origin: Origin, tmp_path: Path) -> None:
    """The txrevproxy console script runs the daemon on txrevproxy's reactor (busy-polling when asked), and
    relays."""
    script = Path(sysconfig.get_path("scripts")) / "txrevproxy"
    argv = [str(script)] if script.exists() else [sys.executable, "-m", "txrevproxy"]
    process = subprocess.Popen(
        [*argv, "--listen", "tcp:0:interface=127.0.0.1", "--upstream", origin.url, "--busy-poll-us", "200"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=child_env(),
        cwd=tmp_path,
    )
    reader = OutputReader(process)
    try:
        reader.wait_for(REACTOR_LINE, STARTUP_TIMEOUT)
        reader.wait_for(BUSY_POLL_LINE, STARTUP_TIMEOUT)
        port = int(reader.wait_for(r"listening on http://127\.0\.0\.1:(\d+)", STARTUP_TIMEOUT).group(1))
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("GET", "/echo")
        assert connection.getresponse().status == 200
        connection.close()
    finally:
        stop(process, reader)


def test_busy_polling_on_twisteds_reactor_exits_with_a_one_line_error(
    run_daemon: Callable[..., subprocess.CompletedProcess[str]], origin: Origin
) -> None:
    """--busy-poll-us under twistd's default reactor ends the daemon with one error line naming the way out."""
    result = run_daemon("--listen", "tcp:0:interface=127.0.0.1", "--upstream", origin.url, "--busy-poll-us", "50")
    assert_one_line_error(result, "--reactor=txrevproxy")
    assert result.returncode == 2
