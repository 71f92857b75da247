"""The folder layout is the architecture: layers import only downwards, and nothing imports in a circle.

Every module outside tests is parsed (``ast``) for its imports, lazy ones inside functions and
``TYPE_CHECKING`` blocks included. ``from pkg import sub`` counts as importing ``pkg.sub`` when
``sub`` is a module, as Python resolves it. The layers are the README's "Architecture" diagram.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("triage", "flows", "connectors", "classifiers")

# Top to bottom. A module may import its own layer's modules and any lower layer's; modules of
# sibling groups within one layer (separated here as tuples) must not import each other.
LAYERS: list[tuple[tuple[str, ...], ...]] = [
    (("triage.cli",),),
    (("triage.servers",), ("flows",)),
    (("connectors",), ("classifiers",)),
    (("triage",),),
]


def modules() -> dict[str, Path]:
    """Every module of the project's packages by dotted name."""
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The project's modules that ``name`` imports (the closest known module of each name)."""

    def closest(dotted: str) -> str | None:
        while dotted and dotted not in known:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                targets.append(sub if sub in known else base)
        for target in targets:
            found = closest(target)
            if found is not None and found != name:
                out.add(found)
    return out


def layer_of(module: str) -> tuple[int, int]:
    """``(layer, sibling group)`` of a module: the most specific prefix wins."""
    best: tuple[int, int, int] | None = None
    for i, groups in enumerate(LAYERS):
        for j, prefixes in enumerate(groups):
            for prefix in prefixes:
                inside = module == prefix or module.startswith(prefix + ".")
                if inside and (best is None or len(prefix) > best[2]):
                    best = (i, j, len(prefix))
    assert best is not None, f"{module} is in no layer"
    return best[0], best[1]


GRAPH = {name: imports(name, path, modules()) for name, path in modules().items()}


def test_layers_import_only_downwards() -> None:
    wrong = []
    for module, targets in sorted(GRAPH.items()):
        here = layer_of(module)
        for target in sorted(targets):
            there = layer_of(target)
            if there[0] < here[0] or (there[0] == here[0] and there[1] != here[1]):
                wrong.append(f"{module} -> {target}")
    assert wrong == [], "imports against the layering:\n" + "\n".join(wrong)


def test_no_import_cycles() -> None:
    # Tarjan's strongly connected components: any component of two or more modules is a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
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
                cycles.append(sorted(component))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    assert cycles == [], f"import cycles: {cycles}"


def test_the_checker_sees_lazy_and_relative_imports(tmp_path: Path) -> None:
    # The test above can fail: a lazy import inside a function is an import like any other.
    source = tmp_path / "mod.py"
    source.write_text("def f():\n    from flows.triage import triage\n    import connectors.file\n")
    found = imports("triage.store.x", source, modules())
    assert {"flows.triage", "connectors.file"} <= found
    assert layer_of("triage.store.opening") == (3, 0)
    with pytest.raises(AssertionError):
        layer_of("elsewhere.module")


def test_no_flow_module_shadows_a_core_module() -> None:
    # A Prefect worker loads flows/triage.py as the module `triage` and looks for its submodules in
    # flows/ first: flows/config.py once shadowed triage.config and crashed every deployment run.
    known = modules()
    shadowing = [
        f"flows/{path.name}"
        for path in sorted((ROOT / "flows").glob("*.py"))
        if path.stem != "__init__" and f"triage.{path.stem}" in known
    ]
    assert shadowing == []
