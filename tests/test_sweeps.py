"""Multirun sweeps: one MLflow run per job, grouped by a shared sweep_id."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import FAST, run_train, search_runs

pytestmark = pytest.mark.slow


def test_grid_multirun_gives_one_tagged_run_per_job(tmp_path: Path) -> None:
    result = run_train(
        tmp_path,
        "-m",
        "backbone=resnet18,mobilenetv2",
        "loss=ce,focal",
        "trainer.limit_test_batches=1",
        *FAST,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    runs = search_runs(tmp_path)
    assert len(runs) == 4
    assert set(runs["status"]) == {"FINISHED"}
    assert runs["tags.sweep_id"].nunique() == 1 and runs["tags.sweep_id"].iloc[0]
    combos = {(r["params.backbone.name"], r["params.loss.name"]) for _, r in runs.iterrows()}
    assert combos == {(b, lo) for b in ("resnet18", "mobilenetv2") for lo in ("ce", "focal")}
    assert runs["tags.overrides"].nunique() == 4
    assert sorted(runs["tags.sweep_job"].astype(int)) == [0, 1, 2, 3]
    assert runs["metrics.test/f1"].notna().all()
