"""The layout keeps its promises: no import cycle among medclf modules (imports inside
functions counted), data flows one way, and private APIs of other libraries are used only
in medclf.compat."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "medclf"
LIBRARIES = ("lightning", "torchmetrics", "timm", "monai", "mlflow", "omegaconf", "hydra", "torch")


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in SRC.rglob("*.py")}


def _imports(path: Path) -> list[tuple[str, int]]:
    """(imported name, line) of every import in the file, at any depth: ``import a.b``,
    ``from a import b`` (as ``a.b``) and relative imports resolved."""
    tree = ast.parse(path.read_text(), str(path))
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parent = parts[: len(parts) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            found += [(f"{base}.{alias.name}", node.lineno) for alias in node.names]
            found.append((base, node.lineno))
    return found


def _medclf_target(name: str) -> str | None:
    """The medclf module an imported name refers to (a module, or a module's attribute)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for name, path in MODULES.items():
        for imported, _ in _imports(path):
            target = _medclf_target(imported)
            if target and target != name and target != "medclf":
                graph[name].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_sees_imports_inside_functions() -> None:
    graph = _graph()
    # medclf.pipeline.task imports medclf.pipeline.cv only inside train_task
    assert "medclf.pipeline.cv" in graph["medclf.pipeline.task"]
    assert "medclf.models.registry" in graph["medclf.models.losses"]


def test_no_import_cycle_among_medclf_modules() -> None:
    assert _cycles(_graph()) == []


def test_the_cycle_check_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize(
    ("layer", "forbidden"),
    [
        ("medclf.models", ("medclf.data", "medclf.pipeline", "medclf.inference", "medclf.cli")),
        ("medclf.data", ("medclf.models", "medclf.pipeline", "medclf.inference", "medclf.cli")),
        ("medclf.inference", ("medclf.pipeline", "medclf.cli")),
        ("medclf.evaluation", ("medclf.pipeline", "medclf.cli")),
        ("medclf.tracking", ("medclf.pipeline", "medclf.cli", "medclf.data")),
        ("medclf.pipeline", ("medclf.cli",)),
        ("medclf.search", ("medclf.pipeline", "medclf.cli")),
    ],
)
def test_data_flows_one_way(layer: str, forbidden: tuple[str, ...]) -> None:
    """conf → cli → pipeline → data + models → Trainer → tracking: nothing imports cli/,
    nothing under models/ imports data/."""
    graph = _graph()
    wrong = [
        f"{name} imports {target}"
        for name, targets in graph.items()
        if name.startswith(layer)
        for target in targets
        if target.startswith(forbidden)
    ]
    assert wrong == []


def test_private_apis_of_other_libraries_only_in_compat() -> None:
    """``from lightning.x._y import``, ``import timm.models._z``: only medclf.compat."""
    found = []
    for name, path in MODULES.items():
        if name == "medclf.compat":
            continue
        for imported, line in _imports(path):
            parts = imported.split(".")
            if parts[0] in LIBRARIES and any(p.startswith("_") for p in parts[1:]):
                found.append(f"{path.name}:{line} {imported}")
    assert found == []
