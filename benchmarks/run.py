"""
Benchmark txrevproxy against twisted.web.proxy and nginx on this machine; never part of the test suite.

    python benchmarks/run.py [--quick] [--out benchmarks/results/NAME.json] [--only load|memory] [--baseline REV]

Run it with the Python that has txrevproxy installed (the daemon is started with the same interpreter). It installs
wrk, nginx and h2load with apt-get if they are missing, starts an nginx origin and each proxy in turn on 127.0.0.1,
runs the load scenarios (wrk; h2load for HTTP/2) and the memory scenarios (clients in this process, RSS from /proc),
writes a JSON file and prints markdown tables. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Run as a script, this file has benchmarks/ first on sys.path; its parts are the benchmarks package, found from
# the repository root.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import _baseline, _h2load, _memory, _procs, _report, _servers, _wrk
from benchmarks._servers import DIRECT, NGINX, TWISTED, TXREVPROXY, TXREVPROXY_2, TXREVPROXY_BUSY, Tools

MiB = 1 << 20
RATE = 2 * MiB  # the slow client's and the slow origin's pace, bytes per second
RSS_CAP_MIB = 2048  # a memory scenario is aborted once the proxy has grown by this much
RESULTS = Path(__file__).resolve().parent / "results"


# --- scenarios and results -----------------------------------------------------------------------------------------


LOAD_PROXIES = (DIRECT, TXREVPROXY, TXREVPROXY_2, TWISTED, NGINX)
#: Also run with txrevproxy busy-polling (the scenarios where wake-ups matter, and one under load).
BUSY_POLL_PROXIES = (*LOAD_PROXIES, TXREVPROXY_BUSY)
#: The core of the one-core scenarios (the last one: the first takes more of the kernel's interrupt work).
ONE_CORE = (os.cpu_count() or 1) - 1
TLS_PROXIES = (TXREVPROXY, TWISTED, NGINX)
#: With ``--baseline REV``, the load scenarios that also run the baseline (and it runs every memory scenario).
BASELINE_LOAD_SCENARIOS = ("12b-c1", "12b-c50", "1m-c10")
H2_PROXIES = (TXREVPROXY, NGINX)  # Twisted's ssl: endpoint offers no ALPN: twisted.web.proxy has no HTTP/2


@dataclass(frozen=True)
class LoadScenario:
    key: str
    title: str
    path: str
    body_bytes: int
    connections: int
    proxies: tuple[str, ...] = LOAD_PROXIES
    tls: bool = False  # the proxy listens with TLS (the origin stays plain HTTP)
    client: str = "wrk"  # or "h2load": HTTP/2
    streams: int = 1  # h2load: requests in flight on each connection
    headers: tuple[str, ...] = ()  # wrk: extra request headers
    # The client, the origin and the server under test all pinned to one core (ONE_CORE): no wake-up of another
    # core between the hops, so what remains is the proxy's own cost.
    one_core: bool = False


LOAD_SCENARIOS = (
    LoadScenario("12b-c1", "12 B, -c1", "/12b", 12, 1, proxies=BUSY_POLL_PROXIES),
    LoadScenario(
        "12b-c1-one-core",
        "12 B, -c1, client, origin and proxy on one core",
        "/12b",
        12,
        1,
        proxies=(DIRECT, TXREVPROXY, TWISTED, NGINX),
        one_core=True,
    ),
    LoadScenario("12b-c50", "12 B, -c50", "/12b", 12, 50, proxies=BUSY_POLL_PROXIES),
    LoadScenario("1k-c50", "1 KiB, -c50", "/1k", 1024, 50),
    LoadScenario("1m-c10", "1 MiB, -c10", "/1m", MiB, 10),
    LoadScenario("tls-12b-c50", "12 B over TLS, -c50", "/12b", 12, 50, proxies=TLS_PROXIES, tls=True),
    LoadScenario(
        "h2-12b-c10-m5",
        "12 B over HTTP/2, -c10 -m5 (50 streams)",
        "/12b",
        12,
        10,
        proxies=H2_PROXIES,
        tls=True,
        client="h2load",
        streams=5,
    ),
    LoadScenario(
        "tls-handshake-12b-c50",
        "12 B over TLS, a new connection per request, -c50",
        "/12b",
        12,
        50,
        proxies=TLS_PROXIES,
        tls=True,
        headers=("Connection: close",),
    ),
)


@dataclass(frozen=True)
class MemoryScenario:
    key: str
    title: str
    proxies: tuple[str, ...]


@dataclass(frozen=True)
class Settings:
    quick: bool
    warmup_seconds: float
    load_seconds: float
    transfer_bytes: int  # slow reader's download and slow upstream's upload
    idle_connections: int
    rate_bytes_per_s: int = RATE
    load_scenarios: tuple[LoadScenario, ...] = LOAD_SCENARIOS
    memory_scenarios: tuple[MemoryScenario, ...] = ()
    baseline: _baseline.Revision | None = None  # --baseline REV, run as the variant ``baseline.proxy``

    @classmethod
    def make(cls, quick: bool, baseline: _baseline.Revision | None = None) -> Settings:
        size = (20 if quick else 100) * MiB
        idle = 2000
        settings = cls(
            quick=quick,
            warmup_seconds=1 if quick else 2,
            load_seconds=3 if quick else 8,
            transfer_bytes=size,
            idle_connections=idle,
            memory_scenarios=(
                MemoryScenario(
                    "slow-reader",
                    f"slow reader: {size // MiB} MiB download read at 2 MiB/s — peak RSS growth, MiB",
                    (TXREVPROXY, TWISTED),
                ),
                MemoryScenario(
                    "slow-upstream",
                    f"slow upstream: {size // MiB} MiB upload read by the origin at 2 MiB/s — peak RSS growth, MiB",
                    (TXREVPROXY, TWISTED),
                ),
                MemoryScenario(
                    "idle-connections",
                    f"{idle:,} idle keep-alive client connections — RSS growth per connection, KiB",
                    (TXREVPROXY, TWISTED, NGINX),
                ),
            ),
        )
        return settings.with_baseline(baseline) if baseline else settings

    def with_baseline(self, baseline: _baseline.Revision) -> Settings:
        """
        These settings with the baseline's variant run right after the default txrevproxy in its load scenarios
        (``BASELINE_LOAD_SCENARIOS``) and in every memory scenario.
        """

        def add(proxies: tuple[str, ...]) -> tuple[str, ...]:
            after = proxies.index(TXREVPROXY) + 1
            return (*proxies[:after], baseline.proxy, *proxies[after:])

        return dataclasses.replace(
            self,
            baseline=baseline,
            load_scenarios=tuple(
                dataclasses.replace(s, proxies=add(s.proxies)) if s.key in BASELINE_LOAD_SCENARIOS else s
                for s in self.load_scenarios
            ),
            memory_scenarios=tuple(dataclasses.replace(s, proxies=add(s.proxies)) for s in self.memory_scenarios),
        )

    def load_order(self) -> tuple[str, ...]:
        """
        The proxies in the order they run the load scenarios: the baseline's variant right after the default.
        """
        if self.baseline is None:
            return BUSY_POLL_PROXIES
        after = BUSY_POLL_PROXIES.index(TXREVPROXY) + 1
        return (*BUSY_POLL_PROXIES[:after], self.baseline.proxy, *BUSY_POLL_PROXIES[after:])


@dataclass
class LoadResult:
    scenario: str
    proxy: str
    connections: int
    body_bytes: int
    streams: int = 1  # HTTP/2: requests in flight on each connection
    seconds: float = 0.0
    requests: int = 0
    requests_per_s: float = 0.0
    mib_per_s: float = 0.0  # response bodies only
    p50_us: float | None = None
    p75_us: float | None = None
    p90_us: float | None = None
    p99_us: float | None = None
    non_2xx_3xx: int = 0
    socket_errors: dict[str, int] = field(default_factory=dict)  # h2load: failed/errored/timeout requests
    errors: str = ""  # a summary of the measured run's errors, "" if none
    warmup_errors: str = ""
    failed: str = ""  # set when there is no measurement at all


@dataclass
class MemoryResult:
    scenario: str
    proxy: str
    baseline_kib: int = 0
    peak_kib: int = 0
    growth_mib: float | None = None
    per_connection_kib: float | None = None
    transferred_bytes: int = 0
    expected_bytes: int = 0
    seconds: float = 0.0
    complete: bool = False
    note: str = ""


@dataclass
class Incident:
    proxy: str
    phase: str
    message: str


@dataclass
class Run:
    started: str
    machine: dict[str, Any]
    settings: Settings
    load: list[LoadResult] = field(default_factory=list)
    memory: list[MemoryResult] = field(default_factory=list)
    incidents: list[Incident] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    duration_s: float = 0.0


# --- tools -------------------------------------------------------------------------------------------------------


def find_tool(name: str) -> str | None:
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin", "/sbin"])
    return shutil.which(name, path=path)


# The Debian package of each tool.
PACKAGES = {"wrk": "wrk", "nginx": "nginx", "h2load": "nghttp2-client"}


def ensure_tools(install: bool) -> Tools:
    """
    Find wrk, nginx and h2load; install the missing ones with apt-get when we can, say clearly when we cannot.
    """
    missing = [name for name in PACKAGES if find_tool(name) is None]
    named = " and ".join(missing)
    packages = [PACKAGES[name] for name in missing]
    if missing and not install:
        print(f"! {named} missing (--no-install): scenarios needing them are skipped.", file=sys.stderr)
    elif missing:
        if shutil.which("apt-get") is None:
            print(f"! {named} missing and apt-get unavailable: install them yourself.", file=sys.stderr)
        elif os.geteuid() != 0:
            hint = f"sudo apt-get install -y {' '.join(packages)}"
            print(f"! {named} missing; not root, so no apt-get: {hint}", file=sys.stderr)
        else:
            print(f"installing {' '.join(packages)} with apt-get ...", flush=True)
            env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
            update = subprocess.run(["apt-get", "update", "-q"], env=env, stdout=subprocess.DEVNULL, check=False)
            if update.returncode == 0:
                install_argv = ["apt-get", "install", "-y", "-q", *packages]
                subprocess.run(install_argv, env=env, stdout=subprocess.DEVNULL, check=False)
    return Tools(wrk=find_tool("wrk"), nginx=find_tool("nginx"), h2load=find_tool("h2load"))


# --- processes ----------------------------------------------------------------------------------------------------


class Lab:
    """
    The run's working directory, its tools and origins; starts proxies and records what went wrong with them.
    """

    def __init__(
        self, run: Run, tools: Tools, workdir: Path, stack: contextlib.ExitStack, baseline: Path | None = None
    ) -> None:
        self.run = run
        self.tools = tools
        self.workdir = workdir
        self.stack = stack
        self.baseline = baseline  # the baseline's exported tree, with --baseline
        self.files = _servers.write_static_files(workdir / "www", run.settings.transfer_bytes)
        self.origin: _procs.Child | None = None
        self._certificate: _servers.Certificate | None = None

    def nginx_origin(self) -> _procs.Child:
        if self.origin is None:
            self.origin = _servers.start_origin(self.tools, self.workdir, self.workdir / "www")
            self.stack.callback(_procs.stop, self.origin)
        return self.origin

    def certificate(self) -> _servers.Certificate:
        if self._certificate is None:
            directory = self.workdir / "tls"
            directory.mkdir()
            self._certificate = _servers.write_certificate(directory)
        return self._certificate

    @contextlib.contextmanager
    def serving(
        self, proxy: str, phase: str, upstream: _procs.Child | None = None, tls: bool = False
    ) -> Iterator[_procs.Child]:
        """
        A fresh ``proxy`` in front of ``upstream`` (the nginx origin by default) for one phase, listening with TLS
        if ``tls``; ``direct`` is the origin itself. Afterwards, a crash or trouble in its log becomes an incident.
        """
        upstream = upstream or self.nginx_origin()
        if proxy == DIRECT:
            yield upstream
            return
        cert = self.certificate() if tls else None
        child = _servers.start_proxy(proxy, self.tools, self.workdir, upstream.port, cert, self.baseline)
        try:
            yield child
        finally:
            exited = child.proc.poll()
            _procs.stop(child)
            if exited is not None:
                self.incident(proxy, phase, f"process exited with {exited}; log tail:\n{child.log_tail()}")
            for line in _servers.log_issues(child):
                self.incident(proxy, phase, f"log: {line}")
            for log in (
                child.log_path,
                child.error_log,
            ):  # one set of logs per phase, kept with --keep-temp
                if log is not None and log.exists():
                    log.rename(log.with_suffix(f".{phase}.log"))

    def incident(self, proxy: str, phase: str, message: str) -> None:
        print(f"  ! {proxy} ({phase}): {message}", flush=True)
        self.run.incidents.append(Incident(proxy, phase, message))


# --- load scenarios -----------------------------------------------------------------------------------------------


def run_load(lab: Lab) -> None:
    """
    Each proxy started once for its plain-HTTP scenarios, then (all plain runs done) once with TLS for the others.
    """
    for tls in (False, True):
        for proxy in lab.run.settings.load_order():
            scenarios = [s for s in lab.run.settings.load_scenarios if s.tls == tls and proxy in s.proxies]
            if scenarios:
                load_phase(lab, proxy, tls, scenarios)


def load_phase(lab: Lab, proxy: str, tls: bool, scenarios: list[LoadScenario]) -> None:
    phase = "load-tls" if tls else "load"
    try:
        with lab.serving(proxy, phase, tls=tls) as target:
            for scenario in scenarios:
                pinned = [target.pid, lab.nginx_origin().pid] if scenario.one_core else []
                with _procs.pinned_to(ONE_CORE, pinned):
                    result = measure_load(lab.tools, target, proxy, scenario, lab.run.settings)
                lab.run.load.append(result)
                print(f"  {proxy:22} {scenario.title:42} {summarize(result)}", flush=True)
    except _procs.StartupError as e:
        lab.incident(proxy, phase, f"did not start: {e}")


def load_client(tools: Tools, scenario: LoadScenario, url: str, seconds: float) -> _wrk.WrkReport:
    """
    One run of the scenario's load generator at ``url``.
    """
    if scenario.client == "h2load":
        assert tools.h2load
        return _h2load.run_h2load(
            tools.h2load, url, connections=scenario.connections, streams=scenario.streams, seconds=seconds
        )
    assert tools.wrk
    return _wrk.run_wrk(tools.wrk, url, connections=scenario.connections, seconds=seconds, headers=scenario.headers)


def measure_load(
    tools: Tools, target: _procs.Child, proxy: str, scenario: LoadScenario, settings: Settings
) -> LoadResult:
    result = LoadResult(scenario.key, proxy, scenario.connections, scenario.body_bytes, scenario.streams)
    url = target.url(scenario.path)
    try:
        warmup = load_client(tools, scenario, url, settings.warmup_seconds)
        report = load_client(tools, scenario, url, settings.load_seconds)
    except (OSError, subprocess.TimeoutExpired) as e:
        result.failed = f"{scenario.client} did not run: {e}"
        return result
    result.warmup_errors = warmup.error_summary()
    if not report.requests:
        why = report.error_summary() or f"no {scenario.client} report"
        result.failed = f"no requests completed ({why}): {report.output[-300:]!r}"
        return result
    result.seconds = report.seconds
    result.requests = report.requests
    result.requests_per_s = report.requests_per_s
    result.mib_per_s = report.requests_per_s * scenario.body_bytes / MiB
    result.p50_us = report.latency_us.get("50%")
    result.p75_us = report.latency_us.get("75%")
    result.p90_us = report.latency_us.get("90%")
    result.p99_us = report.latency_us.get("99%")
    result.non_2xx_3xx = report.non_2xx_3xx
    result.socket_errors = report.socket_errors
    result.errors = report.error_summary()
    return result


def summarize(r: LoadResult) -> str:
    if r.failed:
        return f"FAILED: {r.failed}"
    text = f"{r.requests_per_s:10,.0f} req/s  p50 {r.p50_us or 0:8,.0f} µs  p99 {r.p99_us or 0:9,.0f} µs"
    if r.body_bytes >= MiB:
        text += f"  {r.mib_per_s:,.0f} MiB/s"
    return text + (f"  ERRORS: {r.errors}" if r.errors else "")


# --- memory scenarios ---------------------------------------------------------------------------------------------


def run_memory(lab: Lab) -> None:
    measure = {
        "slow-reader": slow_reader,
        "slow-upstream": slow_upstream,
        "idle-connections": idle_connections,
    }
    for scenario in lab.run.settings.memory_scenarios:
        for proxy in scenario.proxies:
            try:
                result = measure[scenario.key](lab, proxy)
            except (_procs.StartupError, RuntimeError, OSError) as e:
                result = MemoryResult(scenario.key, proxy, note=f"not measured: {type(e).__name__}: {e}")
            lab.run.memory.append(result)
            print(f"  {proxy:22} {scenario.key:16} {describe(result)}", flush=True)


def describe(r: MemoryResult) -> str:
    text = f"growth {r.growth_mib:,.1f} MiB" if r.growth_mib is not None else "growth —"
    if r.per_connection_kib is not None:
        text += f", {r.per_connection_kib:,.1f} KiB/conn"
    text += f" in {r.seconds:,.1f} s"
    return text + (f"  NOTE: {r.note}" if r.note else "")


def warm_up(port: int, path: str = "/12b") -> None:
    """
    One small request through the proxy, so that the baseline includes imports, pools and buffers in use.
    """
    conns = _memory.open_idle_connections(port, 1, path)
    conns.close()
    if conns.failed:
        raise RuntimeError(f"warm-up request failed: {conns.first_error}")


def watched_transfer(child: _procs.Child, result: MemoryResult, transfer: Any, limit_s: float) -> None:
    """
    Run ``transfer(sock)`` while sampling the proxy's RSS; abort it past the RSS cap or ``limit_s``; fill ``result``.
    """
    baseline = _memory.settled_rss_kib(child.rss_kib)
    sock = socket.socket()
    sock.settimeout(limit_s)
    deadline = threading.Timer(limit_s, _memory.abort, [sock])
    sampler = _memory.RssSampler(
        child.rss_kib, baseline, cap_kib=RSS_CAP_MIB * 1024, on_cap=lambda: _memory.abort(sock)
    )
    try:
        deadline.start()
        with sampler:
            outcome: _memory.Transfer = transfer(sock)
    finally:
        deadline.cancel()
        sock.close()
    result.baseline_kib, result.peak_kib = baseline, sampler.peak_kib
    result.growth_mib = (sampler.peak_kib - baseline) / 1024
    result.transferred_bytes, result.expected_bytes = outcome.bytes, outcome.expected
    result.seconds = outcome.seconds
    result.complete = outcome.complete and not sampler.capped
    notes = []
    if sampler.capped:
        notes.append(f"aborted: RSS grew past {RSS_CAP_MIB} MiB")
    elif outcome.seconds >= limit_s - 1:
        notes.append(f"aborted after {limit_s:.0f} s")
    if not outcome.complete:
        moved = f"{outcome.bytes:,} of {outcome.expected:,} bytes"
        notes.append(f"incomplete: status {outcome.status}, {moved}" + (f", {outcome.error}" if outcome.error else ""))
    if not child.alive():
        notes.append(f"proxy exited with {child.proc.returncode}")
    result.note = "; ".join(notes)


def slow_reader(lab: Lab, proxy: str) -> MemoryResult:
    settings = lab.run.settings
    result = MemoryResult("slow-reader", proxy)
    size = lab.files["/big"]
    with lab.serving(proxy, "slow-reader") as child:
        warm_up(child.port)
        limit = 2 * size / settings.rate_bytes_per_s + 60

        def transfer(sock):
            return _memory.slow_download(child.port, "/big", size, settings.rate_bytes_per_s, sock)

        watched_transfer(child, result, transfer, limit)
    return result


def slow_upstream(lab: Lab, proxy: str) -> MemoryResult:
    settings = lab.run.settings
    result = MemoryResult("slow-upstream", proxy)
    size = settings.transfer_bytes
    origin = _servers.start_slow_origin(lab.workdir, settings.rate_bytes_per_s)
    try:
        with lab.serving(proxy, "slow-upstream", upstream=origin) as child:
            warm_up(child.port, "/")
            limit = 2 * size / settings.rate_bytes_per_s + 60
            watched_transfer(child, result, lambda sock: _memory.upload(child.port, size, sock), limit)
    finally:
        _procs.stop(origin)
    return result


def idle_connections(lab: Lab, proxy: str) -> MemoryResult:
    count = lab.run.settings.idle_connections
    result = MemoryResult("idle-connections", proxy, expected_bytes=count)
    with lab.serving(proxy, "idle-connections") as child:
        warm_up(child.port)
        baseline = _memory.settled_rss_kib(child.rss_kib)
        start = time.monotonic()
        conns = _memory.open_idle_connections(child.port, count)
        try:
            result.seconds = time.monotonic() - start
            after = _memory.settled_rss_kib(child.rss_kib, 2.0)
            open_now = conns.still_open()
        finally:
            conns.close()
    result.baseline_kib, result.peak_kib = baseline, after
    result.growth_mib = (after - baseline) / 1024
    result.per_connection_kib = (after - baseline) / count
    result.transferred_bytes = conns.ok
    result.complete = conns.ok == count and open_now == count
    notes = []
    if conns.failed:
        notes.append(f"{conns.failed} of {count} requests failed (first: {conns.first_error})")
    if open_now != count:
        notes.append(f"only {open_now} of {count} connections still open after the requests")
    result.note = "; ".join(notes)
    return result


# --- main ---------------------------------------------------------------------------------------------------------


def default_out() -> Path:
    return RESULTS / f"{time.strftime('%Y-%m-%d')}-{socket.gethostname()}.json"


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    tmp.rename(path)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs and 20 MiB transfers (about 2 minutes)")
    parser.add_argument(
        "--out",
        type=Path,
        help="the JSON file to write (default benchmarks/results/DATE-HOST.json)",
    )
    parser.add_argument("--only", choices=("load", "memory"), help="run only the load or only the memory scenarios")
    parser.add_argument("--no-install", action="store_true", help="do not apt-get install missing wrk/nginx/h2load")
    parser.add_argument("--keep-temp", action="store_true", help="keep the working directory (configs, logs)")
    parser.add_argument("--render", type=Path, metavar="JSON", help="print the tables of an earlier run and exit")
    parser.add_argument(
        "--baseline",
        metavar="REV",
        help="also run txrevproxy from this git revision of the repository (as 'txrevproxy @SHORTHASH'), in 12 B "
        "-c1 and -c50, 1 MiB -c10 and every memory scenario, next to this tree's",
    )
    return parser.parse_args(argv)


def check_python() -> None:
    try:
        import twisted  # noqa: F401 -- only checking that they are importable
        import txrevproxy  # noqa: F401
    except ImportError as e:
        sys.exit(f"run.py: {e}; run it with the Python that has txrevproxy installed (e.g. .venv/bin/python).")


def runnable(settings: Settings, tools: Tools, skipped: list[str]) -> Settings:
    """
    ``settings`` without the scenarios this machine cannot run (each one noted in ``skipped``).
    """
    return dataclasses.replace(
        settings,
        load_scenarios=runnable_load(settings.load_scenarios, tools, skipped),
        memory_scenarios=runnable_memory(settings, tools, skipped),
    )


def runnable_load(scenarios: tuple[LoadScenario, ...], tools: Tools, skipped: list[str]) -> tuple[LoadScenario, ...]:
    keep = []
    has_trustme = importlib.util.find_spec("trustme") is not None
    for scenario in scenarios:
        if scenario.client == "h2load" and not tools.h2load:
            skipped.append(f"{scenario.key}: h2load is needed (Debian package nghttp2-client)")
        elif scenario.tls and not has_trustme:
            skipped.append(f"{scenario.key}: trustme is needed for the certificate (pip install trustme)")
        else:
            keep.append(scenario)
    return tuple(keep)


def runnable_memory(settings: Settings, tools: Tools, skipped: list[str]) -> tuple[MemoryScenario, ...]:
    keep = []
    nofile = _procs.raise_nofile()
    for scenario in settings.memory_scenarios:
        if scenario.key != "slow-upstream" and not tools.nginx:
            skipped.append(f"{scenario.key}: nginx is needed for the origin")
        elif scenario.key == "idle-connections" and nofile < settings.idle_connections + 100:
            skipped.append(f"{scenario.key}: RLIMIT_NOFILE is only {nofile}")
        else:
            keep.append(scenario)
    return tuple(keep)


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through every finally, so all children are stopped


def resolve_baseline(revision: str | None) -> _baseline.Revision | None:
    """
    The ``--baseline`` revision as a commit of this repository; exit with one line if it is none.
    """
    if revision is None:
        return None
    try:
        return _baseline.resolve(revision)
    except _baseline.BaselineError as e:
        sys.exit(f"run.py: {e}")


def export_baseline(baseline: _baseline.Revision, workdir: Path) -> Path:
    """
    The baseline's tree exported to ``workdir/baseline``, checked to be what the daemon would load; exit if not.
    """
    directory = workdir / "baseline"
    try:
        _baseline.export(baseline.commit, directory)
        found = _baseline.verify(directory, _baseline.environment(directory), cwd=workdir)
    except _baseline.BaselineError as e:
        sys.exit(f"run.py: --baseline {baseline.revision}: {e}")
    print(f"baseline {baseline.proxy} ({baseline.commit}) in {directory}:", flush=True)
    for what, path in found:
        print(f"  {what}: {path}", flush=True)
    return directory


def execute(args: argparse.Namespace) -> dict[str, Any]:
    baseline = resolve_baseline(args.baseline)
    settings = Settings.make(args.quick, baseline)
    tools = ensure_tools(install=not args.no_install)
    run = Run(
        time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        _report.machine_info(tools),
        settings,
    )
    run.settings = settings = runnable(settings, tools, run.skipped)
    begin = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="txrevproxy-bench-"))
    try:
        with contextlib.ExitStack() as stack:
            lab = Lab(run, tools, workdir, stack, export_baseline(baseline, workdir) if baseline else None)
            if args.only != "memory":
                if tools.wrk and tools.nginx:
                    print("load scenarios (wrk, h2load):", flush=True)
                    run_load(lab)
                else:
                    run.skipped.append("load scenarios: wrk and nginx are needed")
            if args.only != "load" and settings.memory_scenarios:
                print("memory scenarios:", flush=True)
                run_memory(lab)
    finally:
        if args.keep_temp:
            print(f"working directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    run.duration_s = round(time.monotonic() - begin, 1)
    return dataclasses.asdict(run)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.render:
        print(_report.render_markdown(json.loads(args.render.read_text())))
        return 0
    check_python()
    signal.signal(signal.SIGTERM, _terminate)
    try:
        data = execute(args)
    except KeyboardInterrupt:
        print("\ninterrupted; every server it started has been stopped", file=sys.stderr)
        return 130
    out = args.out or default_out()
    write_json(out, data)
    print()
    print(_report.render_markdown(data))
    print(f"results written to {out} ({data['duration_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
