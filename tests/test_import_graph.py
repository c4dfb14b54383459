"""The library's import graph: no module imports itself back, ``data/`` stays below the stages.

Read from the source with ``ast`` (nothing is imported). Imports inside
functions count too: a cycle that a lazy import hides still ties the modules
together (``data/ingest.py`` and ``data/folder_source.py`` did). Imports under
``if TYPE_CHECKING:`` are left out: they never run.
"""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

import wsss_core

PACKAGE_ROOT = Path(wsss_core.__file__).parent
# data/ reads sources into scans and checks them; the stages (ingest included)
# and review build on it, so it may import neither.
DATA_MUST_NOT_IMPORT = ("wsss_core.review", "wsss_core.stages")


def _module_files(root: Path) -> dict[str, Path]:
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _imported_names(tree: ast.Module, module: str, is_package: bool) -> list[tuple[str, int]]:
    """(dotted name, line) of every import that can run: ``from a import b`` gives ``a.b``."""
    names: list[tuple[str, int]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            names.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against this module's package
                package = module.split(".")
                package = package[: len(package) - node.level + (1 if is_package else 0)]
                base = ".".join([*package, base] if base else package)
            names.extend((f"{base}.{alias.name}", node.lineno) for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return names


def import_graph(root: Path = PACKAGE_ROOT) -> dict[str, dict[str, int]]:
    """module -> {imported module of the package: line of the first such import}."""
    files = _module_files(root)
    prefix = root.name

    def resolve(name: str) -> str | None:
        while name and name not in files:  # ``from pkg import name``: name is no module
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, dict[str, int]] = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        edges: dict[str, int] = {}
        for name, line in _imported_names(tree, module, path.name == "__init__.py"):
            target = resolve(name) if name.split(".")[0] == prefix else None
            if target is not None and target != module:
                edges.setdefault(target, line)
        graph[module] = edges
    return graph


def find_cycle(graph: dict[str, dict[str, int]]) -> list[str] | None:
    """One cycle as a path that ends where it starts, or None (iterative depth-first search)."""
    done: set[str] = set()
    for start in sorted(graph):
        if start in done:
            continue
        path = [start]
        pending = [iter(sorted(graph[start]))]
        while pending:
            target = next(pending[-1], None)
            if target is None:
                pending.pop()
                done.add(path.pop())
            elif target in path:
                return [*path[path.index(target) :], target]
            elif target not in done:
                path.append(target)
                pending.append(iter(sorted(graph[target])))
    return None


def _described(graph: dict[str, dict[str, int]], cycle: list[str]) -> str:
    steps = itertools.pairwise(cycle)
    return (
        " -> ".join(cycle)
        + "\n"
        + "\n".join(
            f"  {PACKAGE_ROOT.parent / a.replace('.', '/')}.py:{graph[a][b]} imports {b}"
            for a, b in steps
        )
    )


def test_the_library_has_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 50 and graph["wsss_core.stages.ingest_stage"]  # the walk found them
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + _described(graph, cycle)


def test_data_imports_neither_review_nor_stages():
    graph = import_graph()
    data = [m for m in graph if m.startswith("wsss_core.data.")]
    assert "wsss_core.data.folder_source" in data
    wrong = sorted(
        f"{module} (line {line}) imports {target}"
        for module in data
        for target, line in graph[module].items()
        if target.startswith(DATA_MUST_NOT_IMPORT)
    )
    assert wrong == []


def test_the_graph_sees_lazy_imports_and_skips_type_checking_ones(tmp_path: Path):
    """The checks above can fail: a cycle through a function-level import is found."""
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg.sub import b\n")
    (package / "sub" / "b.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from pkg import c\n"
        "def later():\n    from ..a import name\n"
    )
    (package / "c.py").write_text("import pkg.a\n")
    graph = import_graph(package)
    assert graph["pkg.sub.b"] == {"pkg.a": 5}  # relative, lazy; TYPE_CHECKING's c left out
    assert find_cycle(graph) == ["pkg.a", "pkg.sub.b", "pkg.a"]
    (package / "sub" / "b.py").write_text(
        "import typing\nif typing.TYPE_CHECKING:\n    import pkg.a\n"
    )
    assert find_cycle(import_graph(package)) is None
