"""Ctrl-C during training: last.ckpt holds the interrupted state (a real file, not the
save_last link written through), the MLflow run is KILLED, and the checkpoint resumes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import REPO

from helpers import search_runs

pytestmark = pytest.mark.slow


def test_ctrl_c_saves_last_checkpoint_and_marks_the_run_killed(tmp_path) -> None:
    env = dict(os.environ, HF_HUB_OFFLINE="1", NO_ALBUMENTATIONS_UPDATE="1")
    command = [
        sys.executable,
        str(REPO / "train.py"),
        f"paths.root_dir={tmp_path}",
        "trainer.max_epochs=100",
        "callbacks.early_stopping=null",  # else the run may end on its own before the signal
        "trainer.limit_train_batches=3",
        "trainer.limit_val_batches=1",
        "logger.mlflow.save_model=false",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    process = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    checkpoints = tmp_path / "run" / "checkpoints"
    deadline = time.time() + 240
    while not list(checkpoints.glob("epoch_*.ckpt")) and time.time() < deadline:
        assert process.poll() is None, process.communicate()[1][-3000:]
        time.sleep(0.5)
    time.sleep(1.0)  # into the next epoch
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode != 0
    last = checkpoints / "last.ckpt"
    assert last.is_file() and not last.is_symlink(), stderr[-3000:]
    assert "resume with ckpt_path=" in stdout + stderr
    state = torch.load(last, map_location="cpu", weights_only=True)
    epochs = [p for p in checkpoints.glob("epoch_*.ckpt")]
    assert epochs and state["global_step"] >= 3  # at least the first epoch's steps
    assert list(search_runs(tmp_path)["status"]) == ["KILLED"]
