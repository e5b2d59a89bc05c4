"""
The twistd plugin's options and service, without sockets.
"""

from __future__ import annotations

import os
import re
import socket

import pytest
from twisted.internet.error import CannotListenError
from twisted.internet.testing import MemoryReactor
from twisted.logger import LogLevel, capturedLogs, formatEvent

from txrevproxy import AccessPolicy, ProxySite
from txrevproxy._daemon.service import ProxyService, SupervisorService
from txrevproxy._http.head import HeadLimits
from txrevproxy._server.config import ClientConfig
from txrevproxy.tap import Options, makeService


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
    assert (config.pool.connect_timeout, config.pool.max_idle, config.pool.idle_timeout) == (5.0, 128, 30.0)
    assert options["idle-timeout"] == 60.0


def test_repeated_and_valued_flags():
    """--listen and --trusted-proxy repeat; numeric flags are converted."""
    options = parse(
        "--listen",
        "tcp:1",
        "-l",
        "unix:/tmp/x.sock",
        "--upstream",
        "http://h:1/b",
        "--trusted-proxy",
        "10.0.0.0/8",
        "--trusted-proxy",
        "::1/128",
        "--connect-timeout",
        "0.5",
        "--response-timeout",
        "2",
        "--pool-size",
        "4",
        "--pool-idle-timeout",
        "9",
        "--preserve-host",
    )
    assert options["listen"] == ["tcp:1", "unix:/tmp/x.sock"]
    config = options.config()
    assert "10.1.2.3" in config.trusted and "::1" in config.trusted and "11.0.0.1" not in config.trusted
    assert (config.pool.connect_timeout, config.response_timeout, config.pool.max_idle) == (0.5, 2.0, 4)
    assert config.pool.idle_timeout == 9.0 and config.preserve_host


def test_upgrade_flags():
    """Upgrades are relayed with a 300 s tunnel idle timeout by default; --no-upgrade and --tunnel-idle-timeout
    change that."""
    config = parse("--upstream", "http://h").config()
    assert (config.upgrades, config.tunnel_idle_timeout) == (True, 300.0)
    config = parse("--upstream", "http://h", "--no-upgrade", "--tunnel-idle-timeout", "12.5").config()
    assert (config.upgrades, config.tunnel_idle_timeout) == (False, 12.5)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--upstream", "http://h", "--tunnel-idle-timeout", "0"], "below the minimum"),
        (["--upstream", "ftp://h"], "scheme must be http"),
        (["--upstream", "http://h:notaport"], "invalid upstream URL"),
        ([], "--upstream URL is required"),
        (["--demo", "--upstream", "http://h"], "not both"),
        (["--upstream", "http://h", "--bogus"], "--bogus not recognized"),
        (["--upstream", "http://h", "--listen", "nosuch:1"], "invalid --listen endpoint"),
        (["--upstream", "http://h", "--trusted-proxy", "10.0.0.0/99"], "not a network"),
        (["--upstream", "http://h", "--connect-timeout", "-1"], "below the minimum"),
        (["--upstream", "http://h", "--pool-size", "x"], "not a int"),
        (["--upstream", "http://h", "--busy-poll-us", "10001"], "above the maximum of 10000"),
        (["--upstream", "http://h", "--busy-poll-us", "-1"], "below the minimum of 0"),
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
    (_origin_port, _, _, origin_interface), (proxy_port, _, _, _) = reactor.tcpServers
    assert origin_interface == "127.0.0.1" and proxy_port == 81
    assert service.resource.host == "127.0.0.1"


@pytest.mark.parametrize("service_class", [ProxyService, SupervisorService])
def test_busy_polling_needs_txrevproxys_reactor(service_class, capfd):
    """--busy-poll-us on another reactor ends the process with one line on stderr and exit status 2, before
    listening."""
    reactor = MemoryReactor()
    service = service_class(parse("--upstream", "http://h:1", "--busy-poll-us", "50", "--workers", "2"), reactor)
    with pytest.raises(SystemExit) as exited:
        service.privilegedStartService()
    assert exited.value.code == 2 and reactor.tcpServers == []
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and "--busy-poll-us needs txrevproxy's reactor" in err


