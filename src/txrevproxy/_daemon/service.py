"""
The twistd plugin's service: ``twistd -n txrevproxy --listen ... --upstream ...``.

Option errors and listening failures end the process with a one-line message on stderr and exit status 2 (bad
options) or 1 (cannot listen), never a traceback.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import cast

from twisted.application import service
from twisted.internet import tcp
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint
from twisted.internet.error import ReactorNotRunning
from twisted.internet.interfaces import (
    IListeningPort,
    IOpenSSLContextFactory,
    IOpenSSLServerConnectionCreator,
    IProtocolFactory,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure

from txrevproxy._daemon.fdlimit import (
    AcceptBackoff,
    descriptors_in_use,
    fit_connection_cap,
    guard_accepts,
    raise_open_file_limit,
)
from txrevproxy._daemon.options import Options
from txrevproxy._daemon.startup import StartupError, StartupReport
from txrevproxy._daemon.workers import (
    TWISTD,
    Inherited,
    ParentWatch,
    Supervisor,
    adopt_listener,
    family_name,
    reactor_options,
    reuseport_sockets,
)
from txrevproxy._net.reactor import IProxyReactor
from txrevproxy._net.twisted_private import listen_address
from txrevproxy._server.accesslog import AccessLog, write_all
from txrevproxy._server.channel import ProxySite
from txrevproxy._server.gate import DEFAULT_MAX_CONNECTIONS, ConnectionGate, GateConfig
from txrevproxy._tls.server import is_tls_endpoint, is_tls_port, server_endpoint, tls_layers
from txrevproxy.resource import PassThroughProxyResource, ReverseProxyResource

log = Logger(namespace="txrevproxy")


def _installed_reactor() -> IProxyReactor:
    """
    The reactor twistd installed (the global one).
    """
    from twisted.internet import reactor

    return cast(IProxyReactor, reactor)  # (a module to the type checker: it is replaced by the reactor at import)


def _endpoint(reactor: IProxyReactor, description: str) -> IStreamServerEndpoint:
    """
    The server endpoint of ``description`` (``ValueError`` if it cannot be made).
    """
    return IStreamServerEndpoint(server_endpoint(reactor, description))


def _tls_maker(maker: object) -> IOpenSSLServerConnectionCreator | IOpenSSLContextFactory:
    """
    What makes a TLS listener's connections (from :func:`~txrevproxy._tls.server.tls_layers`), as its type.
    """
    if IOpenSSLServerConnectionCreator.providedBy(maker) or IOpenSSLContextFactory.providedBy(maker):
        return maker
    raise TypeError(f"not a TLS connection creator or context factory: {maker!r}")


def _wraps(port: object, site: object) -> bool:
    """
    Whether ``port`` serves ``site`` through a wrapping factory (``ssl:`` endpoints wrap it in TLS), which cannot
    take ``None`` from ``buildProtocol`` for a refused connection.
    """
    return getattr(port, "factory", site) is not site


def _listen_now(reactor: IProxyReactor, description: str, factory: IProtocolFactory) -> IListeningPort:
    """
    Listen on ``description`` now; a :class:`StartupError` if that fails.
    """
    results: list[IListeningPort | Failure] = []
    try:
        endpoint = _endpoint(reactor, description)
    except ValueError as e:  # a tls: directory changed since the options were checked
        raise StartupError(f"cannot listen on {description}: {e}") from None
    endpoint.listen(factory).addBoth(results.append)
    if not results:
        raise StartupError(f"cannot listen on {description}: listening did not complete")
    if isinstance(results[0], Failure):
        raise StartupError(f"cannot listen on {description}: {results[0].getErrorMessage()}")
    return results[0]


def _busy_poll(reactor: IProxyReactor, microseconds: int, *, apply: bool) -> None:
    """
    ``--busy-poll-us``: a :class:`StartupError` (status 2) unless ``reactor`` is txrevproxy's (the only one that can
    busy-poll); set it there when ``apply`` (a supervisor only checks, its workers poll).
    """
    if not microseconds:
        return
    if not reactor_options(reactor):  # (no options: not txrevproxy's reactor)
        raise StartupError(
            "--busy-poll-us needs txrevproxy's reactor (the txrevproxy command's default, or twistd "
            "--reactor=txrevproxy)",
            status=2,
        )
    if apply:
        from txrevproxy._daemon.reactor import ProxyReactor  # (there: reactor_options found it is one)

        cast(ProxyReactor, reactor).busy_poll = microseconds / 1e6
        log.info("busy polling for {microseconds} µs after I/O (--busy-poll-us)", microseconds=microseconds)


def _upstream_or_demo(reactor: IProxyReactor, options: Options, ports: list[IListeningPort]) -> str:
    """
    The upstream URL: ``--upstream``, or with ``--demo`` that of a demo origin started now (its port is added to
    ``ports``).
    """
    if not options["demo"]:
        upstream: str = options["upstream"]
        return upstream
    from txrevproxy._daemon.demo import demo_site

    origin = _listen_now(reactor, "tcp:0:interface=127.0.0.1", demo_site())
    ports.append(origin)
    url = f"http://127.0.0.1:{cast(IPv4Address, origin.getHost()).port}"  # (a tcp: port's address)
    log.info("demo origin listening on {url}", url=url)
    return url


def _open_access_log(where: str, reactor: IProxyReactor) -> AccessLog | None:
    """
    The access log for ``--access-log``: ``-`` for standard output, ``off`` for none, else a file appended to.
    """
    if where == "off":
        return None
    if where == "-":
        return AccessLog(write_all(1), reactor)
    try:
        fd = os.open(where, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as e:
        raise StartupError(f"cannot open --access-log {where}: {e.strerror}") from None
    return AccessLog(write_all(fd), reactor)


def _url_of(port: IListeningPort) -> str:
    """
    Where ``port`` listens, for the start-up log: an ``http[s]://`` URL, or ``unix:PATH``.
    """
    address = port.getHost()
    if isinstance(address, UNIXAddress):
        return f"unix:{os.fsdecode(address.name or b'')}"
    if not isinstance(address, (IPv4Address, IPv6Address)):
        return str(address)
    host = f"[{address.host}]" if ":" in address.host else address.host
    scheme = "https" if is_tls_port(port) else "http"
    return f"{scheme}://{host}:{address.port}"


class ProxyService(service.Service):
    """
    Listens on every ``--listen`` endpoint (in ``privilegedStartService``, so that a port below 1024 can be
    bound before privileges are dropped) and serves the proxy there; with ``--demo`` first starts the origin.
    What cannot start is a :class:`~txrevproxy._daemon.startup.StartupError`, reported by :attr:`startup`.
    """

    def __init__(self, options: Options, reactor: IProxyReactor | None = None) -> None:
        self.options = options
        #: The reactor given, else (from ``privilegedStartService``) the one twistd installed.
        self.reactor = reactor
        self.startup = StartupReport.before_daemonizing(options.parent)
        self.resource: ReverseProxyResource | None = None  # (a PassThroughProxyResource)
        self.ports: list[IListeningPort] = []
        self.backoffs: list[AcceptBackoff] = []
        self.access_log: AccessLog | None = None
        self.gate: ConnectionGate | None = None

    def _reactor_in_use(self) -> IProxyReactor:
        if self.reactor is None:
            self.reactor = _installed_reactor()
        return self.reactor

    def privilegedStartService(self) -> None:
        reactor = self._reactor_in_use()
        try:
            self._listen(reactor)
        except StartupError as e:
            self.startup.failed(e)
            raise
        service.Service.privilegedStartService(self)

    def startService(self) -> None:
        service.Service.startService(self)
        self.startup.started()

    def _listen(self, reactor: IProxyReactor) -> None:
        options = self.options
        _busy_poll(reactor, options["busy-poll-us"], apply=True)
        upstream = _upstream_or_demo(reactor, options, self.ports)
        self.resource = PassThroughProxyResource.from_url(upstream, reactor, config=options.config())
        if options["upstream-insecure"]:
            log.warn(
                "--upstream-insecure: the certificate and name of {upstream} are not verified; anyone on the path "
                "can impersonate it",
                upstream=upstream,
            )
        self.gate = ConnectionGate(self.gate_config(), reactor)
        self.access_log = _open_access_log(options["access-log"], reactor)
        site = ProxySite(
            self.resource,
            timeout=options["idle-timeout"],
            reactor=reactor,
            client=options.client_config(),
            gate=self.gate,
            access_log=self.access_log,
        )
        if options["inherit"]:
            self._adopt(reactor, site)
            return
        tls_site = self._tls_site(reactor, site)
        for description in options["listen"]:
            served = tls_site if is_tls_endpoint(description) else site
            port = _listen_now(reactor, description, served)
            self.ports.append(port)
            if _wraps(port, served):
                served.refuse_by_closing = True
            self._guard(reactor, port)
            log.info(
                "txrevproxy listening on {url} ({description}), relaying to {upstream}",
                url=_url_of(port),
                description=description,
                upstream=upstream,
            )
            if options["demo"]:
                log.info("demo: try  curl -i {url}/", url=_url_of(port))

    def _tls_site(self, reactor: IProxyReactor, site: ProxySite) -> ProxySite:
        """
        The site for TLS listeners: the same proxy, offering HTTP/2 over ALPN unless ``--no-http2``.
        """
        if self.options["no-http2"]:
            return site
        return ProxySite(
            site.resource,
            timeout=self.options["idle-timeout"],
            reactor=reactor,
            client=site.client,
            gate=site.gate,
            access_log=site.access_log,
            http2=True,
            max_streams=self.options["max-streams"],
        )

    def _guard(self, reactor: IProxyReactor, port: IListeningPort) -> None:
        # Pause accepting on this port when descriptors run out (see _fdlimit.AcceptBackoff).
        backoff = guard_accepts(port, reactor, self.options["accept-backoff"])
        if backoff is not None:
            self.backoffs.append(backoff)

    def _adopt(self, reactor: IProxyReactor, site: ProxySite) -> None:
        """
        A worker: serve the listening sockets inherited from the supervisor, and stop when the supervisor is gone.
        """
        from twisted.internet.stdio import StandardIO

        # A process group of its own: a signal to the supervisor's group (Ctrl-C in a terminal, a service manager
        # stopping it) reaches the supervisor alone, which stops each worker once, with SIGTERM.
        os.setpgid(0, 0)
        tls_site = self._tls_site(reactor, site)
        for listener in self.options["inherit"]:
            layers = tls_layers(server_endpoint(reactor, listener.description))
            served: IProtocolFactory = site
            if layers is not None:
                tls_site.refuse_by_closing = True
                served = TLSMemoryBIOFactory(_tls_maker(layers[1]), False, tls_site, clock=reactor)
            port = adopt_listener(reactor, listener.fd, listener.address_family, served)
            os.close(listener.fd)
            self.ports.append(port)
            self._guard(reactor, port)
            log.info(
                "worker {index} (pid {pid}) serving {url} ({description})",
                index=self.options["worker-index"],
                pid=os.getpid(),
                url=_url_of(port),
                description=listener.description,
            )
        StandardIO(ParentWatch(self._supervisorGone), reactor=reactor)

    def _supervisorGone(self) -> None:
        # The pipe from the supervisor also closes when everything is stopping together: stop only if running.
        if self.running:
            log.warn("the supervisor went away; stopping")
            try:
                self._reactor_in_use().stop()
            except ReactorNotRunning:
                pass

    def stopService(self) -> Deferred[list[object]]:
        service.Service.stopService(self)
        if self.access_log is not None:
            self.access_log.flush()
        for backoff in self.backoffs:
            backoff.stop()
        if self.resource is not None:
            self.resource.pool.close()
        return _stop_listening(self.ports)

    #: Raises the soft open-file limit and returns it (``None``: no limit); replaced in tests.
    open_file_limit = staticmethod(raise_open_file_limit)

    def gate_config(self) -> GateConfig:
        """
        The access policy and the connection cap, the cap lowered (with a log line) to fit the open-file limit.
        """
        options = self.options
        requested = options["max-connections"]
        limit = self.open_file_limit()
        cap = fit_connection_cap(requested, limit, descriptors_in_use(), options["pool-size"])
        if cap < requested:
            # A warning when the operator asked for the cap; the default being lowered is only information.
            emit = log.info if requested == DEFAULT_MAX_CONNECTIONS else log.warn
            emit(
                "--max-connections {requested} lowered to {cap} to fit the open-file limit of {limit} "
                "(a client connection may hold an upstream one)",
                requested=requested,
                cap=cap,
                limit=limit,
            )
        return GateConfig(access=options["access"], max_connections=cap)


#: Options a worker does not get from the supervisor as they are (it gets ``--upstream`` and ``--inherit``).
_SUPERVISOR_ONLY = frozenset({"listen", "demo", "workers", "worker-index", "inherit", "upstream"})
_REPEATED = ("trusted-proxy", "allow", "deny")


def _stop_listening(ports: list[IListeningPort]) -> Deferred[list[object]]:
    """
    Stop every port; fires when all have stopped.
    """
    stops: list[Callable[[], object]] = [port.stopListening for port in ports]
    return gatherResults([maybeDeferred(stop) for stop in stops])


def worker_args(options: Options, upstream: str, inherited: list[Inherited], index: int) -> list[str]:
    """
    The ``txrevproxy`` arguments of worker ``index``: every option of the supervisor that is not at its default,
    the upstream (the demo origin's URL with ``--demo``) and one ``--inherit`` per listening socket.
    """
    args: list[str] = []
    for name, _short, default, *_ in options.optParameters:
        value = options[name]
        if name not in _SUPERVISOR_ONLY and value is not None and value != default:
            args.append(f"--{name}={value}")
    for name, *_ in options.optFlags:
        if name not in _SUPERVISOR_ONLY and options[name]:
            args.append(f"--{name}")
    for name in _REPEATED:
        args += [f"--{name}={value}" for value in options[name]]
    args.append(f"--upstream={upstream}")
    args += [f"--inherit={listener}" for listener in inherited]
    args.append(f"--worker-index={index}")
    return args


class SupervisorService(service.MultiService):
    """
    ``--workers N`` (N > 1): binds every ``--listen`` endpoint (in ``privilegedStartService``), never accepts on
    them, and runs N workers that do, under a :class:`~txrevproxy._daemon.workers.Supervisor`. What cannot start is
    a :class:`~txrevproxy._daemon.startup.StartupError`, reported by :attr:`startup`.
    """

    def __init__(self, options: Options, reactor: IProxyReactor | None = None) -> None:
        service.MultiService.__init__(self)
        self.options = options
        #: The reactor given, else (from ``privilegedStartService``) the one twistd installed.
        self.reactor = reactor
        self.startup = StartupReport.before_daemonizing(options.parent)
        self.ports: list[IListeningPort] = []
        self.sockets: list[socket.socket] = []

    def privilegedStartService(self) -> None:
        if self.reactor is None:
            self.reactor = _installed_reactor()
        try:
            self._bind_all(self.reactor)
        except StartupError as e:
            self.startup.failed(e)
            raise
        service.MultiService.privilegedStartService(self)

    def startService(self) -> None:
        service.MultiService.startService(self)
        self.startup.started()

    def _bind_all(self, reactor: IProxyReactor) -> None:
        options = self.options
        _busy_poll(reactor, options["busy-poll-us"], apply=False)
        upstream = _upstream_or_demo(reactor, options, self.ports)
        raise_open_file_limit()  # inherited by the workers
        count = options["workers"]
        inherited: list[Inherited] = []
        per_worker: list[list[int]] = []  # for each listener, the supervisor fd of each worker's socket
        for description in options["listen"]:
            fd = 3 + len(inherited)
            fds, family, url = self._listen(reactor, description, count)
            per_worker.append(fds)
            inherited.append(Inherited(fd, family, description))
            log.info(
                "txrevproxy listening on {url} ({description}), relaying to {upstream}, {workers} workers",
                url=url,
                description=description,
                upstream=upstream,
                workers=count,
            )
        command = [*TWISTD, *reactor_options(reactor), "txrevproxy"]
        supervisor = Supervisor(
            count,
            lambda index: [*command, *worker_args(options, upstream, inherited, index)],
            lambda index: {3 + i: fds[index - 1] for i, fds in enumerate(per_worker)},
            reactor,
        )
        service.Service.setServiceParent(supervisor, self)

    def _listen(self, reactor: IProxyReactor, description: str, count: int) -> tuple[list[int], str, str]:
        """
        Bind ``description`` for ``count`` workers: the descriptor of each worker's socket, the address family and
        the URL. TCP gets a socket per worker (``SO_REUSEPORT``), TLS too (each worker does TLS on its own); a UNIX
        socket is shared. Exits with a one-line error when the endpoint cannot be bound or handed to a worker.
        """
        endpoint = server_endpoint(reactor, description)
        layers = tls_layers(endpoint)
        scheme = "https" if layers is not None else "http"
        if layers is not None:
            endpoint = layers[0]  # the workers bind the TCP socket, and each serves TLS on it itself
        if isinstance(endpoint, (TCP4ServerEndpoint, TCP6ServerEndpoint)):
            # The endpoint's own parse of the description; these attributes have been stable for a decade.
            family = socket.AF_INET6 if isinstance(endpoint, TCP6ServerEndpoint) else socket.AF_INET
            try:
                sockets = reuseport_sockets(family, *listen_address(endpoint), count)
            except OSError as e:
                raise StartupError(f"cannot listen on {description}: {e.strerror}") from None
            self.sockets += sockets
            host, port = sockets[0].getsockname()[:2]
            url = f"{scheme}://[{host}]:{port}" if family == socket.AF_INET6 else f"{scheme}://{host}:{port}"
            return [sock.fileno() for sock in sockets], family_name(family) or "", url
        factory = Factory.forProtocol(Protocol)
        factory.noisy = False
        port = _listen_now(reactor, description, factory)
        self.ports.append(port)
        family_text = family_name(getattr(getattr(port, "socket", None), "family", -1))
        if not isinstance(port, tcp.Port) or family_text is None or _wraps(port, factory):
            raise StartupError(
                f"--workers cannot share --listen {description} (tcp, tcp6 and unix endpoints only)", status=2
            )
        port.stopReading()  # the workers accept, never the supervisor
        return [port.fileno()] * count, family_text, _url_of(port)

    def stopService(self) -> Deferred[list[object]]:
        for sock in self.sockets:
            sock.close()
        stopped: Deferred[None] = maybeDeferred(service.MultiService.stopService, self)
        return stopped.addCallback(lambda _: _stop_listening(self.ports))


def makeService(options: Options) -> service.IService:
    if options["workers"] > 1 and not options["inherit"]:
        return SupervisorService(options)
    return ProxyService(options)
