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


def tiny_module(class_names=("a", "b", "c"), **overrides):
    """An untrained resnet18 ClassificationModule (1 channel, 32 px)."""
    from medclf.models.module import ClassificationModule

    kwargs = {
        "class_names": list(class_names),
        "in_chans": 1,
        "backbone": {"name": "resnet18", "pretrained": False},
        "head": {"activation": "softmax"},
        "loss": {"name": "ce"},
        "optimizer": {"name": "adamw", "lr": 1e-3},
        "image_size": 32,
    }
    return ClassificationModule(**{**kwargs, **overrides})


def write_checkpoint(module, path: Path) -> Path:
    """``module`` saved as Lightning saves a checkpoint (no training)."""
    import lightning as L

    trainer = L.Trainer(
        logger=False, enable_checkpointing=False, max_epochs=0, enable_model_summary=False
    )
    trainer.strategy.connect(module)
    trainer.save_checkpoint(path)
    return path


def run_config(root: Path, overrides: list[str], run_name: str):
    """The composed train config of ``train.py paths.root_dir=ROOT OVERRIDES``, with the
    Hydra state ``medclf.train.run`` reads set up, for calling ``run`` in this process."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf, open_dict

    from medclf.config import CONF_DIR

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "train", overrides=[f"paths.root_dir={root}", *overrides], return_hydra_config=True
        )
    OmegaConf.set_readonly(cfg.hydra, False)
    cfg.hydra.runtime.output_dir = str(root / "run")
    cfg.hydra.job.override_dirname = run_name
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg
