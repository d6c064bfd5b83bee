"""No import cycle among the modules of shared/, server/, client/, bench/ and scripts/.

The graph has an edge a -> b for every import of b anywhere in a: at the top, inside a
function or a class, or through importlib with a constant name. `from x import y` where
x.y is a module imports x.y; where y is a name defined in x, it imports x. Relative imports
are resolved. `import a.b` is an edge to a.b alone: counting the parent packages Python
runs first would make every package whose __init__ imports its submodules a cycle. A
submodule that takes a *name* from its own package's __init__ does make an edge to it,
which is how an __init__ and its submodules close a real cycle.

A cycle makes a module's meaning depend on which of its members was imported first, and a
function-level import that closes one hides it until the day the function moves."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO_ROOT

PACKAGES = ("shared", "server", "client", "bench", "scripts")

Graph = dict[str, dict[str, int]]  # module -> {imported module: line of the first import}


def module_files(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under the packages."""
    files = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            files[name] = path
    return files


def _imports(tree: ast.AST, module: str, is_package: bool) -> list[tuple[str, list[str], int]]:
    """(module named, names taken from it, line) for every import in the tree."""
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(parts + ([base] if base else []))
            found.append((base, [alias.name for alias in node.names], node.lineno))
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            arg = node.args[0]
            constant = isinstance(arg, ast.Constant) and isinstance(arg.value, str)
            if name in ("import_module", "__import__") and constant:
                found.append((arg.value, [], node.lineno))
    return found


def import_graph(root: Path, packages: tuple[str, ...] = PACKAGES) -> Graph:
    files = module_files(root, packages)
    graph: Graph = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        edges: dict[str, int] = {}
        for named, names, line in _imports(tree, module, path.name == "__init__.py"):
            targets = [f"{named}.{n}" if f"{named}.{n}" in files else named for n in names]
            for target in targets or [named]:
                if target in files and target != module:
                    edges.setdefault(target, line)
        graph[module] = edges
    return graph


def strongly_connected(graph: Graph) -> list[list[str]]:
    """The graph's strongly connected components of more than one module (Tarjan's
    algorithm, iterative), each sorted, in a stable order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in graph:
                    continue
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return sorted(components)


def one_cycle(graph: Graph, component: list[str]) -> list[str]:
    """A shortest cycle through the component's first module: [a, b, ..., a]."""
    members, start = set(component), component[0]
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph[node]):
                if child == start:
                    return paths[node] + [start]
                if child in members and child not in paths:
                    paths[child] = paths[node] + [child]
                    following.append(child)
        frontier = following
    raise AssertionError(f"no cycle through {start}")  # not a component, then


def describe(graph: Graph, cycle: list[str]) -> str:
    steps = [f"{a} (line {graph[a][b]}) -> {b}" for a, b in zip(cycle, cycle[1:], strict=False)]
    return "  " + "\n  ".join(steps)


def test_no_import_cycles() -> None:
    graph = import_graph(REPO_ROOT)
    assert {"shared.engine", "server.service.app", "client.app", "bench.bench_client"} <= set(graph)
    cycles = [one_cycle(graph, c) for c in strongly_connected(graph)]
    assert not cycles, "import cycles:\n" + "\n\n".join(describe(graph, c) for c in cycles)


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_graph_sees_every_import_form(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "from pkg.a import thing\n",
            "pkg/a.py": "thing = 1\ndef f():\n    from pkg import b\n",  # function level
            "pkg/b.py": "from . import c\n",  # relative, a submodule
            "pkg/c.py": "import importlib\nimportlib.import_module('pkg.d')\n",
            "pkg/d.py": "from pkg.a import thing\n",  # a name: the module a
            "pkg/e.py": "from pkg import thing\n",  # a name from the package: its __init__
            "pkg/f.py": "import pkg.c\nimport os\n",
        },
    )
    graph = import_graph(tmp_path, ("pkg",))
    assert graph == {
        "pkg": {"pkg.a": 1},
        "pkg.a": {"pkg.b": 3},
        "pkg.b": {"pkg.c": 1},
        "pkg.c": {"pkg.d": 2},
        "pkg.d": {"pkg.a": 1},
        "pkg.e": {"pkg": 1},
        "pkg.f": {"pkg.c": 1},
    }
    assert strongly_connected(graph) == [["pkg.a", "pkg.b", "pkg.c", "pkg.d"]]
    cycle = one_cycle(graph, ["pkg.a", "pkg.b", "pkg.c", "pkg.d"])
    assert cycle == ["pkg.a", "pkg.b", "pkg.c", "pkg.d", "pkg.a"]
    assert "pkg.a (line 3) -> pkg.b" in describe(graph, cycle)


def test_an_init_and_a_submodule_that_takes_its_names_are_a_cycle(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "from pkg.core import run\n",
            "pkg/core.py": "from pkg.util import helper\nrun = helper\n",
            "pkg/util.py": "from pkg import run\nhelper = 1\n",  # the trap
        },
    )
    graph = import_graph(tmp_path, ("pkg",))
    assert strongly_connected(graph) == [["pkg", "pkg.core", "pkg.util"]]
