"""
The benchmark's ``--baseline REV`` (benchmarks/_baseline.py and its parts in run.py, _servers.py and _report.py):
the revision resolved and exported, the variant's name, command line and environment, its scenarios, the check that
the daemon loads the baseline's code, and the report's table of this tree against it. No server is started.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from benchmarks import _baseline, _report, _servers, run

REVISION = _baseline.Revision("HEAD~2", "cfc35bd7e35fe274f72c7cd783616af25f74bdb4", "txrevproxy @cfc35bd")
BASELINE = REVISION.proxy
RESULTS = Path(run.__file__).resolve().parent / "results"

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is needed")


def git(repo: Path, *args: str) -> str:
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t")
    env["GIT_COMMITTER_EMAIL"] = "t@t"
    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True, env=env)
    return done.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """
    A repository of two commits: the first with ``src/old.py``, the second (HEAD) with ``new.py`` too.
    """
    path = tmp_path / "repo"
    path.mkdir()
    git(path, "init", "-q")
    (path / "src").mkdir()
    (path / "src" / "old.py").write_text("old = 1\n")
    git(path, "add", ".")
    git(path, "commit", "-q", "-m", "first")
    (path / "new.py").write_text("new = 2\n")
    git(path, "add", ".")
    git(path, "commit", "-q", "-m", "second")
    return path


# --- the command line and the revision ----------------------------------------------------------------------------


def test_the_baseline_option_takes_a_revision_and_is_off_by_default():
    """``--baseline REV`` is kept as given; without it there is no baseline."""
    assert run.parse_args(["--baseline", "HEAD~3", "--quick"]).baseline == "HEAD~3"
    assert run.parse_args([]).baseline is None


@needs_git
def test_a_revision_resolves_to_its_full_hash_and_a_variant_named_by_its_short_hash(repo: Path):
    """The revision is kept as given, with its full hash; the variant is ``txrevproxy @`` and git's short hash."""
    found = _baseline.resolve("HEAD~1", repo)
    full = git(repo, "rev-parse", "HEAD~1")
    assert found == _baseline.Revision("HEAD~1", full, "txrevproxy @" + git(repo, "rev-parse", "--short", full))
    assert len(found.commit) == 40
    assert _baseline.is_baseline(found.proxy)
    assert not _baseline.is_baseline(_servers.TXREVPROXY_2)


@needs_git
@pytest.mark.parametrize("revision", ["no-such-branch", "--help", "HEAD~5"])
def test_an_unknown_revision_is_one_clear_line(repo: Path, revision: str):
    """A revision naming no commit (or looking like an option) fails with one line naming it."""
    with pytest.raises(_baseline.BaselineError) as caught:
        _baseline.resolve(revision, repo)
    assert str(caught.value) == f"--baseline {revision}: not a known revision of {repo}"


def test_the_runner_exits_with_that_line_before_doing_anything_else(monkeypatch: pytest.MonkeyPatch):
    """run.py turns an unknown --baseline into an exit with its one line (before installing or starting anything)."""

    def unknown(revision: str) -> _baseline.Revision:
        raise _baseline.BaselineError(f"--baseline {revision}: not a known revision of /repo")

    monkeypatch.setattr(_baseline, "resolve", unknown)
    monkeypatch.setattr(run, "ensure_tools", lambda install: pytest.fail("tools looked for"))
    with pytest.raises(SystemExit) as caught:
        run.execute(run.parse_args(["--baseline", "nope"]))
    assert caught.value.code == "run.py: --baseline nope: not a known revision of /repo"


@needs_git
def test_the_export_is_the_commits_tree_alone(repo: Path, tmp_path: Path):
    """``git archive REV | tar -x``: the files of that commit, not later ones nor the checkout's untracked files."""
    (repo / "untracked.py").write_text("")
    _baseline.export(git(repo, "rev-parse", "HEAD~1"), tmp_path / "baseline", repo)
    assert sorted(str(p.relative_to(tmp_path / "baseline")) for p in (tmp_path / "baseline").rglob("*")) == [
        "src",
        "src/old.py",
    ]


# --- the variant's command line and environment ------------------------------------------------------------------


