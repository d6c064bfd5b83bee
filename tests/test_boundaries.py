"""The package boundaries of docs/ARCHITECTURE.md: shared/, client/ and the server's HTTP
service (server/service, server/data, server/params.py, recipes.py, job_spec.py, progress.py)
never import torch (the client image carries none; training runs in its own worker process),
server/ never imports client/, client/ never imports server/.

Checked three times: statically over every .py file (catches imports on paths a test never
runs), in a fresh interpreter (catches torch pulled in through a dependency), and in a real
`python -m server` process after it listed data sets and ran a job (catches anything the
serving process loads at run time)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import REPO_ROOT, child_env, start_service, wait_until

TORCH = {"torch", "torchvision"}
# files or folders -> modules they must never import (a name forbids its sub-modules too)
FORBIDDEN: dict[str, set[str]] = {
    "shared": TORCH | {"server", "client"},
    "client": TORCH | {"server"},
    "server": {"client"},
    "server/service": TORCH | {"server.training"},
    "server/data": TORCH | {"server.training", "server.service"},
    "server/params.py": TORCH | {"server.training", "server.service"},
    "server/recipes.py": TORCH | {"server.training", "server.service"},
    "server/job_spec.py": TORCH | {"server.training", "server.service"},
    "server/progress.py": TORCH | {"server.training", "server.service"},
}
# the server's torch-free modules, as imported in a fresh interpreter
TORCH_FREE_SERVER = [
    "server/service",
    "server/data",
    "server/params.py",
    "server/recipes.py",
    "server/job_spec.py",
    "server/progress.py",
]


def imported_modules(path: Path) -> set[str]:
    """Full names of the modules a file imports, anywhere in it (also inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call) and _is_dynamic_import(node):
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                names.add(arg.value)
    return names


def imported_top_levels(path: Path) -> set[str]:
    """Top-level module names a file imports."""
    return {name.split(".")[0] for name in imported_modules(path)}


def _violates(module: str, forbidden: set[str]) -> bool:
    return any(module == f or module.startswith(f + ".") for f in forbidden)


def _is_dynamic_import(node: ast.Call) -> bool:
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    return name in {"import_module", "__import__"} and bool(node.args)


def python_files(package: str) -> list[Path]:
    path = REPO_ROOT / package
    return [path] if path.suffix == ".py" else sorted(path.rglob("*.py"))


def module_names(packages: list[str]) -> list[str]:
    modules = [
        ".".join(p.relative_to(REPO_ROOT).with_suffix("").parts)
        for package in packages
        for p in python_files(package)
        if p.name != "__main__.py"
    ]
    return [m.removesuffix(".__init__") for m in modules]


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
        for name in sorted(imported_modules(path))
        if _violates(name, FORBIDDEN[package])
    ]
    assert not violations, "\n".join(violations)


def _leaks(modules: list[str], forbidden: tuple[str, ...]) -> subprocess.CompletedProcess:
    script = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        f"leaked = sorted(m for m in sys.modules if m.split('.')[0] in {forbidden!r})\n"
        "print('LEAKED', leaked)\n"
        "sys.exit(1 if leaked else 0)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )


def test_client_and_shared_run_without_torch() -> None:
    """Import every shared/ module and the client app in a fresh interpreter: no torch loaded."""
    modules = module_names(["shared", "client"])
    done = _leaks(modules, ("torch", "server"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "client" in modules and "shared" in modules


def test_server_service_imports_without_torch() -> None:
    """Import the whole HTTP service, the data registry and the job parameters: no torch."""
    modules = module_names(TORCH_FREE_SERVER)
    done = _leaks(modules, ("torch", "torchvision"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert {"server.service.app", "server.data", "server.params"} <= set(modules)


def _torch_libraries(pid: int) -> list[str]:
    """Shared objects of torch mapped into a process (Linux: /proc/<pid>/maps)."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    paths = {line.split()[-1] for line in maps.splitlines() if len(line.split()) >= 6}
    return sorted(p for p in paths if "/torch/" in p or Path(p).name.startswith("libtorch"))


@pytest.mark.skipif(not Path("/proc/self/maps").is_file(), reason="needs Linux /proc/<pid>/maps")
def test_serving_process_never_loads_torch(tmp_path: Path, data_dir: Path) -> None:
    """A real `python -m server` lists data sets, checks and runs a tiny digits job (trained
    in its worker process, which does load torch), and its own process maps no torch."""
    env = child_env(data_dir, SIQ_STATE_DIR=str(tmp_path / "state"))
    server = start_service("server", env, tmp_path / "server.log")
    try:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            _list_check_and_run(http, server)
        assert server.alive()
        assert _torch_libraries(server.proc.pid) == []
        assert _torch_libraries(_own_pid()), "the check must see torch where it is loaded"
    finally:
        server.stop()


def _list_check_and_run(http: httpx.Client, server: Any) -> None:
    """GET /datasets, a refused and an accepted POST /quantize-jobs, the job to its end."""
    server.wait_ready("/readyz", timeout=60)
    listed = http.get("/datasets")
    assert listed.status_code == 200 and "digits" in {d["name"] for d in listed.json()}
    bad = http.post(
        "/quantize-jobs", json={"dataset": "nope", "weight_bits": 2, "activation_bits": 4}
    )
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "unknown_dataset"
    job = {
        "dataset": "digits",
        "weight_bits": 2,
        "activation_bits": 4,
        "epochs": 0.5,
        "retrain_epochs": 0,
        "max_iterations": 1,
        "train_limit": 100,
        "test_limit": 20,
    }
    created = http.post("/quantize-jobs", json=job)
    assert created.status_code == 202, created.text
    url = created.headers["Location"]

    def finished() -> dict | None:
        body = http.get(url).json()
        return body if body["status"] in ("succeeded", "failed", "cancelled") else None

    done = wait_until(finished, 240, what=f"the job:\n{server.log_tail()}")
    assert done["status"] == "succeeded", done


def _own_pid() -> int:
    """This test process, which has imported torch (the server tests' fixtures do): the
    control case of the maps check."""
    import os

    import torch  # noqa: F401

    return os.getpid()
