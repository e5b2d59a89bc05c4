"""
The daemon's command-line options: ``twistd -n txrevproxy --listen ... --upstream ...``.
"""

from __future__ import annotations

import importlib.metadata
import ipaddress
import os
import platform
import re
import sys
from collections.abc import Callable
from typing import Any, Generic, NoReturn, TypeVar

from attrs import frozen
from OpenSSL import SSL, crypto
from twisted.internet.error import VerifyError
from twisted.logger import Logger
from twisted.python import usage

from txrevproxy._daemon.fdlimit import (
    DEFAULT_ACCEPT_BACKOFF,
)
from txrevproxy._daemon.workers import (
    Inherited,
)
from txrevproxy._http.head import HeadLimits
from txrevproxy._http.headers import TrustedNetworks
from txrevproxy._http.networks import AccessPolicy
from txrevproxy._relay.exchange import ProxyConfig
from txrevproxy._server.config import ClientConfig
from txrevproxy._server.gate import DEFAULT_MAX_CONNECTIONS
from txrevproxy._tls.client import ClientTLS, UpstreamTLS
from txrevproxy._tls.server import server_endpoint
from txrevproxy._upstream.pool import PoolConfig
from txrevproxy.resource import parse_upstream_url

log = Logger(namespace="txrevproxy")

DEFAULT_LISTEN = "tcp:8080"


_N = TypeVar("_N", int, float)
_T = TypeVar("_T")


@frozen
class _Coerce(Generic[_T]):
    """
    An option's value from its text, for ``optParameters``: ``parse`` raises ``ValueError`` with a one-line reason;
    ``coerceDoc`` is what ``--help`` says of the values (Twisted's name for it).
    """

    parse: Callable[[str], _T]
    coerceDoc: str

    def __call__(self, text: str) -> _T:
        return self.parse(text)


def _number(kind: type[_N], minimum: float) -> _Coerce[_N]:
    def coerce(text: str) -> _N:
        try:
            value = kind(text)
        except ValueError:
            raise ValueError(f"{text!r} is not a {kind.__name__}") from None
        if value < minimum:
            raise ValueError(f"{text!r} is below the minimum of {minimum:g}")
        return value

    return _Coerce(coerce, f"({kind.__name__} >= {minimum:g})")


def _number_up_to(kind: type[_N], minimum: float, maximum: float) -> _Coerce[_N]:
    at_least = _number(kind, minimum)

    def coerce(text: str) -> _N:
        value = at_least(text)
        if value > maximum:
            raise ValueError(f"{text!r} is above the maximum of {maximum:g}")
        return value

    return _Coerce(coerce, f"({kind.__name__} from {minimum:g} to {maximum:g})")


_seconds = _number(float, 0.001)
#: The longest ``--busy-poll-us``: past a few hundred microseconds a CPU would rather sleep.
MAX_BUSY_POLL_US = 10_000
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def _parse_size(text: str) -> int:
    """
    A byte count: digits with an optional binary unit suffix k, m or g (``64k`` is 65536).
    """
    number, unit = text.rstrip("kKmMgG"), text[len(text.rstrip("kKmMgG")) :].lower()
    if not number.isdigit() or unit not in _SIZE_UNITS:
        raise ValueError(f"{text!r} is not a size (digits with an optional k, m or g)")
    return int(number) * _SIZE_UNITS[unit]


_size = _Coerce(_parse_size, "(bytes; suffix k, m or g for KiB, MiB, GiB)")


def size_text(size: int) -> str:
    """
    ``size`` as :func:`_parse_size` reads it, with the largest unit that divides it (``1g`` for 1073741824).
    """
    for unit in "gmk":
        if size and size % _SIZE_UNITS[unit] == 0:
            return f"{size // _SIZE_UNITS[unit]}{unit}"
    return str(size)


#: What --listen takes, for the error about one it cannot parse.
ENDPOINT_SYNTAX = "PORT, ADDR:PORT, tcp:PORT[:interface=ADDR], unix:PATH, ssl:... or tls:DIR:port=PORT"
_PORT = re.compile(r":?([0-9]+)")
_IPV4_PORT = re.compile(r"([0-9.]+):([0-9]+)")
_IPV6_PORT = re.compile(r"\[([0-9A-Fa-f:.]+)\]:([0-9]+)")