def test_the_baseline_runs_the_default_command_line_with_its_tree_first_on_pythonpath(tmp_path: Path):
    """Same interpreter and twistd arguments as the default txrevproxy; PYTHONPATH is baseline/src then baseline."""
    directory = tmp_path / "baseline"
    ours, _, our_env = _servers.txrevproxy_command(_servers.TXREVPROXY, tmp_path, 8080)
    theirs, log, env = _servers.txrevproxy_command(BASELINE, tmp_path, 8080, baseline=directory)
    assert theirs == ours
    assert "--reactor=txrevproxy" in theirs
    assert our_env is None  # (this process's environment)
    assert env is not None
    assert env["PYTHONPATH"].split(os.pathsep)[:2] == [f"{directory}/src", str(directory)]
    assert log == tmp_path / "txrevproxy-baseline.log"
    with pytest.raises(ValueError):
        _servers.txrevproxy_command(BASELINE, tmp_path, 8080)  # (no exported tree)


def test_the_environment_changes_pythonpath_alone():
    """Everything else is this process's environment; a PYTHONPATH already set follows the baseline's two entries."""
    base = {"PATH": "/bin", "LANG": "C"}
    assert _baseline.environment(Path("/b"), base) == {"PATH": "/bin", "LANG": "C", "PYTHONPATH": "/b/src:/b"}
    assert _baseline.environment(Path("/b"), {"PYTHONPATH": "/x"})["PYTHONPATH"] == "/b/src:/b:/x"
    assert base == {"PATH": "/bin", "LANG": "C"}


# --- the check that the daemon loads the baseline's code ---------------------------------------------------------

PLUGIN = """\
from twisted.application.reactors import Reactor
from twisted.application.service import ServiceMaker

txrevproxy = ServiceMaker("txrevproxy", "txrevproxy.tap", "a baseline", "txrevproxy")
txrevproxy_reactor = Reactor("txrevproxy", "txrevproxy._reactor", "a baseline's reactor")
"""


def fake_baseline(directory: Path, plugins: str | None, package: bool = True) -> Path:
    """
    An exported tree with an empty ``txrevproxy`` package under src/ (if ``package``) and its twistd plugin in
    ``plugins`` ("src/twisted/plugins" as in old revisions, "twisted/plugins" as in new ones; None: no plugin).
    """
    if package:
        (directory / "src" / "txrevproxy").mkdir(parents=True)
        for name in ("__init__.py", "tap.py", "_reactor.py"):
            (directory / "src" / "txrevproxy" / name).write_text("")
    if plugins:
        (directory / plugins).mkdir(parents=True)
        (directory / plugins / "txrevproxy_plugin.py").write_text(PLUGIN)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@pytest.mark.parametrize("plugins", ["src/twisted/plugins", "twisted/plugins"])
def test_the_check_finds_the_baselines_package_plugin_and_reactor(tmp_path: Path, plugins: str):
    """With the plugin where old or new revisions keep it, the daemon's package, plugin and reactor are its own."""
    directory = fake_baseline(tmp_path / "baseline", plugins)
    package, plugin = directory / "src" / "txrevproxy", str(directory / plugins / "txrevproxy_plugin.py")
    assert _baseline.verify(directory, _baseline.environment(directory), cwd=tmp_path) == [
        ("the txrevproxy package", str(package / "__init__.py")),
        ("the twistd plugin txrevproxy", plugin),
        ("its module", str(package / "tap.py")),
        ("the reactor txrevproxy", plugin),
        ("its module", str(package / "_reactor.py")),
    ]


def test_the_check_fails_when_the_plugin_would_be_this_trees(tmp_path: Path):
    """A baseline without its own twistd plugin would run this tree's: the check says so and where it is from."""
    directory = fake_baseline(tmp_path / "baseline", None)
    with pytest.raises(_baseline.BaselineError, match="would load the twistd plugin txrevproxy from /"):
        _baseline.verify(directory, _baseline.environment(directory), cwd=tmp_path)


def test_the_check_fails_when_the_package_would_be_this_trees(tmp_path: Path):
    """A baseline environment that leaves this tree's package first fails the check."""
    directory = fake_baseline(tmp_path / "baseline", "twisted/plugins", package=False)
    with pytest.raises(_baseline.BaselineError, match="would load the txrevproxy package from /"):
        _baseline.verify(directory, _baseline.environment(directory), cwd=tmp_path)


