"""
What a new user of the daemon meets first, through real processes: start-up failures (in the foreground and as a
twistd daemon), pidfiles, and the command line's conventions.
"""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from conftest import TWISTD, child_env

TIMEOUT = 30.0


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, env=child_env(), cwd=cwd)


@pytest.fixture
def taken_port() -> object:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        yield taken.getsockname()[1]
    finally:
        taken.close()


def _cannot_start(kind: str, tmp_path: Path, port: int) -> tuple[list[str], str]:
    """
    The arguments of a daemon that cannot start for reason ``kind``, and the start of its error message.
    """
    if kind == "port-in-use":
        return ["--listen", f"tcp:{port}:interface=127.0.0.1"], f"cannot listen on tcp:{port}:interface=127.0.0.1: "
    if kind == "port-out-of-range":
        return ["--listen", "tcp:99999"], "cannot listen on tcp:99999: "
    unwritable = tmp_path / "no-such-directory" / "access.log"
    return [
        "--listen",
        "tcp:0:interface=127.0.0.1",
        "--access-log",
        str(unwritable),
    ], f"cannot open --access-log {unwritable}"


CANNOT_START = ["port-in-use", "port-out-of-range", "unwritable-access-log"]


@pytest.mark.parametrize("kind", CANNOT_START)
def test_cannot_start_in_the_foreground_is_one_line_on_stderr(tmp_path: Path, taken_port: int, kind: str) -> None:
    """twistd -n: a failure to start is one line on stderr (not on stdout through the log), exit status 1, no
    traceback, and the default pidfile is removed."""
    args, message = _cannot_start(kind, tmp_path, taken_port)
    result = _run([*TWISTD, "-n", "txrevproxy", "--upstream", "http://127.0.0.1:1", *args], tmp_path)
    assert result.returncode == 1, result
    assert result.stderr.startswith(f"txrevproxy: error: {message}") and result.stderr.count("\n") == 1, result
    assert "error" not in result.stdout and "Traceback" not in result.stdout, result
    assert not (tmp_path / "twistd.pid").exists()


@pytest.mark.parametrize("kind", CANNOT_START)
def test_cannot_start_as_a_daemon_fails_the_twistd_command(tmp_path: Path, taken_port: int, kind: str) -> None:
    """twistd without -n: a daemon that cannot start makes the twistd command exit 1 with the line on its stderr
    (before twistd's own report), logs it, and leaves no pidfile (it used to wait for ever)."""
    args, message = _cannot_start(kind, tmp_path, taken_port)
    pidfile, logfile = tmp_path / "proxy.pid", tmp_path / "proxy.log"
    argv = [*TWISTD, f"--pidfile={pidfile}", f"--logfile={logfile}", "txrevproxy", "--upstream", "http://127.0.0.1:1"]
    result = _run([*argv, *args], tmp_path)
    assert result.returncode == 1, result
    assert result.stderr.startswith(f"txrevproxy: error: {message}"), result
    assert "An error has occurred" in result.stderr and "Traceback" not in result.stderr, result
    assert not pidfile.exists()
    assert f"[txrevproxy#error] cannot start: {message}" in logfile.read_text()