def listen_description(text: str) -> str:
    """
    The endpoint description of ``--listen TEXT``: ``TEXT`` itself, except for the short forms ``PORT`` and
    ``:PORT`` (``tcp:PORT``), ``IPV4:PORT`` (``tcp:PORT:interface=IPV4``) and ``[IPV6]:PORT``
    (``tcp6:PORT:interface=IPV6``, its colons escaped). None of them is an endpoint description already: no
    endpoint type is a number or an address.
    """
    if match := _PORT.fullmatch(text):
        return f"tcp:{match[1]}"
    if (match := _IPV4_PORT.fullmatch(text)) and _is_address(ipaddress.IPv4Address, match[1]):
        return f"tcp:{match[2]}:interface={match[1]}"
    if (match := _IPV6_PORT.fullmatch(text)) and _is_address(ipaddress.IPv6Address, match[1]):
        escaped = match[1].replace(":", "\\:")
        return f"tcp6:{match[2]}:interface={escaped}"
    return text


def _is_address(kind: Callable[[str], object], text: str) -> bool:
    try:
        kind(text)
    except ValueError:
        return False
    return True


class Options(usage.Options):
    synopsis = "[--listen ENDPOINT]... (--upstream URL | --demo) [options]"
    longdesc = (
        "A streaming reverse proxy: relays every request to the upstream over pooled HTTP/1.1 connections, "
        "with backpressure both ways."
    )
    #: Rows of long name, short name (or None) and description.
    optFlags: list[list[Any]] = [
        ["demo", None, "Start an embedded demo origin in this process and proxy to it."],
        ["preserve-host", None, "Send the client's Host header upstream instead of the upstream's."],
        ["no-http2", None, "Do not offer HTTP/2 (ALPN h2) on TLS listeners: HTTP/1.1 only."],
        ["no-upgrade", None, "Do not relay protocol upgrades (WebSocket, ...): Upgrade is dropped as hop-by-hop."],
        [
            "upstream-insecure",
            None,
            "Do not verify an https:// upstream's certificate or name (logs a warning at start).",
        ],
    ]
    #: Rows of long name, short name, default, description and (optionally) what coerces the value.
    optParameters: list[list[Any]] = [
        [
            "upstream-ca",
            None,
            None,
            "PEM file of the CA certificates an https:// upstream is verified against (default: the system's).",
        ],
        [
            "upstream-client-cert",
            None,
            None,
            "PEM file with a private key and certificate offered to an https:// upstream (mutual TLS).",
        ],
        ["access-log", None, "-", "Where to log each request: - (standard output), a file path, or off."],
        ["connect-timeout", None, 5.0, "Seconds to connect to the upstream before answering 504.", _seconds],
        [
            "response-timeout",
            None,
            30.0,
            "Seconds from sending the request until the upstream's response starts, before answering 504.",
            _seconds,
        ],
        ["pool-size", None, 128, "Idle keep-alive connections kept per upstream.", _number(int, 0)],
        ["pool-idle-timeout", None, 30.0, "Seconds an idle upstream connection is kept.", _seconds],
        ["idle-timeout", None, 60.0, "Seconds an idle client connection is kept open.", _seconds],
        [
            "head-timeout",
            None,
            10.0,
            "Seconds from a request's first byte until its head is complete (else 408).",
            _seconds,
        ],
        ["body-timeout", None, 30.0, "Seconds a request body may make no progress (else 408 or abort).", _seconds],
        ["send-timeout", None, 60.0, "Seconds a client may read nothing of a pending response (else abort).", _seconds],
        ["max-body-size", None, 1 << 30, "Largest request body accepted (else 413); 0 for no limit.", _size],
        ["max-request-line", None, 8192, "Longest request line accepted (else 414).", _size],
        ["max-header-line", None, 8192, "Longest request header line accepted (else 431).", _size],
        ["max-header-size", None, 32768, "Largest request header section accepted (else 431).", _size],
        ["max-headers", None, 100, "Most request header lines accepted (else 431).", _number(int, 1)],
        [
            "max-connections",
            None,
            DEFAULT_MAX_CONNECTIONS,
            (
                "Concurrent client connections per process; past it new ones are closed at once. Lowered at start to "
                "fit the open-file limit."
            ),
            _number(int, 1),
        ],
        [
            "accept-backoff",
            None,
            DEFAULT_ACCEPT_BACKOFF,
            "Seconds to stop accepting connections when the process runs out of file descriptors.",
            _seconds,
        ],
        [
            "upstream-read-timeout",
            None,
            60.0,
            (
                "Seconds the upstream may send nothing mid-response-body before the upstream and client connections "
                "are aborted (time paused for a slow client does not count)."
            ),
            _seconds,
        ],
        [
            "upstream-send-timeout",
            None,
            60.0,
            (
                "Seconds the upstream may leave a request body upload stalled before it is aborted: 504, or the client "
                "connection aborted if the response has started."
            ),
            _seconds,
        ],
        ["max-streams", None, 100, "HTTP/2 streams a client connection may have open at once.", _number(int, 1)],
        [
            "tunnel-idle-timeout",
            None,
            300.0,
            "Seconds an upgraded connection (WebSocket, ...) may carry no bytes either way before it is closed.",
            _seconds,
        ],
        [
            "workers",
            None,
            1,
            (
                "Processes serving the listening sockets; with more than 1, a supervisor starts them, restarts any "
                "that exits and stops them on SIGTERM/SIGINT."
            ),
            _number(int, 1),
        ],
        [
            "busy-poll-us",
            None,
            0,
            "Microseconds to keep polling without sleeping after I/O (lower latency on VMs, for CPU); 0 for off.",
            _number_up_to(int, 0, MAX_BUSY_POLL_US),
        ],
        ["worker-index", None, 0, "(internal) This worker's number, given by the supervisor.", _number(int, 0)],
    ]

    def __init__(self) -> None:
        usage.Options.__init__(self)
        self["upstream"] = None
        self["listen"] = []
        self["trusted-proxy"] = []
        self["allow"] = []
        self["deny"] = []
        self["inherit"] = []

    def opt_help(self) -> NoReturn:
        """
        Display this help and exit.
        """
        _print_and_exit(str(self))

    opt_h = opt_help

    def opt_version(self) -> NoReturn:
        """
        Display the versions of txrevproxy, Twisted and Python, and exit.
        """
        from twisted.copyright import version as twisted_version

        _print_and_exit(f"txrevproxy {_version()} (Twisted {twisted_version}, Python {platform.python_version()})")

    def getSynopsis(self) -> str:
        if self.parent is None:  # the txrevproxy command (under twistd, twistd's "Usage: twistd [options] txrevproxy")
            return f"Usage: txrevproxy {self.synopsis}"
        return super().getSynopsis()

    def getUsage(self, width: int | None = None) -> str:
        # Twisted's list of the options, less the internal ones, with sizes' defaults written as sizes (1g) and each
        # description's lines joined (a docstring's indentation would be kept as runs of spaces).
        saved = self.longOpt, self.defaults, self.docs
        self.longOpt = [name for name in self.longOpt if name.rstrip("=") not in _INTERNAL]
        self.defaults = {name: size_text(v) if name in _SIZES else v for name, v in self.defaults.items()}
        self.docs = {name: " ".join(doc.split()) for name, doc in self.docs.items()}
        try:
            return super().getUsage(width)
        finally:
            self.longOpt, self.defaults, self.docs = saved

    def opt_upstream(self, url: str) -> None:
        """
        The upstream to relay to: http[s]://host:port[/base-path].
        """
        if self["upstream"] is not None:
            raise usage.UsageError("--upstream given twice; one upstream per process until routes exist")
        self["upstream"] = url

    opt_u = opt_upstream

    def opt_listen(self, endpoint: str) -> None:
        """
        A Twisted server endpoint to listen on: tcp:PORT[:interface=ADDR], unix:PATH, ssl:..., tls:DIR:port=PORT;
        PORT or :PORT is short for tcp:PORT, and ADDR:PORT for tcp:PORT:interface=ADDR ([ADDR]:PORT for IPv6)
        (repeatable; default tcp:8080).
        """
        description = listen_description(endpoint)
        try:
            server_endpoint(None, description)  # parses it, and loads a tls: listener's certificates
        except (ValueError, KeyError, TypeError) as e:
            # The endpoint string (a tls: listener's directory's files are ValueErrors that say so themselves).
            syntax = "" if description.startswith("tls:") else f"; expected {ENDPOINT_SYNTAX}"
            raise usage.UsageError(f"invalid --listen endpoint {endpoint!r}: {e}{syntax}") from None
        except (OSError, VerifyError, SSL.Error, crypto.Error) as e:
            # (ssl: files: a key that is not the certificate's is a VerifyError, a bad PEM an OpenSSL error)
            raise usage.UsageError(f"invalid --listen endpoint {endpoint!r}: {e}") from None
        self["listen"].append(description)

    opt_l = opt_listen

    def opt_trusted_proxy(self, cidr: str) -> None:
        """
        A client network (CIDR) whose X-Forwarded-*/Forwarded headers are appended to instead of replaced
        (repeatable; default none).
        """
        self["trusted-proxy"].append(cidr)

    def opt_inherit(self, listener: str) -> None:
        """
        (internal) A listening socket inherited from the supervisor, FD:FAMILY:DESCRIPTION (repeatable).
        """
        try:
            self["inherit"].append(Inherited.parse(listener))
        except ValueError as e:
            raise usage.UsageError(f"--inherit: {e}") from None

    def opt_allow(self, cidr: str) -> None:
        """
        Serve only clients in this network (CIDR; repeatable; default: every client not denied).
        """
        self["allow"].append(cidr)

    def opt_deny(self, cidr: str) -> None:
        """
        Close connections from clients in this network (CIDR) unread; wins over --allow (repeatable; default none).
        """
        self["deny"].append(cidr)

    def postOptions(self) -> None:
        if not self["listen"]:
            self["listen"] = [DEFAULT_LISTEN]
        if self["demo"] and self["upstream"]:
            raise usage.UsageError("give either --upstream or --demo, not both")
        if not self["demo"] and not self["upstream"]:
            raise usage.UsageError("--upstream URL is required (or --demo)")
        if self["upstream"]:
            try:
                address, _ = parse_upstream_url(self["upstream"])
            except ValueError as e:
                raise usage.UsageError(str(e)) from None
            self._check_upstream_tls(address.scheme)
        try:
            self["trusted"] = TrustedNetworks.parse(self["trusted-proxy"])
        except ValueError as e:
            raise usage.UsageError(f"--trusted-proxy: {e}") from None
        self["access"] = _access_policy(self["allow"], self["deny"])

    def upstream_tls(self) -> UpstreamTLS:
        return UpstreamTLS(
            ca_file=self["upstream-ca"],
            client_cert=self["upstream-client-cert"],
            insecure=bool(self["upstream-insecure"]),
        )

    def _check_upstream_tls(self, scheme: str) -> None:
        tls = self.upstream_tls()
        if scheme != "https":
            for flag in ("upstream-ca", "upstream-client-cert", "upstream-insecure"):
                if self[flag]:
                    raise usage.UsageError(f"--{flag} needs an https:// upstream")
            return
        if tls.insecure and tls.ca_file:
            raise usage.UsageError("give either --upstream-ca or --upstream-insecure, not both")
        try:
            ClientTLS(tls)
        except ValueError as e:
            raise usage.UsageError(str(e)) from None

    def parseOptions(self, options: list[str] | None = None) -> None:
        try:
            usage.Options.parseOptions(self, options)
        except usage.UsageError as e:
            print(f"txrevproxy: error: {e} (see --help)", file=sys.stderr)
            raise SystemExit(2) from None

    def client_config(self) -> ClientConfig:
        return ClientConfig(
            head=HeadLimits(
                request_line=self["max-request-line"],
                header_line=self["max-header-line"],
                header_section=self["max-header-size"],
                header_count=self["max-headers"],
            ),
            max_body=self["max-body-size"],
            head_timeout=self["head-timeout"],
            body_timeout=self["body-timeout"],
            send_timeout=self["send-timeout"],
        )

    def config(self) -> ProxyConfig:
        return ProxyConfig(
            response_timeout=self["response-timeout"],
            preserve_host=self["preserve-host"],
            trusted=self["trusted"],
            pool=PoolConfig(
                max_idle=self["pool-size"],
                idle_timeout=self["pool-idle-timeout"],
                connect_timeout=self["connect-timeout"],
                read_timeout=self["upstream-read-timeout"],
                send_timeout=self["upstream-send-timeout"],
                tls=self.upstream_tls(),
            ),
            upgrades=not self["no-upgrade"],
            tunnel_idle_timeout=self["tunnel-idle-timeout"],
        )


