"""
The daemon's command-line options: ``twistd -n txrevproxy --listen ... --upstream ...``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

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
from txrevproxy._server.channel import ClientConfig
from txrevproxy._server.gate import DEFAULT_MAX_CONNECTIONS
from txrevproxy._tls.client import ClientTLS, UpstreamTLS
from txrevproxy._tls.server import server_endpoint
from txrevproxy._upstream.pool import PoolConfig
from txrevproxy.resource import parse_upstream_url

log = Logger(namespace="txrevproxy")

DEFAULT_LISTEN = "tcp:8080"


def _number(kind: type, minimum: float) -> Callable[[str], float]:
    def coerce(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise ValueError(f"{text!r} is not a {kind.__name__}") from None
        if value < minimum:
            raise ValueError(f"{text!r} is below the minimum of {minimum:g}")
        return value

    coerce.coerceDoc = f"({kind.__name__} >= {minimum:g})"  # type: ignore[attr-defined]
    return coerce


def _number_up_to(kind: type, minimum: float, maximum: float) -> Callable[[str], float]:
    at_least = _number(kind, minimum)

    def coerce(text: str) -> float:
        value = at_least(text)
        if value > maximum:
            raise ValueError(f"{text!r} is above the maximum of {maximum:g}")
        return value

    coerce.coerceDoc = f"({kind.__name__} from {minimum:g} to {maximum:g})"  # type: ignore[attr-defined]
    return coerce


_seconds = _number(float, 0.001)
#: The longest ``--busy-poll-us``: past a few hundred microseconds a CPU would rather sleep.
MAX_BUSY_POLL_US = 10_000
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def _size(text: str) -> int:
    """
    A byte count: digits with an optional binary unit suffix k, m or g (``64k`` is 65536).
    """
    number, unit = text.rstrip("kKmMgG"), text[len(text.rstrip("kKmMgG")) :].lower()
    if not number.isdigit() or unit not in _SIZE_UNITS:
        raise ValueError(f"{text!r} is not a size (digits with an optional k, m or g)")
    return int(number) * _SIZE_UNITS[unit]


_size.coerceDoc = "(bytes; suffix k, m or g for KiB, MiB, GiB)"  # type: ignore[attr-defined]


class Options(usage.Options):
    synopsis = "[--listen ENDPOINT]... (--upstream URL | --demo) [options]"
    longdesc = (
        "A streaming reverse proxy: relays every request to the upstream over pooled HTTP/1.1 connections, "
        "with backpressure both ways."
    )
    optFlags = [
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
    optParameters = [
        ["upstream", "u", None, "The upstream to relay to: http[s]://host:port[/base-path]."],
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
        super().__init__()
        self["listen"] = []
        self["trusted-proxy"] = []
        self["allow"] = []
        self["deny"] = []
        self["inherit"] = []

    def opt_listen(self, endpoint: str) -> None:
        """
        A Twisted server endpoint to listen on (repeatable; default tcp:8080).
        """
        try:
            server_endpoint(None, endpoint)  # parses it, and loads a tls: listener's certificates
        except (ValueError, KeyError, TypeError, OSError, VerifyError, SSL.Error, crypto.Error) as e:
            # (ssl: files: a key that is not the certificate's is a VerifyError, a bad PEM an OpenSSL error)
            raise usage.UsageError(f"invalid --listen endpoint {endpoint!r}: {e}") from None
        self["listen"].append(endpoint)

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
            super().parseOptions(options)
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


def _access_policy(allow: list[str], deny: list[str]) -> AccessPolicy:
    for flag, specs in (("--allow", allow), ("--deny", deny)):
        try:
            AccessPolicy.parse(specs)
        except ValueError as e:
            raise usage.UsageError(f"{flag}: {e}") from None
    return AccessPolicy.parse(allow, deny)
