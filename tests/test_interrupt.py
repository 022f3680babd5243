"""Ctrl-C during training: last.ckpt holds the interrupted state (a real file, not the
save_last link written through), the MLflow run is KILLED, and the checkpoint resumes."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import lightning as L
import pytest
import torch
from conftest import REPO
from lightning.pytorch.demos.boring_classes import BoringModel

from helpers import TINY_PROCESS, process_env, search_runs, train_command
from medclf.pipeline.interrupt import InterruptCheckpoint


@pytest.mark.slow
def test_ctrl_c_saves_last_checkpoint_and_marks_the_run_killed(tmp_path) -> None:
    """Ctrl-C (SIGINT) to a real training process, one second into its second epoch."""
    env = process_env()
    command = train_command(
        tmp_path,
        "trainer.max_epochs=100",
        "callbacks.early_stopping=null",  # else the run may end on its own before the signal
        "trainer.limit_train_batches=3",
        "trainer.limit_val_batches=1",
        "logger.mlflow.save_model=false",
        f"hydra.run.dir={tmp_path / 'run'}",
        *TINY_PROCESS,
    )
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


class _Destructor:
    """Sends this process a SIGINT from ``__del__``: Python runs the signal handler there,
    and drops an exception raised inside ``__del__`` ("Exception ignored in ...")."""

    def __del__(self) -> None:
        os.kill(os.getpid(), signal.SIGINT)


class _CtrlCAtStep(L.Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == 2:
            _Destructor()  # collected at once: the Ctrl-C arrives inside its __del__


def _fit(tmp_path, callbacks) -> L.Trainer:
    trainer = L.Trainer(
        default_root_dir=tmp_path,
        max_epochs=3,
        limit_train_batches=5,
        limit_val_batches=1,
        callbacks=[_CtrlCAtStep(), *callbacks],
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
    )
    previous = signal.getsignal(signal.SIGINT)
    try:
        trainer.fit(BoringModel())
    finally:
        signal.signal(signal.SIGINT, previous)  # Lightning ignores SIGINT after a Ctrl-C
    return trainer


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_ctrl_c_that_python_would_drop_still_stops_the_run(tmp_path) -> None:
    """Where Python drops the KeyboardInterrupt (here inside a destructor), Lightning alone
    trains on to the end; with medclf's handler the run stops at the next batch."""
    assert _fit(tmp_path / "plain", []).global_step == 15  # the Ctrl-C was lost
    with pytest.raises(SystemExit):  # Lightning's graceful shutdown after KeyboardInterrupt
        _fit(tmp_path / "medclf", [InterruptCheckpoint()])
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