def test_busy_polling_is_set_on_txrevproxys_reactor():
    """On txrevproxy's reactor busy_poll is set (in seconds) and logged; a supervisor's (apply=False) is not."""
    from txrevproxy._daemon.reactor import ProxyReactor
    from txrevproxy._daemon.service import _busy_poll

    reactor = ProxyReactor()
    try:
        _busy_poll(reactor, 75, apply=False)
        assert reactor.busy_poll == 0
        with capturedLogs() as events:
            _busy_poll(reactor, 75, apply=True)
        assert reactor.busy_poll == pytest.approx(75e-6)
        assert [formatEvent(e) for e in events] == ["busy polling for 75 µs after I/O (--busy-poll-us)"]
    finally:
        reactor.waker.connectionLost(None)
        reactor._poller.close()


class _BusyReactor(MemoryReactor):
    def listenTCP(self, port, factory, backlog=50, interface=""):
        raise CannotListenError(interface, port, OSError(98, "Address already in use"))


def test_port_in_use_exits_with_one_line(capfd):
    """A port that cannot be bound ends the process with one line on stderr (the descriptor: twistd has made
    sys.stderr a log file by then) and exit status 1."""
    service = makeService(parse("--upstream", "http://h:1", "-l", "tcp:81"))
    service.reactor = _BusyReactor()
    with capturedLogs() as events, pytest.raises(SystemExit) as exited:
        service.privilegedStartService()
    assert exited.value.code == 1
    out, err = capfd.readouterr()
    assert err.count("\n") == 1 and "cannot listen on tcp:81" in err and "Address already in use" in err
    assert out == "" and not [e for e in events if "cannot listen" in formatEvent(e)]


@pytest.mark.parametrize("service_class", [ProxyService, SupervisorService])
def test_startup_failure_is_an_exception_twistd_reports(service_class, capfd):
    """A start-up failure is an Exception (twistd reports those to the twistd process a daemon came from, and
    removes the pidfile) that exits with its status without a traceback (a SystemExit)."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))  # (the supervisor binds its sockets itself, not through the reactor)
    port = taken.getsockname()[1]
    listen = f"tcp:{port}:interface=127.0.0.1"
    service = service_class(parse("--upstream", "http://h:1", "-l", listen, "--workers", "2"), _BusyReactor())
    try:
        with pytest.raises(Exception) as raised:  # what twistd catches
            service.privilegedStartService()
    finally:
        taken.close()
    assert isinstance(raised.value, SystemExit) and raised.value.code == 1
    assert str(raised.value).startswith(f"cannot listen on {listen}: ")
    assert capfd.readouterr().err == f"txrevproxy: error: {raised.value}\n"


def test_a_daemons_startup_failure_goes_to_the_stderr_it_was_started_with_and_the_log(tmp_path):
    """As a daemon (twistd without -n) the line goes to a duplicate of the stderr taken before twistd daemonizes
    (which then points fds 0-2 at /dev/null), and to the log; the duplicate stays open until the process exits."""
    options = parse("--upstream", "http://h:1", "-l", "tcp:81")
    options.parent = {"nodaemon": False}
    with (tmp_path / "stderr").open("w") as started_with:
        saved = os.dup(2)
        os.dup2(started_with.fileno(), 2)
        try:
            service = makeService(options)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    duplicate = service.startup._duplicate
    assert duplicate is not None and service.startup.daemon
    service.reactor = _BusyReactor()
    with capturedLogs() as events, pytest.raises(SystemExit):
        service.privilegedStartService()
    line = (tmp_path / "stderr").read_text()
    assert line.startswith("txrevproxy: error: cannot listen on tcp:81: ") and line.count("\n") == 1
    errors = [formatEvent(e) for e in events if e.get("log_level") == LogLevel.error]
    assert errors == ["cannot start: " + line.removeprefix("txrevproxy: error: ").rstrip("\n")]
    os.close(duplicate)  # (still open: the process would exit now)


def test_a_started_daemon_closes_its_duplicate_stderr():
    """Once the service has started, a daemon keeps no duplicate of the stderr it was started with."""
    options = parse("--upstream", "http://h:1", "-l", "tcp:81")
    options.parent = {"nodaemon": False}
    service = makeService(options)
    duplicate = service.startup._duplicate
    service.reactor = MemoryReactor()
    service.privilegedStartService()
    os.fstat(duplicate)
    service.startService()
    with pytest.raises(OSError):
        os.fstat(duplicate)
    service.stopService()


@pytest.mark.parametrize("parent, daemon", [(None, False), ({"nodaemon": True}, False), ({"nodaemon": False}, True)])
def test_daemon_means_twistd_without_n(parent, daemon):
    """Only twistd's options without -n (nodaemon false) make the process a daemon; no twistd, or -n, do not."""
    options = parse("--upstream", "http://h:1")
    options.parent = parent
    service = makeService(options)
    assert service.startup.daemon is daemon
    service.startup.started()


