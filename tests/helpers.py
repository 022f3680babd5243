"""Run train.py as a user would, and read its MLflow store back."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
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


@contextlib.contextmanager
def ui_server(root: Path):
    """``python -m medclf.ui --port 0`` (what make ui / make mlflow-server run) over ROOT's
    store; yields (dashboard link match with groups port and experiment id, tracking URI)
    once the server answers, and stops it by its process group afterwards."""
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
    try:
        link = uri = None
        deadline = time.monotonic() + 120
        while uri is None and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line and process.poll() is not None:
                break
            link = link or re.search(r"http://127\.0\.0\.1:(\d+)/#/experiments/(\w+)/runs", line)
            found = re.search(r"tracking URI: (http://127\.0\.0\.1:\d+)", line)
            uri = found.group(1) if found else None
        assert link and uri, "the MLflow server did not start"
        yield link, uri
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
