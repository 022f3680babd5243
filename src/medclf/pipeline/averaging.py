"""Weight averaging: an exponential moving average of the weights (``model.ema_decay``) or
stochastic weight averaging from an epoch on (``model.swa_epoch_start``).

Both are Lightning's :class:`~lightning.pytorch.callbacks.WeightAveraging` (an
``torch.optim.swa_utils.AveragedModel`` updated after optimizer steps or epochs): validation
runs on the averaged weights, checkpoints hold them as their ``state_dict`` (the trained
weights beside them, as ``current_model_state``, for resuming), and training ends with them
in the model. So the test, eval.py, predict.py, the MLflow model and the exports all use the
averaged weights without knowing about averaging.

Two differences from Lightning's callback: nothing is swapped in or saved before the first
update (Lightning's would validate and checkpoint the initial weights until then), and the
EMA decay warms up as timm's ``ModelEmaV3`` does, ``min(decay, 1 − (1 + n)^(−2/3))`` at the
n-th update, so a short run's average is not dominated by its first weights.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from lightning.pytorch.callbacks import WeightAveraging
from torch.optim.swa_utils import get_ema_multi_avg_fn

log = logging.getLogger("medclf.train")


def ema_decay(decay: float, updates: int, warmup: bool = True) -> float:
    """The decay of the ``updates``-th update after the first (which copies the weights):
    timm ModelEmaV3's warm-up ``1 − (1 + n)^(−2/3)``, capped at ``decay``."""
    if not warmup:
        return decay
    return min(decay, 1.0 - (1.0 + updates) ** (-2.0 / 3.0))


def swa_start_epoch(start: float, max_epochs: int) -> int:
    """``swa_epoch_start`` as a (0-based) epoch index, as Lightning's StochasticWeightAveraging
    reads it: a fraction in (0, 1) of ``max_epochs`` (rounded down), or the index itself."""
    if 0 < start < 1:
        return int(start * max_epochs)
    return int(start)


class WeightAverage(WeightAveraging):
    """EMA (``decay``) or SWA (``swa_epoch_start``) of the weights; see the module."""

    def __init__(
        self,
        decay: float | None = None,
        warmup: bool = True,
        swa_epoch_start: float | None = None,
    ) -> None:
        if (decay is None) == (swa_epoch_start is None):
            raise ValueError("WeightAverage takes either decay (EMA) or swa_epoch_start (SWA)")
        self.decay = decay
        self.warmup = warmup
        self.swa_epoch_start = swa_epoch_start
        self.start_epoch = 0
        self.epoch_ending = False
        multi_avg_fn = None
        if decay is not None:

            def multi_avg_fn(averaged: list, current: list, n: torch.Tensor) -> None:
                # torch's foreach EMA over a device's tensors at once, with this update's
                # decay: one host read of n per update, not one per tensor
                get_ema_multi_avg_fn(ema_decay(decay, int(n), warmup))(averaged, current, n)

        super().__init__(multi_avg_fn=multi_avg_fn)

    @property
    def kind(self) -> str:
        return "EMA" if self.decay is not None else "SWA"

    @property
    def updates(self) -> int:
        return int(self._average_model.n_averaged) if self._average_model is not None else 0

    def setup(self, trainer, pl_module, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage != "fit":
            return
        if self.swa_epoch_start is not None:
            self.start_epoch = swa_start_epoch(self.swa_epoch_start, trainer.max_epochs)
            first, last = self.start_epoch + 1, trainer.max_epochs
            what = f"stochastic weight averaging of epochs {first}..{last}"
        else:
            what = f"an exponential moving average of the weights (decay {self.decay}"
            what += ", warmed up)" if self.warmup else ")"
        log.info("weight averaging: %s; validation, checkpoints and the test use it", what)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self.epoch_ending = trainer.is_last_batch and trainer.current_epoch >= self.start_epoch
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        """EMA: after every optimizer step. SWA: after each epoch's last step from the start
        epoch on, so that the epoch's validation already sees its weights in the average."""
        if step_idx is None:
            return False
        return self.decay is not None or self.epoch_ending

    @property
    def needs_bn_update(self) -> bool:
        """SWA's averaged weights need batch-norm statistics of their own (``update_bn``);
        an EMA's averaged statistics follow its weights closely."""
        return self.decay is None and self.updates > 0

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        if self.updates:
            self._swap_models(pl_module)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if self.updates:  # no update happens during validation: the same swap back
            self._swap_models(pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        if self.updates:
            self._copy_average_to_current(pl_module)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        if self.updates:
            super().on_save_checkpoint(trainer, pl_module, checkpoint)


def weight_average(model: Any) -> WeightAverage | None:
    """The callback for ``model.ema_decay`` / ``model.swa_epoch_start`` (checked by the
    pre-flight, medclf.pipeline.rules.check_model), or None for neither."""
    model = model or {}
    decay = model.get("ema_decay")
    start = model.get("swa_epoch_start")
    if decay is None and start is None:
        return None
    return WeightAverage(
        decay=float(decay) if decay is not None else None,
        warmup=bool(model.get("ema_warmup", True)),
        swa_epoch_start=float(start) if start is not None else None,
    )
