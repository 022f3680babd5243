"""The progress bar reads the logged metrics (a GPU synchronisation each) at most every
``metrics_interval`` seconds during training, and still at the end of each epoch."""

from __future__ import annotations

import lightning as L
import pytest
from lightning.pytorch.demos.boring_classes import BoringModel

from medclf.pipeline.progress import ProgressBar


class LoggingModel(BoringModel):
    def training_step(self, batch, batch_idx):
        out = super().training_step(batch, batch_idx)
        self.log("train/loss", out["loss"], prog_bar=True)
        return out


def reads_during_batches(tmp_path, metrics_interval: float) -> tuple[int, int]:
    """(metric reads inside on_train_batch_end, all reads) in a 2-epoch, 6-batch fit."""
    bar = ProgressBar(metrics_interval=metrics_interval)
    counts = {"batch": 0, "all": 0}
    get_metrics = bar.get_metrics

    def counting(trainer, pl_module):
        counts["all"] += 1
        counts["batch"] += bar._in_train_batch
        return get_metrics(trainer, pl_module)

    bar.get_metrics = counting
    trainer = L.Trainer(
        default_root_dir=tmp_path,
        max_epochs=2,
        limit_train_batches=6,
        limit_val_batches=1,
        callbacks=[bar],
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    trainer.fit(LoggingModel())
    return counts["batch"], counts["all"]


def test_metrics_read_every_batch_with_interval_zero(tmp_path) -> None:
    in_batches, total = reads_during_batches(tmp_path, 0.0)
    assert in_batches == 12  # Lightning's behaviour: after every training batch


def test_metrics_read_once_per_interval(tmp_path) -> None:
    in_batches, total = reads_during_batches(tmp_path, 3600.0)
    # the sanity check's validation has just read them: no batch within the hour does
    assert in_batches == 0
    assert total >= 4  # the ends of validation and of each epoch still read fresh values


def test_negative_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="metrics_interval"):
        ProgressBar(metrics_interval=-1)
