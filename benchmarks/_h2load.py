"""
Running ``h2load`` (nghttp2's HTTP/2 load generator) and reading its report: requests/s, the counts of failed,
errored and timed-out requests and of 4xx/5xx answers, and latency percentiles from its per-request log (its summary
gives only min/max/mean).
"""

from __future__ import annotations

import math
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from benchmarks._wrk import WrkReport

PERCENTILES = (50, 75, 90, 99)
_ERROR_KINDS = ("failed", "errored", "timeout")


@dataclass
class H2loadReport(WrkReport):
    """
    wrk's record, filled from h2load: ``socket_errors`` holds its failed, errored and timed-out requests, and
    ``transfer_bytes_per_s`` stays 0.
    """

    TOOL: ClassVar[str] = "h2load"
    ERROR_NOUN: ClassVar[str] = "requests"  # "3 failed requests"


def run_h2load(h2load: str, url: str, *, connections: int, streams: int, seconds: float) -> H2loadReport:
    """
    ``connections`` HTTP/2 connections with ``streams`` requests in flight on each, for ``seconds``, one thread.
    """
    with tempfile.TemporaryDirectory(prefix="h2load-") as tmp:
        log_file = Path(tmp) / "requests.tsv"
        argv = [
            h2load,
            f"--clients={connections}",
            f"--max-concurrent-streams={streams}",
            f"--duration={seconds:g}",
            f"--log-file={log_file}",
            url,
        ]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
        report = parse_h2load(done.stdout + done.stderr)
        if log_file.exists():
            report.latency_us = latency_percentiles(log_file.read_text())
    report.exit_code = done.returncode
    return report


def parse_h2load(output: str) -> H2loadReport:
    """
    Read h2load's summary; anything missing stays at its zero default (the raw output is kept).
    """
    report = H2loadReport(output=output)
    if m := re.search(r"^finished in ([\d.]+)s, ([\d.]+) req/s", output, re.MULTILINE):
        report.seconds = float(m.group(1))
        report.requests_per_s = float(m.group(2))
    if m := re.search(
        r"^requests: .* (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout", output, re.MULTILINE
    ):
        report.requests = int(m.group(1))
        report.socket_errors = dict(zip(_ERROR_KINDS, map(int, m.groups()[1:]), strict=False))
    if m := re.search(r"^status codes: .* (\d+) 4xx, (\d+) 5xx", output, re.MULTILINE):
        report.non_2xx_3xx = int(m.group(1)) + int(m.group(2))
    return report


def latency_percentiles(log: str) -> dict[str, float]:
    """
    The 50/75/90/99th percentiles (nearest rank), in microseconds, of the response times in an h2load ``--log-file``
    (tab-separated: start time, status, microseconds until the end of the response); ``{}`` if it has none.
    """
    times = sorted(int(columns[2]) for line in log.splitlines() if len(columns := line.split("\t")) >= 3)
    if not times:
        return {}
    return {f"{p}%": float(times[max(math.ceil(p / 100 * len(times)) - 1, 0)]) for p in PERCENTILES}
