"""Multirun sweeps: one MLflow run per job, grouped by a shared sweep_id."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from helpers import search_runs

pytestmark = pytest.mark.slow


@pytest.mark.xdist_group("grid_sweep")
def test_grid_multirun_gives_one_tagged_run_per_job(grid_sweep, monkeypatch) -> None:
    """The session's 2 x 2 grid (conftest.grid_sweep: backbone=resnet18,mobilenetv2
    loss=ce,focal)."""
    root, _ = grid_sweep
    runs = search_runs(root)
    assert len(runs) == 4
    assert set(runs["status"]) == {"FINISHED"}
    assert runs["tags.sweep_id"].nunique() == 1 and runs["tags.sweep_id"].iloc[0]
    combos = {(r["params.backbone.name"], r["params.loss.name"]) for _, r in runs.iterrows()}
    assert combos == {(b, lo) for b in ("resnet18", "mobilenetv2") for lo in ("ce", "focal")}
    assert runs["tags.overrides"].nunique() == 4
    assert sorted(runs["tags.sweep_job"].astype(int)) == [0, 1, 2, 3]
    assert runs["metrics.test/f1"].notna().all()
    # the run names say what ran (the swept backbone and loss are in them already)
    names = {f"{b}·{lo}·digits" for b in ("resnet18", "mobilenetv2") for lo in ("ce", "focal")}
    assert set(runs["tags.mlflow.runName"]) == names
    _check_report(root, runs, monkeypatch)


def _check_report(root: Path, runs, monkeypatch) -> None:
    """medclf-report lists the sweep's runs, best test/f1 first."""
    from helpers import run_command, tracking_uri
    from medclf.cli.report import main
    from medclf.tracking.runs import runs_table

    table = runs_table(tracking_uri(root), "medclf", sweep_id=runs["tags.sweep_id"].iloc[0])
    assert len(table) == 4
    assert table["test/f1"].tolist() == sorted(runs["metrics.test/f1"], reverse=True)
    assert set(table["backbone"]) == {"resnet18", "mobilenetv2"}
    # the data each run saw: its dataset inputs' name and the training split's digest
    (data,) = set(table["data"])
    assert data.startswith("digits@") and len(data) == len("digits@") + 12
    monkeypatch.setenv("MEDCLF_ROOT", str(root))
    out = run_command(lambda: sys.exit(main()), ["medclf-report"])
    assert out.returncode == 0, out.stderr
    assert "medclf: 4 runs, best test/f1 first" in out.stdout
    assert out.stdout.count("FINISHED") == 4
