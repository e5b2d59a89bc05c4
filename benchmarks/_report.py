"""
What goes around the numbers: machine information, and the markdown tables printed from a results dict (the same
dict that is written as JSON, so ``run.py --render FILE`` reprints an old run).
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks._servers import TXREVPROXY_2, TXREVPROXY_BUSY, Tools

REPO = Path(__file__).resolve().parent.parent
PROXY_COLUMNS = ("direct", "txrevproxy", "twisted.web.proxy", "nginx")


def _first_line(argv: list[str]) -> str | None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (done.stdout + done.stderr).strip()
    return text.splitlines()[0] if text else None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total_mib() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return None


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return platform.system()


#: A KVM guest's halt polling: how long an idle vCPU polls before it halts (waking a halted one costs more).
HALT_POLL = Path("/sys/module/haltpoll/parameters/guest_halt_poll_ns")


def _guest_halt_poll_ns() -> int | None:
    try:
        return int(HALT_POLL.read_text())
    except (OSError, ValueError):
        return None


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    head = _first_line(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    if head is None or " " in head:
        return None
    argv = ["git", "-C", str(REPO), "status", "--porcelain", "--", "src"]
    dirty = subprocess.run(argv, capture_output=True, text=True, check=False)
    return head + ("+dirty (src/ modified)" if dirty.stdout.strip() else "")


def machine_info(tools: Tools) -> dict[str, Any]:
    wrk, nginx, h2load = tools.wrk, tools.nginx, tools.h2load
    return {
        "host": socket.gethostname(),
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "mem_total_mib": _mem_total_mib(),
        "os": _os_name(),
        "kernel": platform.release(),
        "guest_halt_poll_ns": _guest_halt_poll_ns(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "python_executable": sys.executable,
        "twisted": _version("twisted"),
        "txrevproxy": _version("txrevproxy"),
        "txrevproxy_commit": _git_commit(),
        "nginx": _first_line([nginx, "-v"]) if nginx else None,
        "wrk": (_first_line([wrk, "-v"]) or "").split(" Copyright")[0] or None if wrk else None,
        "h2load": _first_line([h2load, "--version"]) if h2load else None,
    }


# --- tables -------------------------------------------------------------------------------------------------------


def _number(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "—"
    return f"{value:,.{digits}f}"


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "—"
    return f"{a / b:.2f}×"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _load_rows(data: dict[str, Any]) -> list[list[str]]:
    by_key = {(r["scenario"], r["proxy"]): r for r in data["load"]}
    rows = []
    for scenario in data["settings"]["load_scenarios"]:
        key, title = scenario["key"], scenario["title"]
        for label, field, digits in _metrics_for(scenario):
            values, cells = {}, []
            for proxy in PROXY_COLUMNS:
                result = by_key.get((key, proxy))
                value = _metric(result, field, by_key.get((key, "direct")))
                values[proxy] = value
                mark = " ⚠" if result and (result["errors"] or result["failed"]) else ""
                cells.append(_number(value, digits) + mark if result else "—")
            better = "lower" if "latency" in label else "higher"
            rows.append(
                [title, f"{label} ({better} is better)", *cells]
                + [_ratio(values["txrevproxy"], values[other]) for other in ("twisted.web.proxy", "nginx")]
            )
    return rows


def _metrics_for(scenario: dict[str, Any]) -> list[tuple[str, str, int]]:
    if scenario["connections"] == 1:
        return [
            ("median latency, µs", "p50_us", 0),
            ("p99 latency, µs", "p99_us", 0),
            ("added median latency vs direct, µs", "added_p50_us", 0),
            ("req/s", "requests_per_s", 0),
        ]
    if "Connection: close" in scenario.get("headers", ()):
        return [("TLS handshakes/s (one request each)", "requests_per_s", 0), ("p99 latency, µs", "p99_us", 0)]
    if scenario["body_bytes"] >= 1 << 20:
        return [("MiB/s", "mib_per_s", 0), ("p99 latency, µs", "p99_us", 0)]
    return [("req/s", "requests_per_s", 0), ("p99 latency, µs", "p99_us", 0)]


def _metric(result: dict[str, Any] | None, field: str, direct: dict[str, Any] | None) -> float | None:
    if result is None or result["failed"]:
        return None
    if field == "added_p50_us":
        if result["proxy"] == "direct" or direct is None or direct["p50_us"] is None or result["p50_us"] is None:
            return None
        return result["p50_us"] - direct["p50_us"]
    return result[field]


#: txrevproxy's runs with options beyond the defaults, each compared with the default run.
VARIANTS = (TXREVPROXY_2, TXREVPROXY_BUSY)


def _variant_rows(data: dict[str, Any]) -> list[list[str]]:
    """
    Each scenario run with a txrevproxy variant: its headline figure with the defaults and with the option (the
    added median latency at ``-c1``; else throughput), and the ratio.
    """
    by_key = {(r["scenario"], r["proxy"]): r for r in data["load"]}
    rows = []
    for scenario in data["settings"]["load_scenarios"]:
        key = scenario["key"]
        field, label = _headline(scenario)
        direct, default = by_key.get((key, "direct")), by_key.get((key, "txrevproxy"))
        for variant in VARIANTS:
            other = by_key.get((key, variant))
            if default is None or other is None:
                continue  # (not run with this variant)
            a, b = _metric(default, field, direct), _metric(other, field, direct)
            option = variant.removeprefix("txrevproxy ")
            rows.append([scenario["title"], label, option, _number(a), _number(b), _ratio(b, a)])
    return rows


def _headline(scenario: dict[str, Any]) -> tuple[str, str]:
    """
    The field and the label of a scenario's headline figure: added median latency at ``-c1``, else throughput.
    """
    if scenario["connections"] == 1:
        return "added_p50_us", "added median latency vs direct, µs (lower is better)"
    if scenario["body_bytes"] >= 1 << 20:
        return "mib_per_s", "MiB/s"
    return "requests_per_s", "req/s"


def _baseline_rows(data: dict[str, Any]) -> list[list[str]]:
    """
    With ``--baseline``: each scenario the baseline ran, its figures next to this tree's (the default txrevproxy),
    the ratio and the difference: the headline figure and p99 latency of the load scenarios, and for the memory
    scenarios the RSS growth and the RSS the proxy had settled at before it.
    """
    baseline = data["settings"].get("baseline")
    if not baseline:
        return []
    name = baseline["proxy"]
    rows = []
    load = {(r["scenario"], r["proxy"]): r for r in data["load"]}
    for scenario in data["settings"]["load_scenarios"]:
        key = scenario["key"]
        ours, theirs, direct = load.get((key, "txrevproxy")), load.get((key, name)), load.get((key, "direct"))
        if ours is None or theirs is None:
            continue
        for field, label in (_headline(scenario), ("p99_us", "p99 latency, µs (lower is better)")):
            a, b = _metric(theirs, field, direct), _metric(ours, field, direct)
            rows.append([scenario["title"], label, *_side_by_side(a, b, theirs, ours, 0)])
    memory = {(r["scenario"], r["proxy"]): r for r in data["memory"]}
    for scenario in data["settings"]["memory_scenarios"]:
        key = scenario["key"]
        ours, theirs = memory.get((key, "txrevproxy")), memory.get((key, name))
        if ours is None or theirs is None:
            continue
        if ours["per_connection_kib"] is not None or theirs["per_connection_kib"] is not None:
            figures = [("per_connection_kib", "RSS growth per connection, KiB (lower is better)", 1)]
        else:
            figures = [("growth_mib", "peak RSS growth, MiB (lower is better)", 1)]
        figures.append(("rss_before_mib", "RSS settled at before the scenario, MiB", 1))
        for field, label, digits in figures:
            a, b = _memory_metric(theirs, field), _memory_metric(ours, field)
            rows.append([scenario["title"], label, *_side_by_side(a, b, theirs, ours, digits)])
    return rows


def _memory_metric(result: dict[str, Any], field: str) -> float | None:
    if field == "rss_before_mib":
        return result["baseline_kib"] / 1024 if result["baseline_kib"] else None
    value: float | None = result[field]
    return value


def _trouble(result: dict[str, Any]) -> bool:
    return bool(result.get("failed") or result.get("errors") or result.get("complete") is False)


def _side_by_side(
    theirs: float | None, ours: float | None, their_result: dict[str, Any], our_result: dict[str, Any], digits: int
) -> list[str]:
    """
    The baseline's figure, this tree's (each marked ⚠ if its run had trouble), their ratio and their difference.
    """
    difference = "—" if theirs is None or ours is None else f"{ours - theirs:+,.{digits}f}"
    return [
        _number(theirs, digits) + (" ⚠" if _trouble(their_result) else ""),
        _number(ours, digits) + (" ⚠" if _trouble(our_result) else ""),
        _ratio(ours, theirs),
        difference,
    ]


def _memory_rows(data: dict[str, Any]) -> list[list[str]]:
    by_key = {(r["scenario"], r["proxy"]): r for r in data["memory"]}
    rows = []
    for scenario in data["settings"]["memory_scenarios"]:
        cells = []
        for proxy in PROXY_COLUMNS[1:]:
            result = by_key.get((scenario["key"], proxy))
            if result is None:
                cells.append("—")
                continue
            per_conn = result["per_connection_kib"]
            value = _number(per_conn, 1) if per_conn is not None else _number(result["growth_mib"], 1)
            cells.append(value + ("" if result["complete"] else " ⚠"))
        rows.append([scenario["title"], *cells])
    return rows


def _notes(data: dict[str, Any]) -> list[str]:
    notes = []
    for r in data["load"]:
        if r["failed"] or r["errors"] or r["warmup_errors"]:
            what = r["failed"] or r["errors"] or f"(warm-up only) {r['warmup_errors']}"
            notes.append(f"{r['proxy']}, {r['scenario']}: {what}")
    for r in data["memory"]:
        if r["note"]:
            notes.append(f"{r['proxy']}, {r['scenario']}: {r['note']}")
    for incident in data["incidents"]:
        notes.append(f"{incident['proxy']} ({incident['phase']}): {incident['message']}")
    return notes


def _setup(m: dict[str, Any], s: dict[str, Any]) -> str:
    tools = "; ".join(str(m.get(tool)) for tool in ("nginx", "wrk", "h2load") if m.get(tool))
    clients = "wrk -t1" + (" (h2load -t1 for HTTP/2)" if m.get("h2load") else "")
    halt_poll = m.get("guest_halt_poll_ns")
    vcpu = "" if halt_poll is None else f" (guest halt polling {halt_poll:,} ns)"
    return (
        f"{m['cpu_model']}, {m['cores']} cores{vcpu}, {m['os']}; {m['python']}, Twisted {m['twisted']}, "
        f"txrevproxy {m['txrevproxy']} ({m['txrevproxy_commit']}); {tools}. "
        f"{clients}, {s['load_seconds']:g} s per run after {s['warmup_seconds']:g} s warm-up; "
        "every server is one process / one worker on 127.0.0.1 (but txrevproxy --workers 2); the columns show "
        "txrevproxy with its defaults."
    )


def render_markdown(data: dict[str, Any]) -> str:
    m, s = data["machine"], data["settings"]
    out = [
        f"## txrevproxy benchmark — {data['started']}" + (" (quick)" if s["quick"] else ""),
        "",
        _setup(m, s),
        "",
    ]
    if data["load"]:
        header = [
            "scenario",
            "metric",
            *PROXY_COLUMNS,
            "txrevproxy ÷ twisted.web.proxy",
            "txrevproxy ÷ nginx",
        ]
        out += ["### Load (wrk; h2load for HTTP/2)", "", _table(header, _load_rows(data)), ""]
        variants = _variant_rows(data)
        if variants:
            header = ["scenario", "metric", "option", "defaults", "with the option", "ratio"]
            out += ["### txrevproxy's options (--workers 2: scaling; --busy-poll-us)", "", _table(header, variants), ""]
    against = _baseline_rows(data)
    if against:
        baseline = s["baseline"]
        short = baseline["proxy"].removeprefix("txrevproxy ")
        header = [
            "scenario",
            "metric",
            f"baseline {short}",
            "this tree",
            "this tree ÷ baseline",
            "this tree − baseline",
        ]
        out += [
            f"### This tree against the baseline {short} (--baseline {baseline['revision']}: {baseline['commit']})",
            "",
            (
                "The same daemon, command line and interpreter; the baseline's package and twistd plugin first on "
                "PYTHONPATH. Each started right after this tree's, for the same scenarios."
            ),
            "",
            _table(header, against),
            "",
        ]
    if data["memory"]:
        out += [
            "### Memory (RSS of the proxy process)",
            "",
            _table(["scenario", *PROXY_COLUMNS[1:]], _memory_rows(data)),
            "",
        ]
    notes = _notes(data)
    out += ["### Errors and notes", ""] + ([f"- {n}" for n in notes] if notes else ["- none"])
    for line in data.get("skipped", []):
        out.append(f"- skipped: {line}")
    return "\n".join(out) + "\n"
