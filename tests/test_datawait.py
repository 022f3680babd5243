"""``time/data_wait_fraction``: high for a loader made slow on purpose, low for data in
memory, logged per epoch, and a warning that says what to change."""

from __future__ import annotations

import logging
import time

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from medclf.pipeline.datawait import METRIC, MIN_STEPS, DataWait, advice


class Slow(Dataset):
    """``n`` samples, each taking ``delay`` seconds to load."""

    def __init__(self, delay: float, n: int) -> None:
        self.delay, self.n = delay, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        time.sleep(self.delay)
        return torch.full((4,), float(i)), torch.tensor(i % 2)


class Model(L.LightningModule):
    """A linear model whose step takes about ``step`` seconds."""

    def __init__(self, step: float) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 2)
        self.step = step

    def training_step(self, batch, batch_idx):
        time.sleep(self.step)
        x, y = batch
        return torch.nn.functional.cross_entropy(self.layer(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(delay: float, step: float, epochs: int = 2, n: int = 16) -> tuple[L.Trainer, DataWait]:
    wait = DataWait(threshold=0.1)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=epochs,
        callbacks=[wait],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(Model(step), DataLoader(Slow(delay, n), batch_size=4))
    return trainer, wait


def test_a_slow_loader_waits_most_of_the_time_and_the_log_says_what_to_change(caplog):
    with caplog.at_level(logging.WARNING, logger="medclf.train"):
        trainer, wait = _fit(delay=0.01, step=0.002, n=40)  # 40 ms per batch against 2 ms
    assert len(wait.fractions) == 2 and min(wait.fractions) > 0.5
    assert float(trainer.callback_metrics[METRIC]) == pytest.approx(wait.fractions[-1])
    warnings = [r.getMessage() for r in caplog.records if "waited for its data" in r.getMessage()]
    assert len(warnings) == 1  # once per run
    assert METRIC in warnings[0] and "num_workers" in warnings[0]


def test_data_in_memory_waits_little_and_no_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="medclf.train"):
        trainer, wait = _fit(delay=0.0, step=0.05, epochs=1, n=64)  # 16 steps: load spikes
        # of this shared machine between two steps do not decide it
    assert wait.fractions[0] < 0.2
    assert float(trainer.callback_metrics[METRIC]) == pytest.approx(wait.fractions[0])
    assert "waited for its data" not in caplog.text


def test_a_short_run_is_not_judged(caplog):
    """Under MIN_STEPS steps the first batch and the machine's load decide the fraction: it
    is logged, not warned about."""
    with caplog.at_level(logging.WARNING, logger="medclf.train"):
        trainer, wait = _fit(delay=0.01, step=0.002, n=32)  # 2 epochs of 8 steps: 16
    assert min(wait.fractions) > 0.5 and sum(wait.steps) == 16 < MIN_STEPS
    assert "waited for its data" not in caplog.text


def test_on_device_advice_names_the_augmentation_not_the_workers() -> None:
    """With the images on the device no loader worker decodes: the advice is the batch's
    augmentation there, or a larger batch."""

    class Trainer:
        datamodule = type("OnDevice", (), {"on_device": True, "workers": lambda self: 0})()

    said = advice(Trainer())
    assert "augment.device" in said and "batch_size" in said and "num_workers" not in said
