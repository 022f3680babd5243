"""A checkpoint write killed before it completes leaves the previous file whole: Lightning
writes to a temporary file and renames it (fsspec transaction)."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO


def test_interrupted_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch) -> None:
    import fsspec.implementations.local as local

    path = tmp_path / "last.ckpt"
    io = TorchCheckpointIO()
    io.save_checkpoint({"epoch": 1, "w": torch.ones(1000)}, path)
    before = path.read_bytes()

    def killed(self):  # the process dies after writing the temporary file, before the rename
        raise KeyboardInterrupt

    monkeypatch.setattr(local.LocalFileOpener, "commit", killed)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"epoch": 2, "w": torch.zeros(1000)}, path)
    assert path.read_bytes() == before
    assert torch.load(path, weights_only=True)["epoch"] == 1


def test_background_writes_hold_their_step_and_keep_the_order(tmp_path, monkeypatch) -> None:
    """BackgroundCheckpointIO (callbacks.background_checkpoints): the file holds the
    tensors as they were when saved, a removal right after a save removes the written file,
    a load waits for the write, and a failed write is raised at teardown."""
    import threading

    from medclf.pipeline.checkpointing import BackgroundCheckpointIO

    io = BackgroundCheckpointIO()
    gate = threading.Event()
    write = io.io.save_checkpoint

    def slow(*args, **kwargs):  # the writer thread runs behind the loop
        gate.wait(5)
        write(*args, **kwargs)

    monkeypatch.setattr(io.io, "save_checkpoint", slow)
    weights = torch.ones(1000)
    io.save_checkpoint({"w": weights}, tmp_path / "a.ckpt")
    weights.mul_(5)  # the loop goes on training
    io.save_checkpoint({"w": weights}, tmp_path / "b.ckpt")
    io.remove_checkpoint(tmp_path / "b.ckpt")
    io.save_checkpoint({"w": weights}, tmp_path / "c.ckpt")
    assert not (tmp_path / "a.ckpt").exists()  # nothing written yet: the loop did not wait
    gate.set()
    assert torch.equal(io.load_checkpoint(tmp_path / "a.ckpt")["w"], torch.ones(1000))
    assert torch.equal(io.load_checkpoint(tmp_path / "c.ckpt")["w"], torch.full((1000,), 5.0))
    assert not (tmp_path / "b.ckpt").exists()  # saved, then removed, in that order
    monkeypatch.setattr(io.io, "save_checkpoint", lambda *a, **k: 1 / 0)
    io.save_checkpoint({"w": weights}, tmp_path / "c.ckpt")
    with pytest.raises(ZeroDivisionError):
        io.teardown()


def test_the_platform_callback_gives_the_strategy_background_writes_once(tmp_path) -> None:
    """callbacks.background_checkpoints wraps the strategy's checkpoint IO at set-up (fit and
    then test: still one wrapper), so the Trainer's saves go through the background thread."""
    import lightning as L

    from medclf.pipeline.checkpointing import BackgroundCheckpointIO, BackgroundCheckpoints

    trainer = L.Trainer(default_root_dir=tmp_path, logger=False, enable_progress_bar=False)
    plain = trainer.strategy.checkpoint_io
    callback = BackgroundCheckpoints()
    callback.setup(trainer, None, "fit")
    callback.setup(trainer, None, "test")
    io = trainer.strategy.checkpoint_io
    assert isinstance(io, BackgroundCheckpointIO) and io.io is plain
