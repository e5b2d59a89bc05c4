"""
An earlier commit of this repository run next to this tree's txrevproxy (``run.py --baseline REV``): its tree
exported with ``git archive``, and the environment that makes the daemon import that tree's ``txrevproxy`` package
and twistd plugin (``src/twisted/plugins/`` in old revisions, the top-level ``twisted/plugins/`` in new ones)
before this tree's, with a check that it really does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
#: The variant's name starts with this, then the baseline's short hash: ``txrevproxy @cfc35bd``.
PREFIX = "txrevproxy @"


class BaselineError(Exception):
    """
    The baseline cannot be used; the message is one line for the command line.
    """


@dataclass(frozen=True)
class Revision:
    """
    The baseline as the run's settings record it: the revision as given, its full commit hash, the variant's name.
    """

    revision: str
    commit: str
    proxy: str


def variant_name(short_hash: str) -> str:
    return PREFIX + short_hash


def is_baseline(proxy: str) -> bool:
    return proxy.startswith(PREFIX)


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=False)


def resolve(revision: str, repo: Path = REPO) -> Revision:
    """
    ``revision`` (anything ``git rev-parse`` takes) as a commit of ``repo``; BaselineError if it names none.
    """
    try:
        found = _git(repo, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{revision}^{{commit}}")
    except OSError as e:
        raise BaselineError(f"--baseline {revision}: cannot run git: {e}") from e
    commit = found.stdout.strip()
    if found.returncode != 0 or not commit:
        raise BaselineError(f"--baseline {revision}: not a known revision of {repo}")
    short = _git(repo, "rev-parse", "--short", commit).stdout.strip() or commit[:7]
    return Revision(revision, commit, variant_name(short))


def export(commit: str, directory: Path, repo: Path = REPO) -> None:
    """
    ``git -C repo archive COMMIT | tar -x -C directory``: the commit's tree, without this checkout's build files.
    """
    directory.mkdir(parents=True)
    archive = subprocess.Popen(
        ["git", "-C", str(repo), "archive", commit], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert archive.stdout is not None
    untar = subprocess.run(["tar", "-x", "-C", str(directory)], stdin=archive.stdout, capture_output=True, check=False)
    archive.stdout.close()
    archive_err = archive.stderr.read() if archive.stderr else b""
    if archive.wait() != 0 or untar.returncode != 0:
        why = (archive_err or untar.stderr).decode(errors="replace").strip().splitlines()
        raise BaselineError(
            f"could not export {commit} to {directory}: {why[-1] if why else 'git archive | tar failed'}"
        )


def environment(directory: Path, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """
    ``base`` (this process's environment by default) with the baseline's ``src`` and top-level directory first on
    PYTHONPATH (a PYTHONPATH already set follows them, as it applies to this tree's run too).
    """
    env = dict(os.environ if base is None else base)
    paths = [str(directory / "src"), str(directory)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


# Run by the daemon's interpreter in the daemon's environment: where the package, the twistd plugin named
# ``txrevproxy`` and the reactor named ``txrevproxy`` (and the modules they name) are loaded from.
_WHERE = """\
import importlib.util, json, sys
from twisted.application.reactors import IReactorInstaller
from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins
import txrevproxy

def origin(name):
    try:
        spec = importlib.util.find_spec(name)
    except ImportError as e:
        return f"nowhere ({name}: {e})"
    return spec.origin if spec else f"nowhere (no module {name})"

def defined_in(plugin):
    for name, module in list(sys.modules.items()):
        if name.startswith("twisted.plugins.") and any(v is plugin for v in vars(module).values()):
            return module.__file__
    return "(not found)"

found = [["the txrevproxy package", txrevproxy.__file__]]
for maker in getPlugins(IServiceMaker):
    if maker.tapname == "txrevproxy":
        found += [["the twistd plugin txrevproxy", defined_in(maker)], ["its module", origin(maker.module)]]
for reactor in getPlugins(IReactorInstaller):
    if reactor.shortName == "txrevproxy":
        found += [["the reactor txrevproxy", defined_in(reactor)], ["its module", origin(reactor.moduleName)]]
print(json.dumps(found))
"""


def verify(directory: Path, env: Mapping[str, str], cwd: Path) -> list[tuple[str, str]]:
    """
    Check that a txrevproxy daemon started with ``env`` in ``cwd`` by this interpreter loads the package, its twistd
    plugin and its reactor from ``directory``; return what it found, or raise BaselineError saying what it is not.
    """
    done = subprocess.run(
        [sys.executable, "-c", _WHERE], env=dict(env), cwd=cwd, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise BaselineError(f"the baseline in {directory} does not import: {last}")
    found = [(what, path) for what, path in json.loads(done.stdout)]
    kinds = {what for what, _ in found}
    for needed in ("the twistd plugin txrevproxy", "the reactor txrevproxy"):
        if needed not in kinds:
            raise BaselineError(f"the baseline in {directory} has no {needed}")
    root = directory.resolve()
    for what, path in found:
        if not Path(path).resolve().is_relative_to(root):
            raise BaselineError(f"the baseline's daemon would load {what} from {path}, not from {directory}")
    return found
