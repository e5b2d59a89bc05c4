"""
Child processes for the benchmark: start each in its own process group with its output in a log file, wait until
it listens, read its memory from /proc, and always stop the whole group.
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

NOFILE = 16384  # enough for 2,000 client connections plus their upstream side


def raise_nofile(want: int = NOFILE) -> int:
    """
    Raise this process's soft RLIMIT_NOFILE towards ``want`` (never above the hard limit); return the new soft limit.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _child_setup() -> None:
    """
    Runs in the child between fork and exec: a high file-descriptor limit for the many-connections scenario.
    """
    raise_nofile()


@dataclass
class Child:
    """
    One started server: its process (the leader of its own process group), its log file and its port.
    """

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    port: int = 0
    scheme: str = "http"  # "https" on a TLS listener
    # A separate error log (nginx's), scanned for trouble along with the main log.
    error_log: Path | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def url(self, path: str = "/") -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 15) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def alive(self) -> bool:
        return self.proc.poll() is None

    def rss_kib(self) -> int:
        """
        Resident memory of this process and all its descendants (nginx's master plus its worker), in KiB.
        """
        return sum(rss_kib(pid) for pid in process_tree(self.pid))


def start(
    name: str, argv: list[str], log_path: Path, *, env: dict[str, str] | None = None, cwd: Path | None = None
) -> Child:
    """
    Start ``argv`` in a new session (so its whole group can be killed), stdout and stderr to ``log_path``, in
    ``cwd`` (this process's by default) with ``env`` (this process's by default).
    """
    with open(log_path, "wb") as log_file:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_child_setup,
            env=env,
            cwd=cwd,
        )
    return Child(name, proc, log_path)


def stop(child: Child, grace: float = 5.0) -> None:
    """
    SIGTERM the child's process group, then SIGKILL whatever is left after ``grace`` seconds.
    """
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(child.pid, sig)
        except ProcessLookupError:
            pass
        try:
            child.proc.wait(timeout=grace)
            break
        except subprocess.TimeoutExpired:
            continue
    # The leader is gone; make sure no stray member of its group (an nginx worker) survives it.
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class StartupError(RuntimeError):
    pass


def wait_for_log(child: Child, pattern: str, timeout: float = 20.0) -> re.Match[str]:
    """
    Wait until ``pattern`` appears in the child's log; fail with the log's tail if it exits or times out.
    """
    regex = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = regex.search(child.log_text())
        if match:
            return match
        if not child.alive():
            raise StartupError(f"{child.name} exited with {child.proc.returncode}:\n{child.log_tail()}")
        time.sleep(0.05)
    raise StartupError(f"{child.name} did not log {pattern!r} within {timeout}s:\n{child.log_tail()}")


def wait_for_port(child: Child, timeout: float = 20.0) -> None:
    """
    Wait until something accepts connections on the child's port.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not child.alive():
            raise StartupError(f"{child.name} exited with {child.proc.returncode}:\n{child.log_tail()}")
        try:
            with socket.create_connection(("127.0.0.1", child.port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise StartupError(f"{child.name} did not listen on {child.port} within {timeout}s:\n{child.log_tail()}")


def free_port() -> int:
    """
    A port that was free a moment ago (for servers that cannot report the port they bound, like nginx).
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid: int) -> int:
    """
    VmRSS of ``pid`` in KiB (0 once the process is gone).
    """
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def process_tree(pid: int) -> list[int]:
    """
    ``pid`` and all its descendants, from /proc/PID/task/*/children.
    """
    found = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        for child in children:
            found.extend(process_tree(int(child)))
    return found


@contextlib.contextmanager
def pinned_to(cpu: int, pids: list[int]) -> Iterator[None]:
    """
    Run the body with this process (and so the clients it starts), ``pids`` and their descendants on core ``cpu``
    alone; each gets its former CPU set back afterwards. Nothing is pinned when ``pids`` is empty.
    """
    if not pids:
        yield
        return
    everyone = [0, *(p for pid in pids for p in process_tree(pid))]
    before = {pid: os.sched_getaffinity(pid) for pid in everyone}
    try:
        for pid in everyone:
            os.sched_setaffinity(pid, {cpu})
        yield
    finally:
        for pid, cpus in before.items():
            try:
                os.sched_setaffinity(pid, cpus)
            except ProcessLookupError:
                pass