def test_client_limits_default_to_the_documented_values():
    """Without flags the client limits and deadlines are the documented defaults."""
    client = parse("--upstream", "http://127.0.0.1:8000").client_config()
    assert client == ClientConfig()
    assert (client.head.request_line, client.head.header_line, client.head.header_section) == (8192, 8192, 32768)
    assert (client.head.header_count, client.max_body) == (100, 1 << 30)
    assert (client.head_timeout, client.body_timeout, client.send_timeout) == (10.0, 30.0, 60.0)


def test_client_limit_flags():
    """Size flags take k/m/g suffixes; every limit and deadline flag reaches the ClientConfig."""
    client = parse(
        "--upstream",
        "http://h:1",
        "--max-body-size",
        "2m",
        "--max-request-line",
        "1k",
        "--max-header-line",
        "512",
        "--max-header-size",
        "4K",
        "--max-headers",
        "7",
        "--head-timeout",
        "1.5",
        "--body-timeout",
        "2",
        "--send-timeout",
        "3",
        "--max-body-size",
        "0",
    ).client_config()
    assert client.head == HeadLimits(request_line=1024, header_line=512, header_section=4096, header_count=7)
    assert (client.max_body, client.head_timeout, client.body_timeout, client.send_timeout) == (0, 1.5, 2.0, 3.0)


@pytest.mark.parametrize("flag, value", [("--max-body-size", "1x"), ("--max-body-size", "-1"), ("--max-headers", "0")])
def test_bad_limit_is_one_line_error(flag, value, capsys):
    """A malformed size or count is a one-line error naming the value, exit status 2."""
    with pytest.raises(SystemExit) as info:
        parse("--upstream", "http://h:1", flag, value)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and repr(value) in err


# -- access control, connection cap, file descriptors ----------------------------------------------------------------


def _service(*args: str, limit: int | None = None) -> ProxyService:
    service = ProxyService(parse("--upstream", "http://127.0.0.1:9", "-l", "tcp:81", *args), MemoryReactor())
    service.open_file_limit = lambda: limit
    return service


def test_access_and_cap_defaults():
    """Without the new flags: everyone is allowed, at most 10000 connections, a 0.5 s accept back-off."""
    options = parse("--upstream", "http://127.0.0.1:8000")
    assert options["access"] == AccessPolicy() and options["access"].open
    assert (options["max-connections"], options["accept-backoff"]) == (10000, 0.5)


def test_allow_and_deny_repeat_into_one_policy():
    """--allow and --deny repeat; both lists end up in the access policy."""
    options = parse(
        "--upstream",
        "http://h:1",
        "--allow",
        "10.0.0.0/8",
        "--allow",
        "::1",
        "--deny",
        "10.1.0.0/16",
        "--max-connections",
        "3",
        "--accept-backoff",
        "2",
    )
    policy = options["access"]
    assert [str(n) for n in policy.allow] == ["10.0.0.0/8", "::1/128"]
    assert [str(n) for n in policy.deny] == ["10.1.0.0/16"]
    assert policy.allows("10.2.0.1") and not policy.allows("10.1.0.1") and not policy.allows("11.0.0.1")
    assert (options["max-connections"], options["accept-backoff"]) == (3, 2.0)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--allow", "10.0.0.0/99"], "--allow: not a network in CIDR form: '10.0.0.0/99'"),
        (["--deny", "10.0.0.0/8", "--deny", "nonsense"], "--deny: not a network in CIDR form: 'nonsense'"),
        (["--allow", "127.0.0.1", "--deny", "::1/200"], "--deny: not a network in CIDR form: '::1/200'"),
        (["--max-connections", "0"], "below the minimum"),
        (["--max-connections", "many"], "not a int"),
        (["--accept-backoff", "0"], "below the minimum"),
    ],
)
def test_bad_access_and_limit_flags_exit_with_one_line(args, message, capsys):
    """A bad --allow/--deny CIDR or limit ends with one line naming the flag, exit status 2."""
    with pytest.raises(SystemExit) as exited:
        parse("--upstream", "http://h", *args)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and err.startswith("txrevproxy: error:")


