"""
The package reads by layer: each subpackage imports only from the layers below it, and no module imports itself
back through another (no import cycles), at run time or for the type checker.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "txrevproxy"

#: Each layer and the layers it may import from. Public modules (txrevproxy.*) sit on top and may import anything;
#: the daemon and the test machinery may also use the public ``resource`` module.
ALLOWED = {
    "_http": set(),
    "_net": {"_http"},
    "_tls": {"_http", "_net"},
    "_server": {"_http", "_net", "_tls"},
    "_upstream": {"_http", "_net", "_tls"},
    "_relay": {"_http", "_net", "_tls", "_server", "_upstream"},
    "_daemon": {"_http", "_net", "_tls", "_server", "_upstream", "_relay", "resource"},
    "_testing": {"_http", "_net", "_tls", "_server", "_upstream", "_relay", "resource"},
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[str]:
    """The txrevproxy modules ``path`` imports, anywhere in it (type-checking blocks included)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("txrevproxy"):
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if alias.name.startswith("txrevproxy")]
    return found


MODULES = {_module_name(path): path for path in PACKAGE.rglob("*.py")}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _layer(m) in ALLOWED))
def test_imports_point_down(module):
    """A layer's modules import only their own layer and the layers below it."""
    layer = _layer(module)
    wrong = [
        imported
        for imported in _imports(MODULES[module])
        if _layer(imported) != layer and _layer(imported) not in ALLOWED[layer]
    ]
    assert wrong == []


def test_http_rules_import_nothing_of_twisted():
    """The pure HTTP rules import neither Twisted nor zope."""
    for module, path in MODULES.items():
        if _layer(module) != "_http":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            assert not [name for name in names if name.split(".")[0] in ("twisted", "zope")], module


def test_no_import_cycles():
    """No module reaches itself through the modules it imports."""
    graph = {module: {i for i in _imports(path) if i in MODULES} for module, path in MODULES.items()}
    # A package's __init__ importing its own modules is how packages are made, not a cycle.
    for module in graph:
        graph[module] = {i for i in graph[module] if not module.startswith(i + ".") and i != module}
    cycles = []

    def visit(module: str, trail: list[str]) -> None:
        for imported in sorted(graph[module]):
            if imported in trail:
                cycles.append(" -> ".join([*trail[trail.index(imported) :], imported]))
            elif imported not in done:
                visit(imported, [*trail, imported])
        done.add(module)

    done: set[str] = set()
    for module in sorted(graph):
        if module not in done:
            visit(module, [module])
    assert cycles == []
