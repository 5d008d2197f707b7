"""No import circle anywhere in the package: module-level, function-level and TYPE_CHECKING imports all count.

How an import statement becomes an edge (read with `ast`, nothing is imported):
* `import ssogen.a.b` and `from ssogen.a import b` where `ssogen/a/b.py` (or `ssogen/a/b/`) exists: an edge to
  the module `ssogen.a.b`;
* `from ssogen.a import name` where `name` is not a submodule: an edge to the package `ssogen.a` itself, that is,
  to its `__init__.py` (where the name must be defined);
* relative imports are resolved against the importing module's package.
Importing `ssogen.a.b` also runs `ssogen/__init__.py` and `ssogen/a/__init__.py` first, but no edge is drawn for
that: a package's `__init__` is already running or done when one of its submodules' code runs, so it only
closes a circle when the submodule asks the `__init__` for a name, which the second rule catches (a command
module doing `from ssogen.cli import app` while `ssogen/cli/__init__.py` imports the command modules).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import ssogen

PACKAGE_ROOT = Path(ssogen.__file__).parent


def module_files(root: Path, package: str) -> dict[str, Path]:
    """Module name -> file for every .py file under a package folder."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def import_edges(modules: dict[str, Path], package: str) -> dict[str, set[str]]:
    """Module -> the package modules its import statements (anywhere in the file) depend on."""
    edges: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = name.split(".") if is_package else name.split(".")[:-1]
                    anchor = anchor[:len(anchor) - (node.level - 1)]
                    base = ".".join([*anchor, *([base] if base else [])])
                for alias in node.names:
                    submodule = f"{base}.{alias.name}"
                    targets.append(submodule if submodule in modules else base)
            for target in targets:
                while target not in modules and target.startswith(f"{package}."):
                    target = target.rpartition(".")[0]  # `import ssogen.a.b.c` of a non-module name
                if target in modules and target != name:
                    edges[name].add(target)
    return edges


def find_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One shortest cycle (a list of modules, first == last) per group of modules that import each other."""
    return sorted(_cycle_in(component, edges) for component in circles(edges))


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module, each sorted (Tarjan's algorithm,
    iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
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


def _cycle_in(component: list[str], edges: dict[str, set[str]]) -> list[str]:
    """A shortest cycle through the component's first module (breadth-first search inside the component)."""
    members = set(component)
    start = component[0]
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(edges[node] & members):
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if child not in parents:
                    parents[child] = node
                    following.append(child)
        frontier = following
    raise AssertionError(f"no cycle found in the component {component}")


def test_the_package_has_no_import_cycle() -> None:
    modules = module_files(PACKAGE_ROOT, "ssogen")
    edges = import_edges(modules, "ssogen")
    assert len(modules) > 30 and sum(map(len, edges.values())) > 50  # the walk really read the package
    found = circles(edges)
    report = [" -> ".join(_cycle_in(component, edges)) + f"   (all modules of this circle: {', '.join(component)})"
              for component in found]
    assert not found, "import cycles:\n" + "\n".join(report)


def test_the_command_line_root_is_imported_by_no_command_module() -> None:
    modules = module_files(PACKAGE_ROOT, "ssogen")
    edges = import_edges(modules, "ssogen")
    root_modules = {"ssogen.cli", "ssogen.cli.main"} & set(modules)
    importers = sorted(name for name, targets in edges.items() if targets & root_modules
                       and name.startswith("ssogen.cli.") and name not in root_modules)
    assert importers == [], f"command modules importing the CLI root: {importers}"


@pytest.fixture
def toy_package(tmp_path: Path) -> Path:
    root = tmp_path / "toy"
    (root / "cli").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "leaf.py").write_text("import os\n")
    (root / "a.py").write_text("from toy import leaf\n\ndef late():\n    from toy.b import thing\n")
    (root / "b.py").write_text("from . import a\nthing = 1\n")
    (root / "cli" / "__init__.py").write_text("from toy.cli import common, data\napp = 1\n")
    (root / "cli" / "common.py").write_text("from toy import leaf\n")
    (root / "cli" / "data.py").write_text("from toy.cli.common import leaf\n\ndef f():\n    from toy.cli import app\n")
    return root


def test_the_walk_finds_function_level_relative_and_package_init_cycles(toy_package: Path) -> None:
    modules = module_files(toy_package, "toy")
    edges = import_edges(modules, "toy")
    assert edges["toy.a"] == {"toy.leaf", "toy.b"}  # the function-level import counts
    assert edges["toy.b"] == {"toy.a"}  # `from . import a` resolved
    assert edges["toy.cli.data"] == {"toy.cli.common", "toy.cli"}  # `from toy.cli import app`: the __init__
    assert edges["toy.cli.common"] == {"toy.leaf"}  # a submodule's parent package is no edge by itself
    assert find_cycles(edges) == [["toy.a", "toy.b", "toy.a"], ["toy.cli", "toy.cli.data", "toy.cli"]]


def test_a_package_without_cycles_passes(toy_package: Path) -> None:
    (toy_package / "b.py").write_text("thing = 1\n")
    (toy_package / "cli" / "data.py").write_text("from toy.cli.common import leaf\n")
    assert find_cycles(import_edges(module_files(toy_package, "toy"), "toy")) == []
