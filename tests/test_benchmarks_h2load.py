"""
The benchmark runner's h2load report parser (benchmarks/_h2load.py): summary numbers, error counts, and latency
percentiles from the per-request log. The runner itself is never part of the test suite.
"""

from __future__ import annotations

from benchmarks import _h2load

# The tail of a real ``h2load -c10 -m5 -D2`` run through txrevproxy (nghttp2 1.52.0).
REPORT = """\
Application protocol: h2
Main benchmark duration is over for thread #0. Stopping all clients.
Stopped all clients for thread #0

finished in 2.00s, 3550.50 req/s, 164.30KB/s
requests: 7101 total, 7151 started, 7101 done, 7101 succeeded, 0 failed, 0 errored, 0 timeout
status codes: 7121 2xx, 0 3xx, 0 4xx, 0 5xx
traffic: 328.60KB (336487) total, 56.98KB (58348) headers (space savings 95.66%), 83.45KB (85452) data
                     min         max         mean         sd        +/- sd
time for request:     4.98ms     37.66ms     13.97ms      2.28ms    97.21%
time for connect:     4.60ms      7.54ms      6.13ms       983us    60.00%
time to 1st byte:    21.40ms     26.03ms     25.53ms      1.45ms    90.00%
req/s           :     354.84      355.35      354.92        0.15    90.00%
"""


def test_summary():
    """Duration, requests/s and succeeded requests are read from the summary; no errors are reported."""
    report = _h2load.parse_h2load(REPORT)
    assert (report.seconds, report.requests_per_s, report.requests) == (2.0, 3550.5, 7101)
    assert report.socket_errors == {"failed": 0, "errored": 0, "timeout": 0}
    assert report.non_2xx_3xx == 0
    assert report.error_summary() == ""


def test_errors():
    """Failed, errored and timed-out requests and 4xx/5xx answers are counted and summarized."""
    output = REPORT.replace("0 failed, 0 errored, 0 timeout", "3 failed, 2 errored, 1 timeout").replace(
        "0 4xx, 0 5xx", "1 4xx, 2 5xx"
    )
    report = _h2load.parse_h2load(output)
    assert report.socket_errors == {"failed": 3, "errored": 2, "timeout": 1}
    assert report.non_2xx_3xx == 3
    assert report.error_summary() == (
        "3 failed requests, 2 errored requests, 1 timeout requests, 3 non-2xx/3xx responses"
    )


def test_no_report():
    """Output without a summary (h2load could not connect) leaves every number at zero, the output kept."""
    report = _h2load.parse_h2load("No protocol negotiated. Fallback behaviour may be activated\n")
    assert (report.requests, report.requests_per_s, report.latency_us) == (0, 0.0, {})
    assert report.output.startswith("No protocol negotiated")


def test_latency_percentiles():
    """Percentiles are the nearest rank of the third column (microseconds to the end of the response)."""
    log = "".join(f"1795000000{i:06d}\t200\t{i}\n" for i in range(100, 0, -1))
    assert _h2load.latency_percentiles(log) == {"50%": 50.0, "75%": 75.0, "90%": 90.0, "99%": 99.0}


def test_latency_percentiles_of_one_and_none():
    """One request is every percentile; an empty or malformed log has none."""
    assert _h2load.latency_percentiles("1\t200\t1234\n") == dict.fromkeys(("50%", "75%", "90%", "99%"), 1234.0)
    assert _h2load.latency_percentiles("") == {}
    assert _h2load.latency_percentiles("garbage\n") == {}
