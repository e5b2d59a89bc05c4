"""
Running ``wrk --latency`` and reading its report: requests/s, latency percentiles, and every kind of error it counts.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from typing import ClassVar

_TIME_UNITS = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}
# wrk's units are binary.
_SIZE_UNITS = {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}


@dataclass
class WrkReport:
    requests: int = 0
    seconds: float = 0.0
    requests_per_s: float = 0.0
    transfer_bytes_per_s: float = 0.0
    latency_us: dict[str, float] = field(default_factory=dict)  # "50%" -> microseconds
    socket_errors: dict[str, int] = field(default_factory=dict)  # connect/read/write/timeout
    non_2xx_3xx: int = 0
    exit_code: int = 0
    output: str = ""
    TOOL: ClassVar[str] = "wrk"
    ERROR_NOUN: ClassVar[str] = "errors"  # "3 read errors"

    @property
    def error_count(self) -> int:
        return self.non_2xx_3xx + sum(self.socket_errors.values()) + (1 if self.exit_code else 0)

    def error_summary(self) -> str:
        parts = [f"{n} {kind} {self.ERROR_NOUN}" for kind, n in self.socket_errors.items() if n]
        if self.non_2xx_3xx:
            parts.append(f"{self.non_2xx_3xx} non-2xx/3xx responses")
        if self.exit_code:
            parts.append(f"{self.TOOL} exited with {self.exit_code}")
        return ", ".join(parts)


def run_wrk(
    wrk: str,
    url: str,
    *,
    connections: int,
    seconds: float,
    threads: int = 1,
    headers: tuple[str, ...] = (),
) -> WrkReport:
    argv = [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds:g}s",
        "--latency",
        "--timeout",
        "10s",
        *(arg for header in headers for arg in ("-H", header)),
        url,
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
    report = parse_wrk(done.stdout + done.stderr)
    report.exit_code = done.returncode
    return report


def _micros(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)([a-z]+)", text).groups()  # type: ignore[union-attr]
    return float(number) * _TIME_UNITS[unit]


def _bytes(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)([KMGT]?B)", text).groups()  # type: ignore[union-attr]
    return float(number) * _SIZE_UNITS[unit]


def parse_wrk(output: str) -> WrkReport:
    """
    Read a ``wrk --latency`` report; anything missing stays at its zero default (the raw output is kept).
    """
    report = WrkReport(output=output)
    for pct, value in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)\s*$", output, re.MULTILINE):
        report.latency_us[f"{pct}%"] = _micros(value)
    if m := re.search(r"^\s*(\d+) requests in ([\d.]+)(\w+),", output, re.MULTILINE):
        report.requests = int(m.group(1))
        report.seconds = _micros(m.group(2) + m.group(3)) / 1e6
    if m := re.search(r"^Requests/sec:\s+([\d.]+)", output, re.MULTILINE):
        report.requests_per_s = float(m.group(1))
    if m := re.search(r"^Transfer/sec:\s+(\S+)", output, re.MULTILINE):
        report.transfer_bytes_per_s = _bytes(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output):
        report.socket_errors = dict(zip(("connect", "read", "write", "timeout"), map(int, m.groups()), strict=False))
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", output):
        report.non_2xx_3xx = int(m.group(1))
    return report
