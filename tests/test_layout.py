"""The layout stays what the README's Layout section says: no import cycles, every package mapped, no module
named like a standard-library one."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

from tests.conftest import REPO

PACKAGE = REPO / "pipeline"


def modules() -> dict[str, Path]:
    """Dotted name -> file, for every module of the package (a package is its __init__)."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules `name` imports anywhere in its file (function-level imports count too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in known}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([node.module] if node.module else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found |= {full} if full in known else ({base} if base in known else set())
    return found - {name}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def test_no_import_cycles_between_modules_or_packages():
    graph = import_graph()
    assert cycles(graph) == []

    def unit(module: str) -> str:  # pipeline.sandbox.box -> pipeline.filter; pipeline.cli stays itself
        parts = module.split(".")
        return ".".join(parts[:2]) if len(parts) > 1 and (PACKAGE / parts[1]).is_dir() else module

    packages: dict[str, set[str]] = {}
    for module, deps in graph.items():
        packages.setdefault(unit(module), set()).update(unit(d) for d in deps if unit(d) != unit(module))
    assert cycles(packages) == []


def test_the_cycle_finder_finds_cycles_through_function_level_and_relative_imports(tmp_path):
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    source = tmp_path / "x.py"
    source.write_text("def f():\n    from pipeline.y import g\n\nfrom . import z\nimport json\n")
    known = {"pipeline.x": source, "pipeline.y": tmp_path / "y.py", "pipeline.z": tmp_path / "z.py"}
    assert imports("pipeline.x", source, known) == {"pipeline.y", "pipeline.z"}


def test_the_readme_maps_every_package_in_one_line():
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    mapped = [m.group(1) for m in re.finditer(r"^- `(pipeline/[^`]+/)`:", section, re.MULTILINE)]
    packages = [
        str(p.parent.relative_to(REPO)) + "/" for p in PACKAGE.rglob("__init__.py") if p.parent != PACKAGE
    ]
    assert sorted(mapped) == sorted(packages)  # each once, and none that is gone


def test_no_module_is_named_like_a_standard_library_module():
    clashes = [str(p) for p in modules().values() if p.stem in sys.stdlib_module_names]
    assert clashes == []
