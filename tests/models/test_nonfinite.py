"""A NaN or infinite training loss stops training with an error naming the epoch and batch
(nonfinite_loss=stop), or its batch is skipped (nonfinite_loss=skip)."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from medclf.errors import NonFiniteLossError
from medclf.models.module import ClassificationModule


class Tiny(Dataset):
    def __len__(self) -> int:
        return 8

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return {"image": torch.rand(1, 32, 32, generator=g), "target": i % 3, "index": i}


class NaNAtCall(torch.nn.Module):
    """The module's loss, but NaN at the given (0-based) training call."""

    def __init__(self, criterion, bad_call: int) -> None:
        super().__init__()
        self.criterion, self.bad_call, self.calls = criterion, bad_call, 0

    def forward(self, logits, target):
        loss = self.criterion(logits, target)
        if torch.is_grad_enabled():
            self.calls += 1
            if self.calls - 1 == self.bad_call:
                return loss * float("nan")
        return loss


def fit(mode: str, bad_call: int, tmp_path) -> ClassificationModule:
    torch.manual_seed(0)
    module = ClassificationModule(
        class_names=["a", "b", "c"],
        in_chans=1,
        backbone={"name": "resnet18"},
        head={"activation": "softmax"},
        loss={"name": "ce"},
        optimizer={"name": "sgd", "lr": 0.01},
        image_size=32,
        nonfinite_loss=mode,
    )
    module.criterion = NaNAtCall(module.criterion, bad_call)
    trainer = L.Trainer(
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, train_dataloaders=DataLoader(Tiny(), batch_size=2))
    return module


def test_stop_names_epoch_and_batch(tmp_path) -> None:
    with pytest.raises(NonFiniteLossError, match=r"epoch 1, batch 1 \(global step 5\)"):
        fit("stop", bad_call=5, tmp_path=tmp_path)  # 4 batches per epoch: call 5 = epoch 1


def test_skip_trains_on_with_finite_weights(tmp_path) -> None:
    module = fit("skip", bad_call=2, tmp_path=tmp_path)
    assert module.skipped_steps == 1
    # Lightning still counts the step, but no gradient reached the optimizer
    assert module.trainer.global_step == 8
    assert all(torch.isfinite(p).all() for p in module.parameters())


def test_unknown_mode_is_refused() -> None:
    from helpers import check_config
    from medclf.errors import ConfigError

    with pytest.raises(ConfigError, match="nonfinite_loss"):
        check_config("nonfinite_loss=ignore")
