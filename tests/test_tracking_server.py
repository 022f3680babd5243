"""A real MLflow tracking server: a parallel (joblib) sweep logs both jobs to it."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import FAST, run_train, ui_server

pytestmark = pytest.mark.slow


def test_parallel_sweep_logs_to_a_tracking_server(tmp_path: Path) -> None:
    import mlflow

    with ui_server(tmp_path / "server") as (_, uri):
        result = run_train(
            tmp_path / "client",
            "-m",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            "backbone=resnet18,mobilenetv2",
            f"logger.mlflow.tracking_uri={uri}",
            "trainer.limit_test_batches=1",
            *FAST,
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        mlflow.set_tracking_uri(uri)
        runs = mlflow.search_runs(experiment_names=["medclf"])
        assert len(runs) == 2 and set(runs["status"]) == {"FINISHED"}
        assert set(runs["params.backbone.name"]) == {"resnet18", "mobilenetv2"}
        assert runs["tags.sweep_id"].nunique() == 1
        for key in ("test/f1", "test/accuracy", "val/f1", "train/loss_epoch"):
            assert runs[f"metrics.{key}"].notna().all(), key
        assert not (tmp_path / "client" / "mlruns" / "mlflow.db").exists()
