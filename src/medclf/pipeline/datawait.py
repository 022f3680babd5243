"""How long training waited for its data: ``time/data_wait_fraction`` per epoch, the share
of the training loop's time spent between one step's end and the next step's start (getting
the next batch from the loader, moving it to the device; the epoch's first wait includes
starting the loader workers), against the steps themselves. On a GPU the steps are timed on
the host, so the fraction is the time the host, and soon the GPU, had nothing to run.

When it stays above ``threshold`` (two epochs in a row, or the whole of a shorter run) over
at least :data:`MIN_STEPS` steps (fewer say more about the first batch and the machine's
load than about the loader), the log says so once, with what to change: loader workers,
the decoded cache, pinned memory; with ``datamodule.on_device`` the wait is the batch's
augmentation on the device, and the advice says so.
"""

from __future__ import annotations

import logging
import os
import time

import lightning as L

log = logging.getLogger("medclf.train")

METRIC = "time/data_wait_fraction"
MIN_STEPS = 20


class DataWait(L.Callback):
    """Logs :data:`METRIC` at each training epoch's end; warns when it stays high."""

    def __init__(self, threshold: float = 0.1) -> None:
        self.threshold = threshold
        self.fractions: list[float] = []
        self.steps: list[int] = []  # per epoch
        self.warned = False
        self.wait = self.busy = 0.0
        self.count = 0  # steps this epoch
        self.mark = time.perf_counter()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.wait = self.busy = 0.0
        self.count = 0
        self.mark = time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        now = time.perf_counter()
        self.wait += now - self.mark
        self.mark = now

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        self.busy += now - self.mark
        self.mark = now
        self.count += 1

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.busy + self.wait <= 0:
            return
        fraction = self.wait / (self.wait + self.busy)
        self.fractions.append(fraction)
        self.steps.append(self.count)
        pl_module.log(METRIC, fraction, on_epoch=True, sync_dist=True)
        if (
            len(self.fractions) >= 2
            and min(self.fractions[-2:]) > self.threshold
            and sum(self.steps[-2:]) >= MIN_STEPS
        ):
            self._warn(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.fractions and min(self.fractions) > self.threshold and sum(self.steps) >= MIN_STEPS:
            self._warn(trainer)

    def _warn(self, trainer: L.Trainer) -> None:
        if self.warned or not trainer.is_global_zero:
            return
        self.warned = True
        log.warning(
            "training waited for its data %.0f%% of the time (%s, epoch %d; above %.0f%%). %s",
            100 * self.fractions[-1],
            METRIC,
            len(self.fractions) - 1,
            100 * self.threshold,
            advice(trainer),
        )


def advice(trainer: L.Trainer) -> str:
    """What would make the loader keep up, from the datamodule's settings."""
    data = trainer.datamodule
    if data is None:
        return "Use more loader workers (num_workers)."
    if getattr(data, "on_device", False):
        return (
            "The images are on the device already (datamodule.on_device=true): the wait is "
            "gathering and augmenting each batch there. Try a lighter augmentation "
            "(augment=mild or none, or fewer transforms in augment.device) or a larger "
            "datamodule.batch_size."
        )
    tips = []
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    workers = data.workers() if hasattr(data, "workers") else None
    if workers is not None and workers < (cores or 1):
        tips.append(
            f"more loader workers (datamodule.num_workers={workers}; this machine has {cores} "
            "cores)"
        )
    mode = (getattr(data, "cache_stats", None) or {}).get("mode", "none")
    if mode == "none":
        tips.append("the decoded cache (datamodule.cache=auto or disk: each image decoded once)")
    on_gpu = trainer.accelerator.__class__.__name__ != "CPUAccelerator"
    if on_gpu and not getattr(data, "pin_memory", True):
        tips.append("page-locked batches (datamodule.pin_memory=true)")
    if workers and not getattr(data, "persistent_workers", True):
        tips.append("workers kept between epochs (datamodule.persistent_workers=true)")
    if not tips:
        tips.append(
            "a lighter augmentation (augment=mild or none) or, for small images, "
            "datamodule.cache=memory with datamodule.on_device=true"
        )
    return "Try " + "; ".join(tips) + "."