def test_service_site_has_the_gate():
    """The site the service listens with refuses what the access policy refuses, up to the cap."""
    service = _service("--deny", "192.0.2.0/24", "--max-connections", "7")
    service.privilegedStartService()
    ((_, site, _, _),) = service.reactor.tcpServers
    assert site.gate is service.gate
    assert service.gate.config.max_connections == 7
    assert not service.gate.config.access.allows("192.0.2.1")


def test_cap_lowered_to_fit_the_open_file_limit():
    """A cap that cannot fit the open-file limit is lowered, with a log line saying so."""
    service = _service("--max-connections", "10000", limit=256)
    with capturedLogs() as events:
        config = service.gate_config()
    assert 1 <= config.max_connections < 256 // 2
    (line,) = [formatEvent(e) for e in events if e.get("log_namespace") == "txrevproxy"]
    assert line.startswith(f"--max-connections 10000 lowered to {config.max_connections}")
    assert "open-file limit of 256" in line


def test_cap_that_fits_is_kept_silently():
    """A cap within the open-file limit (or with no limit) is kept, without a log line."""
    for limit in (1 << 20, None):
        with capturedLogs() as events:
            assert _service("--max-connections", "100", limit=limit).gate_config().max_connections == 100
        assert not [e for e in events if e.get("log_namespace") == "txrevproxy"]


def test_memory_reactor_ports_get_no_backoff():
    """Ports that are not socket based (a test reactor's) are left without an accept back-off."""
    service = _service()
    service.privilegedStartService()
    assert service.backoffs == []


def test_default_cap_lowered_is_information_an_asked_cap_a_warning():
    """Lowering the default cap logs at info level; lowering a cap the operator gave logs a warning."""
    for args, level in ([(), "info"], [("--max-connections", "5000"), "warn"]):
        with capturedLogs() as events:
            _service(*args, limit=256).gate_config()
        (event,) = [e for e in events if e.get("log_namespace") == "txrevproxy"]
        assert event["log_level"].name == level


def test_a_site_behind_a_wrapping_factory_refuses_by_closing():
    """Only a port whose factory is not the site itself (ssl: wraps it) switches the site to refusing by closing."""
    from txrevproxy._daemon.service import _wraps

    class Port:
        def __init__(self, factory):
            self.factory = factory

    site = object()
    assert not _wraps(Port(site), site)
    assert _wraps(Port(object()), site)
    assert not _wraps(object(), site)  # a test reactor's port


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


# -- command-line conventions -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_help_names_the_command(flag, capsys):
    """-h is --help: the usage line names the txrevproxy command, and the help exits 0."""
    with pytest.raises(SystemExit) as exited:
        parse(flag)
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("Usage: txrevproxy [--listen ENDPOINT]... (--upstream URL | --demo) [options]\n")
    assert "  -h, --help " in out


def test_help_under_twistd_is_twistds_usage_line(capsys):
    """Under twistd the usage line is twistd's own: "Usage: twistd [options] txrevproxy ..."."""
    from twisted.scripts._twistd_unix import ServerOptions

    with pytest.raises(SystemExit):
        ServerOptions().parseOptions(["-n", "txrevproxy", "-h"])
    assert capsys.readouterr().out.startswith("Usage: twistd [options] txrevproxy [--listen ENDPOINT]...")


