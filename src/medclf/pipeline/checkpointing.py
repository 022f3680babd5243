"""Checkpoint files written off the training loop (``callbacks.background_checkpoints``, a
platform callback that gives the Trainer's strategy this checkpoint IO): each save copies the
checkpoint's tensors in the loop (a memory copy: the file holds the state of its step) and
one background thread serialises and writes them, while training goes on. Saves and
removals run in the order they were asked for, so ``save_top_k`` never leaves a file behind;
a load, and the end of fit or test, wait for the writes before them. Files are still written
to a temporary name and renamed (TorchCheckpointIO), so a killed run leaves whole files.

A resnet18 checkpoint with its Adam state is about 130 MB; the best and the last checkpoint
are written after every epoch, a few hundred milliseconds of the loop's time each.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch
from lightning.fabric.plugins import CheckpointIO, TorchCheckpointIO
from lightning.pytorch.callbacks import Callback
from lightning_utilities.core.apply_func import apply_to_collection


class BackgroundCheckpointIO(CheckpointIO):
    """The saves and removals of ``io`` (TorchCheckpointIO by default), in order, in one
    background thread."""

    def __init__(self, io: CheckpointIO | None = None) -> None:
        self.io = io if io is not None else TorchCheckpointIO()
        self._pool: ThreadPoolExecutor | None = None
        self._pending: list[Future] = []

    def _submit(self, function, *args: Any) -> None:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint-writer")
        self._pending = [f for f in self._pending if not f.done() or f.exception()]
        self._raise_failed()
        self._pending.append(self._pool.submit(function, *args))

    def _raise_failed(self) -> None:
        for future in self._pending:
            if future.done() and future.exception() is not None:
                self._pending = []
                raise future.exception()

    def wait(self) -> None:
        """Until every save and removal asked for so far is done (their errors re-raised)."""
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None
    ) -> None:
        snapshot = apply_to_collection(checkpoint, torch.Tensor, lambda t: t.detach().clone())
        self._submit(self.io.save_checkpoint, snapshot, path, storage_options)

    def remove_checkpoint(self, path: Any) -> None:
        self._submit(self.io.remove_checkpoint, path)

    def load_checkpoint(self, path: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self.wait()
        return self.io.load_checkpoint(path, *args, **kwargs)

    def teardown(self) -> None:
        try:
            self.wait()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None


class BackgroundCheckpoints(Callback):
    """Gives the Trainer's strategy a :class:`BackgroundCheckpointIO` around the checkpoint
    IO it has, at set-up (before a resumed checkpoint is read); the strategy's teardown, at
    the end of fit and test, waits for the writes. ``callbacks.background_checkpoints=null``:
    checkpoints written in the loop."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        strategy = trainer.strategy
        if not isinstance(strategy.checkpoint_io, BackgroundCheckpointIO):
            strategy.checkpoint_io = BackgroundCheckpointIO(strategy.checkpoint_io)

    def teardown(self, trainer, pl_module, stage: str) -> None:
        """At the end of a fit or test that ended normally, every rank waits until the
        checkpoints are on disk: rank 0 writes them, and the test, the post-hoc fit and the
        other ranks read them (under DDP rank 1 would otherwise open a best checkpoint that
        rank 0's writer has not finished)."""
        io = trainer.strategy.checkpoint_io
        if isinstance(io, BackgroundCheckpointIO):
            io.wait()
        if trainer.world_size > 1:
            trainer.strategy.barrier("background_checkpoints")
