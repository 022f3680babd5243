"""Run train.py as a user would, and read its MLflow store back."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FAST = (
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=4",
    "trainer.limit_val_batches=2",
)


def run_train(root: Path, *overrides: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """``python train.py paths.root_dir=ROOT OVERRIDES`` in a subprocess (offline)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", NO_ALBUMENTATIONS_UPDATE="1", COLUMNS="200")
    flags = [o for o in overrides if o.startswith("-")]  # e.g. -m: before the overrides
    rest = [o for o in overrides if not o.startswith("-")]
    command = [sys.executable, str(REPO / "train.py"), *flags, f"paths.root_dir={root}", *rest]
    return subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


def tracking_uri(root: Path) -> str:
    return f"sqlite:///{root}/mlruns/mlflow.db"


def search_runs(root: Path, experiment: str = "medclf"):
    """All runs of the experiment in ROOT's default store, as a DataFrame (empty if none)."""
    import mlflow
    import pandas as pd

    if not (root / "mlruns" / "mlflow.db").exists():
        return pd.DataFrame()
    mlflow.set_tracking_uri(tracking_uri(root))
    return mlflow.search_runs(experiment_names=[experiment])
