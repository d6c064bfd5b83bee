"""The package boundaries of docs/ARCHITECTURE.md: shared/ and client/ never import torch
(the client image carries none), server/ never imports client/, client/ never imports server/.

Checked twice: statically over every .py file (catches imports on paths a test never runs)
and dynamically in a fresh interpreter (catches torch pulled in through a dependency)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

# package -> top-level modules it must never import
FORBIDDEN = {
    "shared": {"torch", "torchvision", "server", "client"},
    "client": {"torch", "torchvision", "server"},
    "server": {"client"},
}


def imported_top_levels(path: Path) -> set[str]:
    """Top-level module names a file imports, anywhere in it (also inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and _is_dynamic_import(node):
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                names.add(arg.value.split(".")[0])
    return names


def _is_dynamic_import(node: ast.Call) -> bool:
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    return name in {"import_module", "__import__"} and bool(node.args)


def python_files(package: str) -> list[Path]:
    return sorted((REPO_ROOT / package).rglob("*.py"))


def test_scanner_sees_every_import_form(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import os.path\nfrom torch import nn\n"
        "def f():\n    import server.app\n    importlib.import_module('client.app')\n"
        "from . import sibling\n"
    )
    assert imported_top_levels(sample) == {"os", "torch", "server", "client"}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_static_imports_respect_boundaries(package: str) -> None:
    files = python_files(package)
    assert files, f"{package}/ has no Python files"
    violations = [
        f"{path.relative_to(REPO_ROOT)} imports {name}"
        for path in files
        for name in sorted(imported_top_levels(path) & FORBIDDEN[package])
    ]
    assert not violations, "\n".join(violations)


def test_client_and_shared_run_without_torch() -> None:
    """Import every shared/ module and the client app in a fresh interpreter: no torch loaded."""
    modules = [
        ".".join(p.relative_to(REPO_ROOT).with_suffix("").parts)
        for p in python_files("shared") + python_files("client")
        if p.name != "__main__.py"
    ]
    modules = [m.removesuffix(".__init__") for m in modules]
    script = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "leaked = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'server'))\n"
        "print('LEAKED', leaked)\n"
        "sys.exit(1 if leaked else 0)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "client" in modules and "shared" in modules
