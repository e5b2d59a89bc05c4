"""
The twistd plugin (top-level ``twisted/plugins/txrevproxy_plugin.py``) is found from this editable install and from
an installed wheel, each checked in a child Python started outside the repository.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = "twisted/plugins/txrevproxy_plugin.py"

# Run in a child: the plugins and reactors Twisted finds, and where the modules behind them were imported from.
_PROBE = """
import json, sys
from twisted.application.reactors import getReactorTypes
from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins
makers = {maker.tapname: maker.module for maker in getPlugins(IServiceMaker)}
reactors = {reactor.shortName: reactor.moduleName for reactor in getReactorTypes()}
import twisted.plugins.txrevproxy_plugin as plugin
import txrevproxy.tap as tap
print(json.dumps({"makers": makers, "reactors": reactors, "plugin": plugin.__file__, "tap": tap.__file__,
                  "path": sys.path}))
"""


def child_env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, cwd=cwd, env=child_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def probe(flags: list[str], prelude: str, cwd: Path) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(run([sys.executable, *flags, "-c", prelude + _PROBE], cwd).stdout)
    return found


def assert_found(found: dict[str, Any]) -> None:
    assert found["makers"].get("txrevproxy") == "txrevproxy.tap"
    assert found["reactors"].get("txrevproxy") == "txrevproxy._daemon.reactor"
    assert [entry for entry in found["path"] if entry and Path(entry).resolve() == ROOT] == []


def test_twistd_help_lists_the_plugin_from_the_editable_install(tmp_path: Path) -> None:
    """From the editable install, started outside the repository, ``twistd --help`` lists ``txrevproxy``."""
    done = run([str(Path(sys.executable).parent / "twistd"), "--help"], tmp_path)
    assert [line for line in done.stdout.splitlines() if line.split()[:1] == ["txrevproxy"]], done.stdout


def test_get_plugins_finds_the_maker_and_the_reactor_from_the_editable_install(tmp_path: Path) -> None:
    """The editable install gives getPlugins the checkout's plugin and tap, the repository root not on sys.path."""
    found = probe([], "", tmp_path)
    assert_found(found)
    assert os.path.samefile(found["plugin"], ROOT / PLUGIN)
    assert os.path.samefile(found["tap"], ROOT / "src" / "txrevproxy" / "tap.py")


def build_wheel(tmp_path: Path) -> Path:
    # From a copy of the sources: the build then neither writes into the checkout (build/, *.egg-info) nor picks up
    # stale files left in the checkout's build/lib.
    source = tmp_path / "source"
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info", "dropin.cache")
    for name in ("src", "twisted"):
        shutil.copytree(ROOT / name, source / name, ignore=skip)
    for name in ("pyproject.toml", "README.rst"):
        shutil.copy2(ROOT / name, source / name)
    wheels = tmp_path / "wheels"
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(source)], tmp_path)
    (wheel,) = wheels.glob("txrevproxy-*.whl")
    return wheel


def test_the_wheel_carries_the_plugin_and_getplugins_finds_it_installed(tmp_path: Path) -> None:
    """The wheel holds the plugin, no __init__.py beside it; installed alone, getPlugins finds it and its tap there."""
    wheel = build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert PLUGIN in names
    assert [name for name in names if name.startswith("twisted/") and name.endswith("__init__.py")] == []
    target = tmp_path / "site"
    run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)], tmp_path)
    # -I: no PYTHON* variables, no user site, no script directory; -S: no site module, hence no .pth file read (the
    # editable install's among them). sys.path is the standard library, then the installed wheel and this
    # environment's site-packages (Twisted and the other dependencies).
    paths = [str(target), *site.getsitepackages()]
    found = probe(["-I", "-S"], f"import sys; sys.path.extend({paths!r})\n", tmp_path)
    assert_found(found)
    assert os.path.samefile(found["plugin"], target / PLUGIN)
    assert os.path.samefile(found["tap"], target / "txrevproxy" / "tap.py")
    assert [entry for entry in found["path"] if "__editable__" in entry] == []
