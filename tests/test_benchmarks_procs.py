"""
The benchmark runner's pinning of processes to one core (benchmarks/_procs.py ``pinned_to``), for its one-core
scenario. The runner itself is never part of the test suite.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from benchmarks import _procs


def test_pinned_to_pins_a_process_tree_and_this_process_then_restores_them():
    """Inside, this process, a child and the child's own child run on the one core; afterwards as before."""
    cpu = max(os.sched_getaffinity(0))
    parent = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys; subprocess.run(['sleep', '30'])"],
    )
    try:
        deadline = time.monotonic() + 20
        while len(_procs.process_tree(parent.pid)) < 2:  # (until the child has started its sleep)
            assert time.monotonic() < deadline, "the child process did not start"
            time.sleep(0.01)
        tree = _procs.process_tree(parent.pid)
        before = {pid: os.sched_getaffinity(pid) for pid in [0, *tree]}
        with _procs.pinned_to(cpu, [parent.pid]):
            assert all(os.sched_getaffinity(pid) == {cpu} for pid in [0, *tree])
        assert {pid: os.sched_getaffinity(pid) for pid in [0, *tree]} == before
    finally:
        for pid in reversed(_procs.process_tree(parent.pid)):
            os.kill(pid, 9)
        parent.wait()


def test_pinned_to_nothing_pins_nothing():
    """With no processes named, not even this one is pinned."""
    before = os.sched_getaffinity(0)
    with _procs.pinned_to(0, []):
        assert os.sched_getaffinity(0) == before