def test_from_the_repository_root_this_trees_plugin_would_come_first(tmp_path: Path):
    """Why the daemons run in the working directory: a ``-c`` interpreter puts the current directory first."""
    root = Path(_report.REPO)
    assert (root / "twisted" / "plugins" / "txrevproxy_plugin.py").exists()
    directory = fake_baseline(tmp_path / "baseline", "src/twisted/plugins")
    with pytest.raises(_baseline.BaselineError, match=f"from {root}/twisted/plugins/"):
        _baseline.verify(directory, _baseline.environment(directory), cwd=root)


# --- scenarios and settings ---------------------------------------------------------------------------------------


def test_the_baseline_runs_right_after_the_default_in_its_load_scenarios_and_every_memory_scenario():
    """12 B -c1 and -c50, 1 MiB -c10 and the memory scenarios run it next after txrevproxy; nothing else does."""
    plain, settings = run.Settings.make(quick=True), run.Settings.make(quick=True, baseline=REVISION)
    for before, after in zip(plain.load_scenarios, settings.load_scenarios, strict=True):
        if before.key in ("12b-c1", "12b-c50", "1m-c10"):
            i = before.proxies.index(_servers.TXREVPROXY) + 1
            assert after.proxies == (*before.proxies[:i], BASELINE, *before.proxies[i:])
        else:
            assert after == before
    assert {s.key for s in settings.load_scenarios if BASELINE in s.proxies} == set(run.BASELINE_LOAD_SCENARIOS)
    for before, after in zip(plain.memory_scenarios, settings.memory_scenarios, strict=True):
        assert after.proxies == (_servers.TXREVPROXY, BASELINE, *before.proxies[1:])
    assert plain.load_order() == run.BUSY_POLL_PROXIES
    assert settings.load_order() == (run.DIRECT, run.TXREVPROXY, BASELINE, *run.BUSY_POLL_PROXIES[2:])


def test_the_json_settings_record_the_baseline_and_its_full_hash():
    """The run's settings hold the revision as given, the full commit hash and the variant's name; else null."""
    settings = dataclasses.asdict(run.Settings.make(quick=False, baseline=REVISION))
    assert settings["baseline"] == {"revision": "HEAD~2", "commit": REVISION.commit, "proxy": BASELINE}
    assert json.loads(json.dumps(settings))["baseline"]["commit"] == REVISION.commit
    assert dataclasses.asdict(run.Settings.make(quick=False))["baseline"] is None


# --- the report ---------------------------------------------------------------------------------------------------

MACHINE = {
    "cpu_model": "CPU", "cores": 2, "os": "OS", "python": "CPython 3.11", "twisted": "26", "txrevproxy": "0.1",
    "txrevproxy_commit": "abc", "nginx": "nginx/1.22", "wrk": "wrk 4.1",
}  # fmt: skip


def load(scenario: str, proxy: str, **figures: float) -> run.LoadResult:
    connections = 1 if scenario == "12b-c1" else 10 if scenario == "1m-c10" else 50
    return run.LoadResult(scenario, proxy, connections, 1 << 20 if scenario == "1m-c10" else 12, **figures)


def memory(scenario: str, proxy: str, before_kib: int, growth_mib: float, **more: object) -> run.MemoryResult:
    more.setdefault("complete", True)
    return run.MemoryResult(scenario, proxy, baseline_kib=before_kib, growth_mib=growth_mib, **more)


def results(with_baseline: bool = True) -> dict[str, object]:
    """
    A quick run's results dict as run.py writes it, with the baseline's runs (or without any baseline at all).
    """
    settings = run.Settings.make(quick=True, baseline=REVISION if with_baseline else None)
    loads = [
        load("12b-c1", "direct", p50_us=70, p99_us=120),
        load("12b-c1", "txrevproxy", p50_us=190, p99_us=400),
        load("12b-c1", BASELINE, p50_us=200, p99_us=380),
        load("12b-c50", "txrevproxy", requests_per_s=15500, p99_us=5000),
        load("12b-c50", BASELINE, requests_per_s=16000, p99_us=5100, errors="12 socket errors (timeout 12)"),
        load("1k-c50", "txrevproxy", requests_per_s=14000, p99_us=5200),
        load("1m-c10", "txrevproxy", mib_per_s=1500, p99_us=9000),
        load("1m-c10", BASELINE, failed="no requests completed"),
    ]
    memories = [
        memory("slow-reader", "txrevproxy", 55160, 0.5),
        memory("slow-reader", BASELINE, 54136, 0.25),
        memory("slow-upstream", "txrevproxy", 55000, 1.0),
        memory("slow-upstream", "twisted.web.proxy", 40000, 95.0),
        memory("idle-connections", "txrevproxy", 56000, 20.0, per_connection_kib=10.24),
        memory("idle-connections", BASELINE, 56000, 20.0, per_connection_kib=10.0, complete=False),
    ]
    if not with_baseline:
        loads = [r for r in loads if r.proxy != BASELINE]
        memories = [r for r in memories if r.proxy != BASELINE]
    data = dataclasses.asdict(run.Run("2026-11-24 10:00:00 UTC", MACHINE, settings, loads, memories))
    return json.loads(json.dumps(data))  # (as --render reads it back)


