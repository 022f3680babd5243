"""Ctrl-C during training: the state at that step is saved as ``last.ckpt`` before Lightning
shuts down (and train.py marks the MLflow run KILLED), so nothing since the last epoch's
checkpoint is lost: the same command with ``ckpt_path=last`` resumes (medclf.resume)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Callback

log = logging.getLogger(__name__)


class InterruptCheckpoint(Callback):
    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        callback = trainer.checkpoint_callback
        if (
            not isinstance(exception, KeyboardInterrupt)
            or trainer.state.fn != "fit"
            or callback is None
            or callback.dirpath is None
            or trainer.world_size > 1  # saving is collective: other ranks may be gone
        ):
            return
        path = Path(callback.dirpath) / "last.ckpt"
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink():  # save_last=link: replace the link, never write through it
            path.unlink()
        trainer.save_checkpoint(path)
        log.warning(
            "interrupted at epoch %d, step %d: saved %s; resume with ckpt_path=last (and "
            "the same overrides) or ckpt_path=%s",
            trainer.current_epoch,
            trainer.global_step,
            path,
            path,
        )