def test_help_hides_internal_options_and_shows_sizes_as_sizes(capsys, monkeypatch):
    """--help leaves out --inherit and --worker-index (still accepted), shows size defaults as 1g, 8k, 32k, and
    keeps no docstring indentation."""
    monkeypatch.setenv("COLUMNS", "80")
    with pytest.raises(SystemExit):
        parse("--help")
    out = capsys.readouterr().out
    assert "--inherit" not in out and "--worker-index" not in out and "internal" not in out
    for flag, default in [("max-body-size", "1g"), ("max-request-line", "8k"), ("max-header-size", "32k")]:
        assert re.search(rf"--{flag}=\s.*?\[default: {default}\]", out, re.DOTALL)
    assert "1073741824" not in out and "instead of replaced (repeatable; default none)" in out
    options = parse("--upstream", "http://h:1", "--inherit", "3:AF_INET:tcp:0", "--worker-index", "2")
    assert (options["worker-index"], [str(i) for i in options["inherit"]]) == (2, ["3:AF_INET:tcp:0"])
    assert options["max-body-size"] == 1 << 30  # (the defaults themselves are numbers)


def test_version_names_txrevproxy_twisted_and_python(capsys):
    """--version prints txrevproxy's version (from its package metadata), Twisted's and Python's."""
    import platform

    import twisted
    import txrevproxy

    with pytest.raises(SystemExit) as exited:
        parse("--version")
    assert exited.value.code == 0
    assert txrevproxy.__version__ != "0+unknown"
    expected = (
        f"txrevproxy {txrevproxy.__version__} (Twisted {twisted.__version__}, Python {platform.python_version()})"
    )
    assert capsys.readouterr().out == expected + "\n"


@pytest.mark.parametrize(
    "given, description",
    [
        ("8080", "tcp:8080"),
        (":8080", "tcp:8080"),
        ("127.0.0.1:8080", "tcp:8080:interface=127.0.0.1"),
        ("[::1]:8080", "tcp6:8080:interface=\\:\\:1"),
        ("tcp:8080:interface=127.0.0.1", "tcp:8080:interface=127.0.0.1"),
        ("unix:/tmp/x.sock", "unix:/tmp/x.sock"),
    ],
)
def test_listen_short_forms(given, description):
    """--listen PORT, :PORT, IPV4:PORT and [IPV6]:PORT are short for tcp: (tcp6:) endpoints; endpoint strings are
    kept as they are."""
    assert parse("--upstream", "http://h", "--listen", given)["listen"] == [description]


def test_listen_short_forms_listen_there():
    """The short forms listen on the port and address they name."""
    reactor = MemoryReactor()
    service = ProxyService(
        parse("--upstream", "http://h:1", "-l", "81", "-l", "127.0.0.1:82", "-l", "[::1]:83"), reactor
    )
    service.privilegedStartService()
    assert [(port, interface) for port, _, _, interface in reactor.tcpServers] == [
        (81, ""),
        (82, "127.0.0.1"),
        (83, "::1"),
    ]


@pytest.mark.parametrize(
    "endpoint", ["nosuch:1", "localhost:8080", "tcp:abc", "tcp:80:bogus=1", "[::g]:80", "1.2.3:80"]
)
def test_unparseable_listen_names_the_endpoint_syntax(endpoint, capsys):
    """A --listen that does not parse is a one-line error naming the endpoint syntax, exit status 2."""
    with pytest.raises(SystemExit) as exited:
        parse("--upstream", "http://h", "--listen", endpoint)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"invalid --listen endpoint {endpoint!r}: " in err
    assert "expected PORT, ADDR:PORT, tcp:PORT[:interface=ADDR], unix:PATH, ssl:... or tls:DIR:port=PORT" in err


@pytest.mark.parametrize(
    "flags", [["--upstream", "http://a", "--upstream", "http://b"], ["-u", "http://a", "-u", "http://a"]]
)
def test_upstream_given_twice_is_an_error(flags, capsys):
    """A second --upstream is an error (exit status 2, one line), not a silent replacement of the first."""
    with pytest.raises(SystemExit) as exited:
        parse(*flags)
    assert exited.value.code == 2
    assert capsys.readouterr().err == (
        "txrevproxy: error: --upstream given twice; one upstream per process until routes exist (see --help)\n"
    )


def test_unix_listener_logs_its_path():
    """A UNIX listener's start-up line shows unix:PATH, not a repr of its address."""
    service = ProxyService(parse("--upstream", "http://h:1", "-l", "unix:/tmp/x.sock"), MemoryReactor())
    with capturedLogs() as events:
        service.privilegedStartService()
    assert "txrevproxy listening on unix:/tmp/x.sock (unix:/tmp/x.sock), relaying to http://h:1" in [
        formatEvent(e) for e in events
    ]
