"""
``--workers``: the supervisor's rules and process handling without real processes, and the arguments a worker gets.
"""

from __future__ import annotations

import pytest
from twisted.internet.error import ProcessDone, ProcessExitedAlready, ProcessTerminated
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from txrevproxy._daemon.service import SupervisorService, worker_args
from txrevproxy._daemon.workers import (
    FIRST_RESTART_DELAY,
    MAX_RESTART_DELAY,
    STOP_TIMEOUT,
    Inherited,
    ParentWatch,
    Supervisor,
    restart_delay,
)
from txrevproxy.tap import Options, makeService


class FakeProcess:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.signals: list[str] = []
        self.exited = False

    def signalProcess(self, name: str) -> None:
        if self.exited:
            raise ProcessExitedAlready()
        self.signals.append(name)


class ProcessReactor(Clock):
    """A Clock that records spawnProcess calls and connects each protocol to a FakeProcess."""

    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[tuple[object, list[str], dict[int, object], FakeProcess]] = []

    def spawnProcess(self, protocol, executable, args, env=None, childFDs=None):
        process = FakeProcess(1000 + len(self.spawned))
        protocol.makeConnection(process)
        self.spawned.append((protocol, args, childFDs, process))
        return process

    def end(self, index: int, reason: Exception) -> None:
        protocol, _, _, process = self.spawned[index]
        process.exited = True
        protocol.processEnded(Failure(reason))


def _supervisor(count: int = 2) -> tuple[Supervisor, ProcessReactor]:
    reactor = ProcessReactor()
    supervisor = Supervisor(count, lambda index: ["worker", str(index)], lambda index: {3: 6 + index}, reactor)
    supervisor.startService()
    return supervisor, reactor


def test_starts_count_workers_with_the_sockets():
    """Each worker gets its own argv, a pipe on stdin, the supervisor's stdout/stderr and its listening sockets."""
    supervisor, reactor = _supervisor(3)
    assert [args for _, args, _, _ in reactor.spawned] == [["worker", "1"], ["worker", "2"], ["worker", "3"]]
    assert [fds for _, _, fds, _ in reactor.spawned] == [{0: "w", 1: 1, 2: 2, 3: 6 + i} for i in (1, 2, 3)]
    assert sorted(supervisor.workers) == [1, 2, 3]


def test_crashed_worker_is_restarted_with_growing_delay():
    """A worker that dies soon after starting is restarted after a delay that doubles; one that ran long, at once."""
    _, reactor = _supervisor(1)
    reactor.end(0, ProcessTerminated(signal=9))
    assert len(reactor.spawned) == 1
    reactor.advance(FIRST_RESTART_DELAY)
    assert len(reactor.spawned) == 2 and reactor.spawned[1][1] == ["worker", "1"]
    reactor.end(1, ProcessTerminated(exitCode=1))
    reactor.advance(FIRST_RESTART_DELAY)
    assert len(reactor.spawned) == 2  # the delay doubled
    reactor.advance(FIRST_RESTART_DELAY)
    assert len(reactor.spawned) == 3
    reactor.advance(60)  # ran long enough to count as stable
    reactor.end(2, ProcessTerminated(exitCode=1))
    reactor.advance(0)
    assert len(reactor.spawned) == 4


def test_restart_delay_rules():
    """The delay starts at FIRST_RESTART_DELAY, doubles up to MAX_RESTART_DELAY, and is 0 after a stable run."""
    assert restart_delay(0.0, 0.1) == FIRST_RESTART_DELAY
    assert restart_delay(FIRST_RESTART_DELAY, 0.1) == 2 * FIRST_RESTART_DELAY
    assert restart_delay(MAX_RESTART_DELAY, 0.1) == MAX_RESTART_DELAY
    assert restart_delay(MAX_RESTART_DELAY, 100) == 0.0


def test_stop_sends_term_then_kill_and_waits():
    """Stopping sends SIGTERM to every worker, SIGKILL to any left after STOP_TIMEOUT, and waits for all to end."""
    supervisor, reactor = _supervisor(2)
    stopped = supervisor.stopService()
    assert [p.signals for *_, p in reactor.spawned] == [["TERM"], ["TERM"]]
    reactor.end(0, ProcessDone(0))
    assert not stopped.called
    reactor.advance(STOP_TIMEOUT)
    assert reactor.spawned[1][3].signals == ["TERM", "KILL"]
    reactor.end(1, ProcessTerminated(signal=9))
    assert stopped.called
    assert len(reactor.spawned) == 2  # nothing restarted while stopping


def test_stop_cancels_a_pending_restart():
    """A restart scheduled before the stop does not happen."""
    supervisor, reactor = _supervisor(1)
    reactor.end(0, ProcessTerminated(exitCode=3))
    stopped = supervisor.stopService()
    assert stopped.called
    reactor.advance(MAX_RESTART_DELAY)
    assert len(reactor.spawned) == 1


def test_parent_watch_stops_when_the_pipe_closes():
    """A worker stops when its stdin pipe from the supervisor closes."""
    calls = []
    ParentWatch(lambda: calls.append(1)).connectionLost(None)
    assert calls == [1]


