"""
The twistd plugin's options and service, without sockets.
"""

from __future__ import annotations

import pytest
from twisted.internet.error import CannotListenError
from twisted.internet.testing import MemoryReactor

from txrevproxy import ProxySite
from txrevproxy.tap import Options, ProxyService, makeService


def parse(*args: str) -> Options:
    options = Options()
    options.parseOptions(list(args))
    return options


def test_defaults():
    """Without flags beyond --upstream: listen on tcp:8080 with the documented defaults."""
    options = parse("--upstream", "http://127.0.0.1:8000")
    assert options["listen"] == ["tcp:8080"]
    config = options.config()
    assert (config.response_timeout, config.preserve_host) == (30.0, False)
    assert (config.pool.connect_timeout, config.pool.max_idle, config.pool.idle_timeout) == (5.0, 32, 30.0)
    assert options["idle-timeout"] == 60.0


def test_repeated_and_valued_flags():
    """--listen and --trusted-proxy repeat; numeric flags are converted."""
    options = parse(
        "--listen", "tcp:1", "-l", "unix:/tmp/x.sock", "--upstream", "http://h:1/b",
        "--trusted-proxy", "10.0.0.0/8", "--trusted-proxy", "::1/128", "--connect-timeout", "0.5",
        "--response-timeout", "2", "--pool-size", "4", "--pool-idle-timeout", "9", "--preserve-host",
    )
    assert options["listen"] == ["tcp:1", "unix:/tmp/x.sock"]
    config = options.config()
    assert "10.1.2.3" in config.trusted and "::1" in config.trusted and "11.0.0.1" not in config.trusted
    assert (config.pool.connect_timeout, config.response_timeout, config.pool.max_idle) == (0.5, 2.0, 4)
    assert config.pool.idle_timeout == 9.0 and config.preserve_host


@pytest.mark.parametrize(
    "args, message",
    [
        (["--upstream", "ftp://h"], "scheme must be http"),
        (["--upstream", "http://h:notaport"], "invalid upstream URL"),
        ([], "--upstream URL is required"),
        (["--demo", "--upstream", "http://h"], "not both"),
        (["--upstream", "http://h", "--bogus"], "--bogus not recognized"),
        (["--upstream", "http://h", "--listen", "nosuch:1"], "invalid --listen endpoint"),
        (["--upstream", "http://h", "--trusted-proxy", "10.0.0.0/99"], "not a network"),
        (["--upstream", "http://h", "--connect-timeout", "-1"], "below the minimum"),
        (["--upstream", "http://h", "--pool-size", "x"], "not a int"),
    ],
)
def test_bad_flags_exit_with_one_line(args, message, capsys):
    """Bad flags end with one line on stderr and exit status 2, no traceback."""
    with pytest.raises(SystemExit) as exited:
        parse(*args)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and err.startswith("txrevproxy: error:")


def test_service_listens_on_every_endpoint():
    """The service listens on each --listen endpoint with a ProxySite relaying to the upstream."""
    reactor = MemoryReactor()
    service = ProxyService(parse("--upstream", "http://127.0.0.1:9/b", "-l", "tcp:81", "-l", "tcp:82"), reactor)
    service.privilegedStartService()
    assert [(port, type(factory)) for port, factory, _, _ in reactor.tcpServers] == [
        (81, ProxySite),
        (82, ProxySite),
    ]
    assert (service.resource.host, service.resource.port, service.resource.path) == ("127.0.0.1", 9, b"/b")


def test_demo_starts_an_origin_first():
    """--demo listens on a loopback origin and points the proxy at it."""
    reactor = MemoryReactor()
    service = ProxyService(parse("--demo", "-l", "tcp:81"), reactor)
    service.privilegedStartService()
    (origin_port, _, _, origin_interface), (proxy_port, _, _, _) = reactor.tcpServers
    assert origin_interface == "127.0.0.1" and proxy_port == 81
    assert service.resource.host == "127.0.0.1"


class _BusyReactor(MemoryReactor):
    def listenTCP(self, port, factory, backlog=50, interface=""):
        raise CannotListenError(interface, port, OSError(98, "Address already in use"))


def test_port_in_use_exits_with_one_line(capsys):
    """A port that cannot be bound ends the process with one line and exit status 1."""
    service = makeService(parse("--upstream", "http://h:1", "-l", "tcp:81"))
    service.reactor = _BusyReactor()
    with pytest.raises(SystemExit) as exited:
        service.privilegedStartService()
    assert exited.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot listen on tcp:81" in err and "Address already in use" in err


def test_upstream_deadline_flags():
    """--upstream-read-timeout and --upstream-send-timeout default to 60 s and reach the pool configuration."""
    config = parse("--upstream", "http://127.0.0.1:8000").config()
    assert (config.pool.read_timeout, config.pool.send_timeout) == (60.0, 60.0)
    config = parse(
        "--upstream", "http://127.0.0.1:8000", "--upstream-read-timeout", "1.5", "--upstream-send-timeout", "2"
    ).config()
    assert (config.pool.read_timeout, config.pool.send_timeout) == (1.5, 2.0)


@pytest.mark.parametrize("flag", ["--upstream-read-timeout", "--upstream-send-timeout"])
def test_upstream_deadline_flags_must_be_positive(flag, capsys):
    """A zero or negative upstream deadline is refused with one line and exit status 2."""
    with pytest.raises(SystemExit) as info:
        parse("--upstream", "http://h", flag, "0")
    assert info.value.code == 2
    assert "below the minimum" in capsys.readouterr().err