#: Options for the supervisor to give its workers, not for people: left out of --help.
_INTERNAL = frozenset({"inherit", "worker-index"})
#: Options whose values are sizes (their defaults shown as sizes in --help).
_SIZES = frozenset(name for name, _short, _default, _doc, *coerce in Options.optParameters if coerce == [_size])


def _version() -> str:
    """
    txrevproxy's version, from its package metadata: what ``txrevproxy.__version__`` says (read here again: the daemon
    does not import the public package above it).
    """
    try:
        return importlib.metadata.version("txrevproxy")
    except importlib.metadata.PackageNotFoundError:  # (imported from a source tree that is not installed)
        return "0+unknown"


def _print_and_exit(text: str) -> NoReturn:
    """
    Print ``text`` on standard output and exit 0, quietly if the reader went away (``txrevproxy --help | head -1``).
    """
    try:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        # Nothing more can be written; standard output goes to /dev/null, so that the flush at exit cannot fail too.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    raise SystemExit(0)


def _access_policy(allow: list[str], deny: list[str]) -> AccessPolicy:
    for flag, specs in (("--allow", allow), ("--deny", deny)):
        try:
            AccessPolicy.parse(specs)
        except ValueError as e:
            raise usage.UsageError(f"{flag}: {e}") from None
    return AccessPolicy.parse(allow, deny)