@pytest.mark.parametrize(
    "text, parsed",
    [
        ("3:AF_INET:tcp:8080", Inherited(3, "AF_INET", "tcp:8080")),
        ("4:AF_INET6:tcp6:8080:interface=\\:\\:1", Inherited(4, "AF_INET6", "tcp6:8080:interface=\\:\\:1")),
        ("5:AF_UNIX:unix:/tmp/s", Inherited(5, "AF_UNIX", "unix:/tmp/s")),
    ],
)
def test_inherited_round_trip(text, parsed):
    """--inherit FD:FAMILY:DESCRIPTION parses, and prints back the same."""
    assert Inherited.parse(text) == parsed and str(parsed) == text


@pytest.mark.parametrize("text", ["x:AF_INET:tcp:1", "3:AF_IPX:tcp:1", "3:AF_INET:", "3"])
def test_inherited_malformed(text):
    """A malformed --inherit is refused."""
    with pytest.raises(ValueError):
        Inherited.parse(text)


def _parse(*args: str) -> Options:
    options = Options()
    options.parseOptions(list(args))
    return options


def test_worker_args_carry_every_setting():
    """A worker parses the arguments it is given into the supervisor's settings, with the inherited sockets."""
    options = _parse(
        "--upstream",
        "http://127.0.0.1:9/base",
        "--workers",
        "3",
        "-l",
        "tcp:1",
        "--trusted-proxy",
        "10.0.0.0/8",
        "--deny",
        "192.0.2.0/24",
        "--preserve-host",
        "--max-body-size",
        "2m",
        "--head-timeout",
        "2.5",
        "--access-log",
        "off",
        "--upstream-read-timeout",
        "7",
        "--busy-poll-us",
        "50",
    )
    inherited = [Inherited(3, "AF_INET", "tcp:1")]
    worker = _parse(*worker_args(options, "http://127.0.0.1:9/base", inherited, 2))
    assert worker["inherit"] == inherited and worker["worker-index"] == 2 and worker["workers"] == 1
    assert worker.config() == options.config()
    assert worker.client_config() == options.client_config()
    assert worker["access"] == options["access"] and worker["access-log"] == "off"
    assert worker["busy-poll-us"] == 50
    assert isinstance(makeService(worker), type(makeService(_parse("--upstream", "http://h:1"))))
    assert isinstance(makeService(options), SupervisorService)


def test_demo_workers_relay_to_the_supervisors_origin():
    """With --demo the workers get --upstream pointing at the origin the supervisor started, not --demo."""
    options = _parse("--demo", "--workers", "2")
    args = worker_args(options, "http://127.0.0.1:5555", [], 1)
    assert "--demo" not in args and "--upstream=http://127.0.0.1:5555" in args


def test_reuseport_sockets_share_one_port():
    """Sockets for the workers of a TCP listener are all bound to one (kernel-chosen) port and all listening."""
    import socket

    from txrevproxy._daemon.workers import reuseport_sockets

    sockets = reuseport_sockets(socket.AF_INET, "127.0.0.1", 0, 5, 3)
    try:
        ports = {sock.getsockname()[1] for sock in sockets}
        assert len(sockets) == 3 and len(ports) == 1 and 0 not in ports
        client = socket.create_connection(("127.0.0.1", ports.pop()), timeout=5)
        client.close()
    finally:
        for sock in sockets:
            sock.close()


def test_reuseport_sockets_fail_cleanly_on_a_taken_port():
    """A port already taken (without SO_REUSEPORT) is an OSError, and no socket is left open."""
    import socket

    from txrevproxy._daemon.workers import reuseport_sockets

    taken = socket.create_server(("127.0.0.1", 0))
    try:
        with pytest.raises(OSError):
            reuseport_sockets(socket.AF_INET, "127.0.0.1", taken.getsockname()[1], 5, 2)
    finally:
        taken.close()


def test_a_workers_unix_port_leaves_the_shared_socket_as_it_was(tmp_path):
    """A worker's adopted UNIX port stops without removing the socket's path or shutting the socket down: the
    supervisor bound it and removes it, and the other workers (and this one's replacement) still accept on it."""
    import socket

    from twisted.internet.error import ConnectionDone
    from twisted.internet.protocol import Factory, Protocol
    from twisted.internet.testing import MemoryReactor

    from txrevproxy._daemon.workers import adopt_listener

    path = tmp_path / "proxy.sock"
    shared = socket.socket(socket.AF_UNIX)
    shared.bind(str(path))
    shared.listen()
    shared.setblocking(False)
    reactor = MemoryReactor()
    try:
        port = adopt_listener(reactor, shared.fileno(), socket.AF_UNIX, Factory.forProtocol(Protocol))
        assert port in reactor.readers
        port.stopReading()
        port.connectionLost(Failure(ConnectionDone()))
        assert path.exists()
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(str(path))  # (refused once the shared socket is shut down)
    finally:
        shared.close()
