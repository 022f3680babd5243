"""A real MLflow tracking server: a parallel (joblib) sweep logs both jobs to it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import FAST, REPO, run_train

pytestmark = pytest.mark.slow


def start_server(root: Path) -> tuple[subprocess.Popen, str]:
    """``python -m medclf.ui --port 0`` (what make mlflow-server runs); returns its URI."""
    env = dict(os.environ, MEDCLF_ROOT=str(root), PYTHONUNBUFFERED="1")
    process = subprocess.Popen(
        [sys.executable, "-m", "medclf.ui", "--port", "0"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        found = re.search(r"tracking URI: (http://127\.0\.0\.1:\d+)", line)
        if found:
            return process, found.group(1)
        if not line and process.poll() is not None:
            break
    os.killpg(process.pid, signal.SIGTERM)
    raise AssertionError("the MLflow server did not start")


def test_parallel_sweep_logs_to_a_tracking_server(tmp_path: Path) -> None:
    import mlflow

    process, uri = start_server(tmp_path / "server")
    try:
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
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