def test_the_baseline_rows_put_each_figure_next_to_this_trees_with_ratio_and_difference():
    """Headline and p99 per load scenario, growth and settled RSS per memory scenario, both run; ⚠ on trouble."""
    rows = _report._baseline_rows(results())
    reader = "slow reader: 20 MiB download read at 2 MiB/s — peak RSS growth, MiB"
    idle = "2,000 idle keep-alive client connections — RSS growth per connection, KiB"
    p99, before = "p99 latency, µs (lower is better)", "RSS settled at before the scenario, MiB"
    assert [row[:2] for row in rows] == [
        ["12 B, -c1", "added median latency vs direct, µs (lower is better)"],
        ["12 B, -c1", p99],
        ["12 B, -c50", "req/s"],
        ["12 B, -c50", p99],
        ["1 MiB, -c10", "MiB/s"],
        ["1 MiB, -c10", p99],
        [reader, "peak RSS growth, MiB (lower is better)"],
        [reader, before],
        [idle, "RSS growth per connection, KiB (lower is better)"],
        [idle, before],
    ]
    columns = [row[2:] for row in rows]
    assert columns[0] == ["130", "120", "0.92×", "-10"]  # added over direct's 70 µs
    assert columns[1] == ["380", "400", "1.05×", "+20"]
    assert columns[2] == ["16,000 ⚠", "15,500", "0.97×", "-500"]
    assert columns[4] == ["— ⚠", "1,500", "—", "—"]
    assert columns[6] == ["0.2", "0.5", "2.00×", "+0.2"]
    assert columns[7] == ["52.9", "53.9", "1.02×", "+1.0"]
    assert columns[8] == ["10.0 ⚠", "10.2", "1.02×", "+0.2"]


def test_a_run_with_a_baseline_renders_its_table_and_keeps_the_others_shape():
    """The markdown has the baseline's table; the load, options and memory tables are those of the run without it."""
    data, plain = results(), results(with_baseline=False)
    text = _report.render_markdown(data)
    heading = f"### This tree against the baseline @cfc35bd (--baseline HEAD~2: {REVISION.commit})"
    assert heading in text
    assert "| scenario | metric | baseline @cfc35bd | this tree | this tree ÷ baseline | this tree − baseline |" in text
    for rows in (_report._load_rows, _report._variant_rows, _report._memory_rows):
        assert rows(data) == rows(plain)
    assert "against the baseline" not in _report.render_markdown(plain)


def _committed(with_baseline: bool) -> list[Path]:
    return [
        path
        for path in sorted(RESULTS.glob("*.json"))
        if bool(json.loads(path.read_text())["settings"].get("baseline")) == with_baseline
    ]


@pytest.mark.parametrize("path", _committed(False), ids=lambda p: p.name)
def test_old_results_without_a_baseline_still_render(path: Path):
    """Each committed result JSON made without --baseline renders, with no baseline table."""
    data = json.loads(path.read_text())
    assert _report._baseline_rows(data) == []
    text = _report.render_markdown(data)
    assert "### Load" in text
    assert "against the baseline" not in text


@pytest.mark.parametrize("path", _committed(True), ids=lambda p: p.name)
def test_results_with_a_baseline_render_its_table(path: Path):
    """Each committed result JSON made with --baseline renders its baseline table."""
    data = json.loads(path.read_text())
    assert _report._baseline_rows(data) != []
    assert "against the baseline" in _report.render_markdown(data)
