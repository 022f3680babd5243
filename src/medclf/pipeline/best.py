"""The value a sweep optimises: the best ``optimized_metric`` over the run's validations.

The checkpoint callback knows it when it monitors that metric; otherwise (``val/loss``
optimised, checkpoints on ``val/f1``) :class:`BestValue` keeps it, because the test pass
replaces the trainer's metrics with the ``test/`` ones."""

from __future__ import annotations

import math

import lightning as L
from lightning.pytorch.callbacks import Callback

from medclf.search import minimizes


class BestValue(Callback):
    """The best finite value ``metric`` took after a validation (None before any)."""

    def __init__(self, metric: str) -> None:
        self.metric = metric
        self.best: float | None = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.metric)
        if trainer.sanity_checking or value is None or not math.isfinite(float(value)):
            return
        value = float(value)
        if self.best is None or (
            value < self.best if minimizes(self.metric) else value > self.best
        ):
            self.best = value


def best_value_callback(metric: str | None) -> BestValue | None:
    """The callback keeping ``optimized_metric``'s best value, None without one."""
    return BestValue(metric) if metric else None


def best_value(trainer: L.Trainer, metric: str | None) -> float | None:
    """``metric``'s best value in this run: the checkpoint callback's best score when it
    monitors ``metric``, else what :class:`BestValue` saw, else the last value logged."""
    if not metric:
        return None
    callback = trainer.checkpoint_callback
    score = getattr(callback, "best_model_score", None)
    if callback is not None and callback.monitor == metric and score is not None:
        return float(score)
    seen = next((c for c in trainer.callbacks if isinstance(c, BestValue)), None)
    if seen is not None and seen.best is not None:
        return seen.best
    value = trainer.callback_metrics.get(metric)
    return float(value) if value is not None else None
