"""
What a new user of the daemon meets first, through real processes: start-up failures (in the foreground and as a
twistd daemon), pidfiles, and the command line's conventions.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

# isort: split  (the helpers of the integration tests, in a group of their own)
from tests.integration.conftest import STARTUP_TIMEOUT, TWISTD, Origin, OutputReader, child_env, stop

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
    (before twistd's own report), logs it, and leaves no pidfile (it used to wait for ever). (The daemon keeps the
    stderr it was started with open until it exits, so the run ends once the daemon has removed its pidfile.)"""
    args, message = _cannot_start(kind, tmp_path, taken_port)
    pidfile, logfile = tmp_path / "proxy.pid", tmp_path / "proxy.log"
    argv = [*TWISTD, f"--pidfile={pidfile}", f"--logfile={logfile}", "txrevproxy", "--upstream", "http://127.0.0.1:1"]
    result = _run([*argv, *args], tmp_path)
    assert result.returncode == 1, result
    assert result.stderr.startswith(f"txrevproxy: error: {message}"), result
    assert "An error has occurred" in result.stderr and "Traceback" not in result.stderr, result
    assert not pidfile.exists()
    assert f"[txrevproxy#error] cannot start: {message}" in logfile.read_text()


# -- the console script and the README's command ---------------------------------------------------------------------


def _console_script() -> list[str]:
    script = Path(sysconfig.get_path("scripts")) / "txrevproxy"
    return [str(script)] if script.exists() else [sys.executable, "-m", "txrevproxy"]


def _readme_command() -> list[str]:
    """
    The daemon command of README.rst's "The daemon" section, as arguments.
    """
    text = (Path(__file__).resolve().parents[2] / "README.rst").read_text()
    section = text[text.index("The daemon\n==========\n") :]
    return shlex.split(re.search(r"^    (twistd .*)$", section, re.MULTILINE)[1])


def test_help_is_quiet_when_the_reader_goes_away(tmp_path: Path) -> None:
    """txrevproxy --help into a pipe nobody reads (txrevproxy --help | head -1) exits 0 without a BrokenPipeError
    traceback."""
    read, write = os.pipe()
    os.close(read)
    try:
        result = subprocess.run(
            [*_console_script(), "--help"],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=TIMEOUT,
            cwd=tmp_path,
        )
    finally:
        os.close(write)
    assert (result.returncode, result.stderr) == (0, "")


def test_console_script_help_and_version(tmp_path: Path) -> None:
    """The console script's help starts with "Usage: txrevproxy", and -h is --help; --version names the versions."""
    for flag in ("-h", "--help"):
        result = _run([*_console_script(), flag], tmp_path)
        assert result.returncode == 0 and result.stdout.startswith("Usage: txrevproxy [--listen ENDPOINT]..."), result
    result = _run([*_console_script(), "--version"], tmp_path)
    assert re.fullmatch(r"txrevproxy \S+ \(Twisted \S+, Python \S+\)\n", result.stdout), result


def test_readme_command_is_twistd_without_a_pidfile() -> None:
    """README's daemon command runs twistd -n with an empty --pidfile= (no pidfile) before txrevproxy."""
    assert _readme_command()[:4] == ["twistd", "-n", "--pidfile=", "txrevproxy"]


@pytest.mark.parametrize("command", ["console-script", "readme-twistd"])
def test_no_pidfile_in_the_working_directory(command: str, origin: Origin, tmp_path: Path) -> None:
    """Neither the txrevproxy command nor README's twistd command writes a twistd.pid in the working directory."""
    if command == "console-script":
        argv = [*_console_script(), "--listen", "tcp:0:interface=127.0.0.1", "--upstream", origin.url]
    else:
        argv = [*TWISTD, *_readme_command()[1:]]
        argv[argv.index("--listen") + 1] = "tcp:0:interface=127.0.0.1"
        argv[argv.index("--upstream") + 1] = origin.url
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=child_env(), cwd=tmp_path
    )
    reader = OutputReader(process)
    try:
        reader.wait_for(r"listening on http://127\.0\.0\.1:\d+", STARTUP_TIMEOUT)
        assert list(tmp_path.iterdir()) == []
    finally:
        stop(process, reader)
    assert list(tmp_path.iterdir()) == []
