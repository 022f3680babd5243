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
