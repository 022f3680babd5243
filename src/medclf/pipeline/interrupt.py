"""Ctrl-C during training: every Ctrl-C stops the run, and the state at that step is saved
as ``last.ckpt`` before Lightning shuts down (the pipeline marks the MLflow run KILLED), so
nothing since the last epoch's checkpoint is lost: the same command with ``ckpt_path=last``
resumes (medclf.pipeline.resume).

Python's default SIGINT handler raises KeyboardInterrupt wherever the main thread happens
to be. Raised inside a ``__del__`` method, a weakref or garbage-collection callback or a
callback from C, that exception is printed as "Exception ignored" and dropped, and training
goes on: a Ctrl-C could be lost. During ``fit`` this module's handler only notes the request,
and the callback raises KeyboardInterrupt itself at the next batch boundary (before and
after every training and validation batch), where nothing swallows it. A second Ctrl-C
raises at once.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from lightning.pytorch.callbacks import Callback

log = logging.getLogger(__name__)


class InterruptCheckpoint(Callback):
    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:  # pressed again: do not wait for the batch to end
            raise KeyboardInterrupt
        self.requested = True  # no logging here: the main thread may be inside a write

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        self.requested = False
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)

    def _restore(self) -> None:
        if self._previous is not None and threading.current_thread() is threading.main_thread():
            if signal.getsignal(signal.SIGINT) == self._handle:
                signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def _stop_if_requested(self, *args: Any) -> None:
        if self.requested:
            log.warning("Ctrl-C: stopping the run")
            raise KeyboardInterrupt

    on_train_batch_start = _stop_if_requested
    on_train_batch_end = _stop_if_requested
    on_validation_batch_start = _stop_if_requested
    on_validation_batch_end = _stop_if_requested
    on_train_epoch_end = _stop_if_requested
    on_validation_end = _stop_if_requested

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        self._restore()

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self._restore()
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
