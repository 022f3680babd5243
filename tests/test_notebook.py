"""notebooks/compare_runs.ipynb: committed without outputs, and runs top to bottom on a sweep."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO

pytestmark = pytest.mark.slow

NOTEBOOK = REPO / "notebooks" / "compare_runs.ipynb"
SCRIPT = REPO / "scripts" / "strip_notebook_outputs.py"


def _strip_script():
    """scripts/strip_notebook_outputs.py, imported by path (scripts/ is no package)."""
    spec = importlib.util.spec_from_file_location("strip_notebook_outputs", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _execute(monkeypatch: pytest.MonkeyPatch, root: Path):
    """Run an in-memory copy of the notebook on ROOT's store; return it with its outputs."""
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("MEDCLF_ROOT", str(root))  # the kernel inherits os.environ
    for name in ("MEDCLF_EXPERIMENT", "MEDCLF_SWEEP_ID", "MPLBACKEND"):
        monkeypatch.delenv(name, raising=False)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}
    )
    client.execute()
    return notebook


def _outputs(notebook, tag: str) -> list:
    """The outputs of the code cell tagged ``tag``."""
    cells = [c for c in notebook.cells if tag in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"no single cell tagged {tag!r}"
    return cells[0].outputs


def _text(outputs: list) -> str:
    """Everything the outputs print or display as text."""
    parts = [o.get("text", "") for o in outputs]
    parts += [o.get("data", {}).get(k, "") for o in outputs for k in ("text/plain", "text/html")]
    return "\n".join(parts)


def _errors(notebook) -> list[str]:
    return [
        f"{o.ename}: {o.evalue}"
        for cell in notebook.cells
        for o in cell.get("outputs", [])
        if o.output_type == "error"
    ]


def test_committed_notebook_has_no_outputs(tmp_path: Path) -> None:
    import nbformat

    script = _strip_script()
    assert script.check([NOTEBOOK]) == [], "run scripts/strip_notebook_outputs.py on it"
    check = [sys.executable, str(SCRIPT), "--check"]
    assert subprocess.run(check, capture_output=True, text=True).returncode == 0

    dirty = tmp_path / "dirty.ipynb"
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code = next(c for c in notebook.cells if c.cell_type == "code")
    code.outputs = [nbformat.v4.new_output("stream", name="stdout", text="hi\n")]
    code.execution_count = 1
    nbformat.write(notebook, dirty)
    out = subprocess.run([*check, str(dirty)], capture_output=True, text=True)
    assert out.returncode == 1 and str(dirty) in out.stdout
    assert subprocess.run([sys.executable, str(SCRIPT), str(dirty)]).returncode == 0
    assert script.check([dirty]) == []


@pytest.mark.xdist_group("grid_sweep")
def test_notebook_compares_a_sweep(grid_sweep, monkeypatch: pytest.MonkeyPatch) -> None:
    """On the session's grid sweep (conftest.grid_sweep), whose runs only read here."""
    committed = NOTEBOOK.read_bytes()
    root, _ = grid_sweep
    notebook = _execute(monkeypatch, root)
    assert _errors(notebook) == []
    table = _text(_outputs(notebook, "runs-table"))
    assert "resnet18" in table and "mobilenetv2" in table
    for tag in ("f1-chart", "confusion-matrix"):
        assert any("image/png" in o.get("data", {}) for o in _outputs(notebook, tag)), tag
    assert "macro avg" in _text(_outputs(notebook, "per-class-report"))
    comparison = _text(_outputs(notebook, "comparison"))
    assert "p_holm" in comparison and "mcnemar-exact" in comparison
    assert any("image/png" in o.get("data", {}) for o in _outputs(notebook, "comparison"))
    assert NOTEBOOK.read_bytes() == committed  # executed in memory only


def test_notebook_without_runs_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    notebook = _execute(monkeypatch, tmp_path)
    assert _errors(notebook) == []
    assert "No runs in experiment 'medclf'" in _text(_outputs(notebook, "runs-table"))
    assert not (tmp_path / "mlruns").exists()  # looking does not create a store
