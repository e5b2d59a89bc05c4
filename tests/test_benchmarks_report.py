"""
The benchmark report's table of txrevproxy's options (benchmarks/_report.py): each variant against the default
run, latency at ``-c1`` as added over direct. The runner itself is never part of the test suite.
"""

from __future__ import annotations

from benchmarks import _report


def result(scenario: str, proxy: str, **figures: float) -> dict[str, object]:
    return {"scenario": scenario, "proxy": proxy, "failed": None, "errors": None, "p50_us": None, **figures}


DATA = {
    "settings": {
        "load_scenarios": [
            {"key": "12b-c1", "title": "12 B, -c1", "connections": 1, "body_bytes": 12},
            {"key": "12b-c50", "title": "12 B, -c50", "connections": 50, "body_bytes": 12},
            {"key": "1m-c10", "title": "1 MiB, -c10", "connections": 10, "body_bytes": 1 << 20},
        ]
    },
    "load": [
        result("12b-c1", "direct", p50_us=70),
        result("12b-c1", "txrevproxy", p50_us=190),
        result("12b-c1", "txrevproxy --busy-poll-us 50", p50_us=115),
        result("12b-c50", "txrevproxy", requests_per_s=16000),
        result("12b-c50", "txrevproxy --workers 2", requests_per_s=20000),
        result("12b-c50", "txrevproxy --busy-poll-us 50", requests_per_s=15000),
        result("1m-c10", "txrevproxy", mib_per_s=1500),
    ],
}


def test_each_variant_is_compared_with_the_default_run():
    """A row per scenario and variant run: added latency over direct at -c1, else throughput; none without both."""
    rows = _report._variant_rows(DATA)
    assert [row[0] for row in rows] == ["12 B, -c1", "12 B, -c50", "12 B, -c50"]
    assert rows[0][2:] == ["--busy-poll-us 50", "120", "45", "0.38×"]
    assert rows[0][1].startswith("added median latency vs direct")
    assert rows[1][1:] == ["req/s", "--workers 2", "16,000", "20,000", "1.25×"]
    assert rows[2][2:] == ["--busy-poll-us 50", "16,000", "15,000", "0.94×"]


def test_the_setup_names_the_guest_halt_polling_when_known():
    """The setup line says how long the machine's idle vCPUs poll before halting, when the kernel says."""
    machine = {
        "cpu_model": "CPU", "cores": 2, "os": "OS", "python": "CPython 3.11", "twisted": "26", "txrevproxy": "0.1",
        "txrevproxy_commit": "abc",
    }  # fmt: skip
    settings = {"load_seconds": 8, "warmup_seconds": 2}
    assert "(guest halt polling" not in _report._setup(machine, settings)
    assert "2 cores (guest halt polling 200,000 ns)" in _report._setup(
        {**machine, "guest_halt_poll_ns": 200000}, settings
    )
