"""Batch-norm statistics that are right whenever the model is evaluated.

Batch norm normalises with running averages in evaluation mode; with the default momentum
(0.1) the initial statistics (mean 0, variance 1) still weigh 21 % after 15 steps and 1 %
only after 44. A small data set with a large batch (160 volumes, batch 32, 3 epochs: 15
steps) is then evaluated with statistics that fit no layer's inputs: a model that learned
tests at chance. :class:`BatchNormRecalibration` re-estimates them before each validation
and test, as ``torch.optim.swa_utils.update_bn`` does: running averages reset, then a
cumulative average over training batches without augmentation and without gradients, the
rest of the network in evaluation mode (no dropout). Each DDP rank uses its share of the
batches and the ranks average their statistics, so all hold the same. A frozen backbone's
layers (``backbone.freeze_epochs``) keep their frozen statistics.

``model.bn_recalibration``: ``auto`` (while the run has taken fewer steps than the running
averages need to forget their start), ``always`` or ``never``.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn

from medclf.distributed import initialized

log = logging.getLogger("medclf.train")

BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
MODES = ("auto", "always", "never")
MAX_BATCHES = 20  # model.bn_recalibration_batches' default


def batch_norms(module: nn.Module, skip: nn.Module | None = None) -> list[nn.Module]:
    """The batch-norm layers with running statistics, except those inside ``skip``."""
    skipped = {id(m) for m in skip.modules()} if skip is not None else set()
    return [
        m
        for m in module.modules()
        if isinstance(m, BATCH_NORMS) and m.track_running_stats and id(m) not in skipped
    ]


def steps_needed(layers: list[nn.Module], weight: float = 0.01) -> int:
    """Training steps until the initial statistics weigh less than ``weight`` in the running
    averages (44 for momentum 0.1); 0 for cumulative averages (momentum None)."""
    momenta = [m.momentum for m in layers if m.momentum]
    if not momenta:
        return 0
    return math.ceil(math.log(weight) / math.log(1.0 - min(momenta)))


@torch.no_grad()
def recalibrate(model, loader, layers: list[nn.Module], max_batches: int) -> int:
    """Re-estimate ``layers``' running statistics on up to ``max_batches`` of ``loader``
    (cumulative average; DDP ranks average theirs); returns the batches used."""
    saved = [(m, m.momentum, m.training) for m in layers]
    was_training = model.training
    model.eval()
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # a cumulative average over the batches
        layer.train()
    used = 0
    try:
        for batch in loader:
            if used >= max_batches:
                break
            image = batch["image"].to(model.device)
            metadata = batch.get("metadata")
            model(image, metadata.to(model.device) if metadata is not None else None)
            used += 1
    finally:
        for layer, momentum, training in saved:
            layer.momentum = momentum
            layer.train(training)
        model.train(was_training)
    if initialized():
        world = torch.distributed.get_world_size()
        for layer in layers:
            for buffer in (layer.running_mean, layer.running_var):
                torch.distributed.all_reduce(buffer)
                buffer.div_(world)
    return used


class BatchNormRecalibration(Callback):
    """Recalibrate the batch-norm statistics before validation and test (see the module)."""

    def __init__(self, mode: str = "auto", max_batches: int = MAX_BATCHES, averaging=None) -> None:
        self.mode = mode
        self.max_batches = int(max_batches)
        # medclf.pipeline.averaging.WeightAverage: SWA weights get statistics of their own
        self.averaging = averaging
        self.seconds = 0.0
        self.count = 0
        self.fitting = False  # a test of a checkpoint without training keeps its statistics

    def _layers(self, pl_module) -> list[nn.Module]:
        frozen = getattr(pl_module, "backbone_frozen", False)
        return batch_norms(pl_module, skip=pl_module.backbone if frozen else None)

    def _due(self, trainer: L.Trainer, layers: list[nn.Module]) -> bool:
        if self.mode == "never" or not layers:
            return False
        if self.averaging is not None and self.averaging.needs_bn_update:
            return True
        return self.mode == "always" or trainer.global_step < steps_needed(layers)

    def _run(self, trainer: L.Trainer, pl_module, when: str) -> None:
        layers = self._layers(pl_module)
        if not self._due(trainer, layers):
            return
        start = time.perf_counter()
        epoch = trainer.num_training_batches  # an epoch's batches (limit_train_batches)
        limit = min(self.max_batches, int(epoch) if math.isfinite(epoch) else self.max_batches)
        used = recalibrate(pl_module, trainer.datamodule.recalibration_loader(), layers, limit)
        seconds = time.perf_counter() - start
        self.seconds += seconds
        self.count += 1
        if trainer.is_global_zero:
            log.info(
                "batch norm: %d layers' statistics re-estimated on %d training batches before "
                "%s (step %d of the %d their running averages need): %.2f s",
                len(layers),
                used,
                when,
                trainer.global_step,
                steps_needed(layers),
                seconds,
            )
            for logger in trainer.loggers:
                logger.log_metrics({"time/bn_recalibration_s": seconds}, step=trainer.global_step)

    def setup(self, trainer: L.Trainer, pl_module, stage: str) -> None:
        if self.averaging is None:  # the run's weight averaging, whose SWA weights need it
            from medclf.pipeline.averaging import WeightAverage

            found = [c for c in trainer.callbacks if isinstance(c, WeightAverage)]
            self.averaging = found[0] if found else None

    def on_fit_start(self, trainer: L.Trainer, pl_module) -> None:
        self.fitting = True

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module) -> None:
        # after weight averaging's own hook (built before this callback) has swapped the
        # averaged weights in: the statistics are those of the weights validated
        if not trainer.sanity_checking:
            self._run(trainer, pl_module, "validation")

    def on_test_start(self, trainer: L.Trainer, pl_module) -> None:
        if self.fitting:
            self._run(trainer, pl_module, "the test")


def recalibration(model: Any) -> BatchNormRecalibration | None:
    """The callback for ``model.bn_recalibration`` (checked by the pre-flight), None for
    ``never``."""
    model = model or {}
    mode = model.get("bn_recalibration", "auto")
    if mode == "never":
        return None
    return BatchNormRecalibration(mode, int(model.get("bn_recalibration_batches", MAX_BATCHES)))
