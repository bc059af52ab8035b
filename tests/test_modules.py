"""The package's shape: every module imports on its own, and no two modules import each other."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

PACKAGE = ROOT / "chat"


def module_names() -> list[str]:
    """Return the dotted names of every module in the chat package."""
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def imports_of(name: str) -> set[str]:
    """Return the chat modules that module name imports, those under TYPE_CHECKING included."""
    path = ROOT / Path(*name.split("."))
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.parse(path.read_text()).body:
        for inner in ast.walk(node) if not isinstance(node, ast.FunctionDef | ast.ClassDef) else ():
            if isinstance(inner, ast.ImportFrom):
                base = package
                for _ in range(max(0, inner.level - 1)):
                    base = base.rpartition(".")[0]
                target = f"{base}.{inner.module}" if inner.level and inner.module else (inner.module or base)
                found.add(target)
                found.update(f"{target}.{alias.name}" for alias in inner.names)
            elif isinstance(inner, ast.Import):
                found.update(alias.name for alias in inner.names)
    known = set(module_names())
    return {target for target in found if target in known and target != name}


def test_no_two_modules_import_each_other():
    """The module-level imports inside the package form no cycle."""
    graph = {name: imports_of(name) for name in module_names()}
    # A package's __init__ may import its submodules; a submodule importing back its package is the cycle to catch.
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = "visiting"
        for target in sorted(graph[name]):
            if name.startswith(target + ".") or target.startswith(name + "."):
                continue
            if state.get(target) == "visiting":
                raise AssertionError("import cycle: " + " -> ".join([*path, name, target]))
            if target not in state:
                visit(target, [*path, name])
        state[name] = "done"

    for name in graph:
        if name not in state:
            visit(name, [])


#: What each part of the package may import, besides itself; the layers point one way.
MAY_IMPORT = {
    "web": {"rooms", "fanout", "socket", "backends", "store", "protocol", "text", "config", "metrics"},
    "rooms": {"fanout", "socket", "backends", "store", "protocol", "text", "config", "metrics"},
    "fanout": {"socket", "backends", "protocol", "text", "config", "metrics"},
    "socket": {"backends", "protocol", "text", "config", "metrics"},
    "server": {"socket", "config"},
    "store": {"backends", "protocol", "text", "config"},
    "backends": {"protocol", "text", "config"},
    # The clients talk to a chat over the wire, so they know nothing of the server's parts.
    "client": {"protocol", "text", "config"},
    "testing": {"client", "protocol", "text", "config"},
    "protocol": {"text"},
    # What client text may hold: below protocol, which checks names with it.
    "text": set(),
    "config": set(),
    "metrics": set(),
    # The standalone app's log writer.
    "logs": set(),
}


def part(name: str) -> str:
    """Return the part of the package a module belongs to: chat.rooms.hub -> rooms."""
    return name.split(".")[1] if "." in name else ""


@pytest.mark.parametrize("name", [name for name in module_names() if part(name) != ""])
def test_imports_point_one_way(name):
    """A module imports only from its own part of the package and the parts below it (see each package's docstring)."""
    allowed = MAY_IMPORT[part(name)] | {part(name)}
    wrong = sorted(target for target in imports_of(name) if part(target) and part(target) not in allowed)
    assert not wrong, f"{name} may not import {wrong}"


@pytest.mark.parametrize("name", module_names())
def test_module_is_short(name):
    """No module is over 300 lines."""
    path = ROOT / Path(*name.split("."))
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    assert len(path.read_text().splitlines()) <= 300


@pytest.mark.parametrize("name", module_names())
def test_each_module_imports_alone(name):
    """python -c 'import chat.X' works for every module, in a fresh interpreter."""
    finished = subprocess.run([sys.executable, "-c", f"import {name}"], cwd=ROOT, capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
