"""shared/ is library code that both services install: it never runs a compiler or an
emulator. The harness that builds the generated C with gcc and runs it in QEMU lives in
scripts/onchip/, beside the tests and benchmarks that use it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.conftest import REPO_ROOT

# modules that start other programs, and the calls that do
PROCESS_MODULES = {"subprocess", "pty", "multiprocessing"}
PROCESS_CALLS = re.compile(
    r"^(os\.(system|popen|spawn\w*|exec\w*|posix_spawn\w*|fork\w*)"
    r"|asyncio\.create_subprocess_\w+|shutil\.which)$"
)
# programs a test harness would name: compilers, binutils, emulators, as commands spell them
# (lower case: the generated C's own prose, "GCC's scheduling", names no program to run)
TOOL_NAMES = re.compile(r"\b(gcc|clang|arm-none-eabi[\w-]*|qemu[\w-]*)\b")


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return getattr(node, "id", "")


def process_uses(path: Path) -> list[str]:
    """What in a file could start another program: imports of process modules, calls that
    start processes, and string constants (not docstrings) naming a compiler or emulator."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            named = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                named.append(node.module)
                if node.module == "os":
                    named += [f"os.{a.name}" for a in node.names]
            for name in named:
                if name.split(".")[0] in PROCESS_MODULES or PROCESS_CALLS.match(name):
                    found.append((node.lineno, f"imports {name}"))
        elif isinstance(node, ast.Call) and PROCESS_CALLS.match(_dotted(node.func)):
            found.append((node.lineno, f"calls {_dotted(node.func)}"))
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings  # prose may name them
        ):
            tool = TOOL_NAMES.search(node.value)
            if tool:
                found.append((node.lineno, f"names {tool.group(0)!r}"))
    return [f"line {line}: {what}" for line, what in sorted(found)]


def test_no_module_under_shared_runs_a_compiler_or_an_emulator() -> None:
    files = sorted((REPO_ROOT / "shared").rglob("*.py"))
    assert len(files) > 20
    found = [f"{path.relative_to(REPO_ROOT)} {use}" for path in files for use in process_uses(path)]
    assert not found, "\n".join(found)


def test_the_check_sees_the_harness() -> None:
    """The on-chip harness does all three, so the check would see it back in shared/."""
    uses = process_uses(REPO_ROOT / "scripts" / "onchip" / "toolchain.py")
    assert any("imports subprocess" in u for u in uses)
    assert any("qemu" in u.lower() for u in uses) and any("gcc" in u for u in uses)


def test_calls_and_names_are_seen(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        '"""Not run here: gcc."""\nimport os\nfrom os import system\n'
        "def build():\n    os.system('make')\n    return 'arm-none-eabi-gcc'\n"
    )
    assert process_uses(sample) == [
        "line 3: imports os.system",
        "line 5: calls os.system",
        "line 6: names 'arm-none-eabi-gcc'",
    ]
