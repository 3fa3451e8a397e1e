"""The layering holds: no module of the engine or of the training package imports (at the top or
inside a function) another that imports it back; the engine knows neither Qt nor training."""
import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = {"LungAutoSegLib": REPO / "LungAutoSeg" / "LungAutoSegLib",
            "lungautoseg_train": REPO / "Training" / "lungautoseg_train"}


def imported(path: Path, package: str) -> set[str]:
    """Every module name ``path`` imports, absolute (``package.module`` for its siblings)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = f"{package}.{node.module}" if node.level else node.module
            if node.level and node.module is None:
                names.update(f"{package}.{alias.name}" for alias in node.names)
            else:
                names.add(base)
    return names


def graph(package: str) -> dict[str, set[str]]:
    modules = {f"{package}.{p.stem}": p for p in PACKAGES[package].glob("*.py") if p.stem != "__init__"}
    return {name: {n for n in imported(path, package) if n in modules} for name, path in modules.items()}


def cycle_through(start: str, edges: dict[str, set[str]]) -> list[str] | None:
    """A path start -> ... -> start, if there is one."""
    stack, seen = [(start, [start])], set()
    while stack:
        node, path = stack.pop()
        for nxt in edges[node]:
            if nxt == start:
                return path + [start]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, path + [nxt]))
    return None


@pytest.mark.parametrize("package", list(PACKAGES))
def test_no_module_imports_one_that_imports_it_back(package):
    edges = graph(package)
    cycles = [" -> ".join(c) for c in (cycle_through(m, edges) for m in sorted(edges)) if c]
    assert not cycles, cycles


def test_the_walk_sees_imports_inside_functions(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("from .a import x\n\ndef f():\n    from . import b\n    import os\n")
    assert imported(module, "pkg") == {"pkg.a", "pkg.b", "os"}
    assert cycle_through("a", {"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_the_engine_imports_neither_qt_nor_training():
    for path in PACKAGES["LungAutoSegLib"].glob("*.py"):
        roots = {name.split(".")[0] for name in imported(path, "LungAutoSegLib")}
        forbidden = {"qt", "PyQt5", "lungautoseg_train", "wandb"} | {"slicer"}
        if path.stem == "mrml_bridge":  # MRML through Slicer's libraries, still no Qt
            forbidden.discard("slicer")
        assert not roots & forbidden, path.name
