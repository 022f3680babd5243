"""Every MLflow tag, param prefix and artifact name is a constant of medclf.tracking.names,
imported by writer and reader; only tracking/ talks to the MLflow client."""

from __future__ import annotations

import ast
from pathlib import Path

from medclf.tracking import names

SRC = Path(__file__).resolve().parents[2] / "src" / "medclf"
# split names are also folder names of the report ("test"); config keys share words ("eval")
SHARED_WORDS = {"test", "eval", "data", "fitted", "task", "compare", "audit"}
# the MLflow model's own class (inference/pyfunc.py) and private APIs (compat.py) import mlflow
MLFLOW_IMPORTERS = {"inference/pyfunc.py", "compat.py"}
# the same words in another role
OTHER_ROLES = {
    ("pipeline/ddp.py", "output_dir"): "the config key paths.output_dir",
    ("search/trials.py", "sweep_dir"): "an Optuna trial's user attribute",
}


def _names() -> set[str]:
    values = {
        value
        for key, value in vars(names).items()
        if key.isupper() and isinstance(value, str) and value not in SHARED_WORDS
    }
    values |= {names.figure_file(stem) for stem in names.FIGURES}
    return values


def _outside_tracking() -> list[Path]:
    return [p for p in sorted(SRC.rglob("*.py")) if "tracking" not in p.relative_to(SRC).parts]


def _literals(tree: ast.AST) -> list[str]:
    """String constants, and the literal parts of f-strings (a tag filter such as
    ``f"tags.output_dir = '{x}'"`` included)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            found.append(node.value)
    return found


def _spelled(text: str, name: str) -> bool:
    if text == name:
        return True
    return f"tags.{name}" in text or text.endswith(f"/{name}") or text.startswith(f"{name} =")


def test_no_tag_or_artifact_name_is_spelled_outside_tracking() -> None:
    wanted = _names()
    assert {"optuna_state", "fold_checkpoints", "output_dir", "report.html"} <= wanted
    spelled = []
    for path in _outside_tracking():
        tree = ast.parse(path.read_text())
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
                continue
            if id(node) in docstrings:
                continue
            relative = str(path.relative_to(SRC))
            spelled += [
                f"{relative}: {node.value!r}"
                for name in wanted
                if _spelled(node.value, name) and (relative, node.value) not in OTHER_ROLES
            ]
    assert not spelled, spelled


def test_the_scan_finds_a_spelled_name() -> None:
    tree = ast.parse('client.set_tag(run, "optuna_state", "PRUNED")\nf"tags.output_dir = {x}"')
    literals = _literals(tree)
    assert any(_spelled(t, "optuna_state") for t in literals)
    assert any(_spelled(t, "output_dir") for t in literals)


def test_only_tracking_talks_to_mlflow() -> None:
    talking = []
    for path in _outside_tracking():
        relative = str(path.relative_to(SRC))
        text = path.read_text()
        tree = ast.parse(text)
        for node in ast.walk(tree):
            modules = []
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                modules = [node.module]
            mlflow = any(m == "mlflow" or m.startswith("mlflow.") for m in modules)
            if mlflow and relative not in MLFLOW_IMPORTERS:
                talking.append(f"{relative}: imports {modules}")
            value = getattr(node, "value", None)  # tracker.experiment.set_tag(...)
            if (
                isinstance(node, ast.Attribute)
                and isinstance(value, ast.Attribute)
                and (value.attr == "experiment")
            ):
                talking.append(f"{relative}: uses a logger's MLflow client (.experiment)")
    assert not talking, talking


def test_figures_have_one_table() -> None:
    """The report's figures are named once: the run report shows every figure the test
    report and the curves save, by the names' table."""
    from medclf.evaluation import report_page

    assert report_page.FIGURES is names.FIGURES
    stems = {"confusion_matrix", "roc_curves", "pr_curves", "per_class_metrics", "reliability"}
    others = {"subgroups_forest", "training_curves", "decision_curve", "comparison"}
    assert stems | others == set(names.FIGURES)
