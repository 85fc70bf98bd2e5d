"""The package's layering, read from its sources (never imported: `training/` needs torch).

The subpackages are layers, in the order a page goes through them; a module may import its own
layer and the layers below, never one above, and no chain of imports may come back to where it
started (lazy imports inside functions count: they are dependencies all the same).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "scan_pipeline"
# bottom to top; the modules at the package's root (cli, __main__) are the top
LAYERS = ("core", "page", "read", "ledger", "review", "report", "run", "synth")
TOP = len(LAYERS)
TRAINING = "training"  # builds the shipped data; may import anything, nothing may import it


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, root: Path) -> set[str]:
    """The package's modules that `path` imports, anywhere in it (a function's lazy import too)."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # `from pkg import sub` names a module when pkg/sub.py (or pkg/sub/) exists
            targets = [f"{module}.{a.name}" if _exists(f"{module}.{a.name}", root) else module for a in node.names]
        else:
            continue
        found |= {t for t in targets if t == root.name or t.startswith(root.name + ".")}
    found.discard(name)
    return {t for t in found if t == root.name or _exists(t, root)}


def _exists(module: str, root: Path) -> bool:
    rel = Path(*module.split(".")[1:])
    return (root / rel).with_suffix(".py").is_file() or (root / rel / "__init__.py").is_file()


def graph(root: Path) -> dict[str, set[str]]:
    return {module_name(p, root): imports_of(p, root) for p in sorted(root.rglob("*.py"))}


def layer(module: str) -> int | None:
    """The rank of a module's layer; None for training."""
    parts = module.split(".")
    if len(parts) == 1:
        return -1  # the package itself: its version, nothing else (test below)
    if len(parts) < 2 or parts[1] not in (*LAYERS, TRAINING):
        return TOP
    return None if parts[1] == TRAINING else LAYERS.index(parts[1])


def upward_imports(deps: dict[str, set[str]]) -> list[str]:
    wrong = []
    for module, targets in deps.items():
        here = layer(module)
        for target in sorted(targets):
            there = layer(target)
            if there is None and here is not None:
                wrong.append(f"{module} imports {target}: training code is never imported at run time")
            elif here is not None and there is not None and there > here:
                wrong.append(f"{module} ({LAYERS[here] if here < TOP else 'top'}) imports {target}, "
                             f"a layer above it ({LAYERS[there] if there < TOP else 'top'})")
    return wrong


def cycles(deps: dict[str, set[str]]) -> list[list[str]]:
    """Each strongly connected group of two or more modules (Tarjan), as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in deps.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(deps):
        if v not in index:
            visit(v)
    return found


def test_every_module_is_in_a_layer():
    loose = [p.name for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "__main__", "cli")]
    assert loose == [], f"modules at the package's root belong in a layer ({', '.join(LAYERS)}): {loose}"
    folders = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert folders - {"data", "schemas"} == {*LAYERS, TRAINING}


def test_no_import_goes_up_the_layers():
    assert upward_imports(graph(PACKAGE)) == []


def test_no_import_cycle():
    assert cycles(graph(PACKAGE)) == []


def test_the_graph_sees_lazy_relative_and_absolute_imports():
    deps = graph(PACKAGE)
    assert "scan_pipeline.core.records" in deps["scan_pipeline.run.process"]
    assert "scan_pipeline.run.cluster" in deps["scan_pipeline.run.pool"]  # imported inside a function
    assert deps["scan_pipeline"] == set()  # the version only: every module may import it
    assert all(not targets for module, targets in deps.items() if module.startswith("scan_pipeline.core.")
               and module.endswith(("errors", "faults", "flags")))


@pytest.fixture
def toy(tmp_path: Path) -> Path:
    root = tmp_path / "scan_pipeline"
    for folder in ("", "core", "read", "training"):
        (root / folder).mkdir(exist_ok=True)
        (root / folder / "__init__.py").write_text("")
    (root / "core" / "a.py").write_text("def f():\n    from ..read import b\n")
    (root / "read" / "b.py").write_text("from scan_pipeline.core import a\nfrom . import c\n")
    (root / "read" / "c.py").write_text("import scan_pipeline.training.t\n")
    (root / "training" / "t.py").write_text("from scan_pipeline.read.b import anything\n")
    return root


def test_the_checks_catch_a_cycle_an_upward_import_and_training(toy: Path):
    deps = graph(toy)
    assert deps["scan_pipeline.core.a"] == {"scan_pipeline.read.b"}
    assert deps["scan_pipeline.read.b"] == {"scan_pipeline.core.a", "scan_pipeline.read.c"}
    assert cycles(deps) == [["scan_pipeline.core.a", "scan_pipeline.read.b", "scan_pipeline.read.c",
                             "scan_pipeline.training.t"]]
    wrong = upward_imports(deps)
    assert any(w.startswith("scan_pipeline.core.a (core) imports scan_pipeline.read.b") for w in wrong)
    assert any("training code is never imported" in w and w.startswith("scan_pipeline.read.c") for w in wrong)
    del deps["scan_pipeline.core.a"]
    assert cycles(deps) == [["scan_pipeline.read.b", "scan_pipeline.read.c", "scan_pipeline.training.t"]]
