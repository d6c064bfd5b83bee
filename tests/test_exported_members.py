"""Every shared/ module and package states its public API in `__all__`, and every name there
exists (after httpx's tests/test_exported_members.py)."""

from __future__ import annotations

import importlib

import pytest

from tests.conftest import REPO_ROOT

SHARED_MODULES = sorted(
    ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts).removesuffix(".__init__")
    for path in (REPO_ROOT / "shared").rglob("*.py")
    if path.parent != REPO_ROOT / "shared" or not path.name.startswith("_")
)


def test_shared_has_modules() -> None:
    assert {"shared.errors", "shared.bundle", "shared.bundle.format"} <= set(SHARED_MODULES)


@pytest.mark.parametrize("name", SHARED_MODULES)
def test_module_declares_existing_all(name: str) -> None:
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert isinstance(exported, list | tuple), f"{name} does not declare __all__"
    assert exported, f"{name}.__all__ is empty"
    assert len(set(exported)) == len(exported), f"{name}.__all__ has duplicates"
    missing = [member for member in exported if not hasattr(module, member)]
    assert not missing, f"{name}.__all__ names missing members: {missing}"


SHARED_PACKAGES = [m for m in SHARED_MODULES if (REPO_ROOT / m.replace(".", "/")).is_dir()]


@pytest.mark.parametrize("name", SHARED_PACKAGES)
def test_package_exports_hide_none_of_its_modules(name: str) -> None:
    """A package whose public name equals one of its modules' names hides that module:
    `import shared.image.preprocess as pp` gave the function `preprocess`, not the module."""
    package = importlib.import_module(name)
    modules = {p.stem for p in (REPO_ROOT / name.replace(".", "/")).glob("*.py")}
    assert not modules & set(package.__all__), f"{name} exports the names of its modules"


def test_every_folder_of_modules_is_a_package() -> None:
    """pyproject's package discovery (and so the Docker images) takes only folders with an
    __init__.py: a folder of modules without one would be missing from an install."""
    folders = {p.parent for p in (REPO_ROOT / "shared").rglob("*.py")}
    loose = sorted(
        str(f.relative_to(REPO_ROOT)) for f in folders if not (f / "__init__.py").is_file()
    )
    assert not loose, f"folders of modules without __init__.py: {loose}"
