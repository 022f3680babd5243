"""Mixup and CutMix (``augment.mixup``, ``augment.cutmix``): timm's ``Mixup`` on each training
batch, on the device, with soft targets for the loss.

timm blends each image with the batch's mirror image (``x.flip(0)``) and the one-hot (or,
for multi-label and binary tasks, the dense) targets with the same weight λ ~ Beta(α, α);
CutMix pastes a box of the mirror image instead, λ being the area kept. The soft targets go
to the loss as ``batch["soft_target"]`` (every medclf loss takes distributions); the
training metrics keep the samples' own labels. Label smoothing stays the loss's
(``loss.label_smoothing``). An odd batch's last sample is left unmixed (timm mixes pairs).
Metadata is not mixed. Each batch's draws are seeded by (seed, epoch, batch): a resumed run
mixes as the uninterrupted one did.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from medclf.data.sampling import derived_seed

log = logging.getLogger("medclf.train")


class MixupCutmix(Callback):
    """Mixup (α ``mixup``) and/or CutMix (α ``cutmix``) with probability ``prob`` per batch;
    with both, CutMix is chosen with ``switch_prob``."""

    def __init__(
        self,
        mixup: float = 0.0,
        cutmix: float = 0.0,
        prob: float = 1.0,
        switch_prob: float = 0.5,
        seed: int = 0,
    ) -> None:
        self.mixup, self.cutmix = float(mixup), float(cutmix)
        self.prob, self.switch_prob = float(prob), float(switch_prob)
        self.seed = int(seed)
        self.mixer = None
        self.task = "multiclass"

    def setup(self, trainer, pl_module, stage: str) -> None:
        from timm.data import Mixup

        if stage != "fit":
            return
        self.task = pl_module.task
        n_outputs = 1 if self.task == "binary" else len(pl_module.class_names)
        self.mixer = Mixup(
            mixup_alpha=self.mixup,
            cutmix_alpha=self.cutmix,
            prob=self.prob,
            switch_prob=self.switch_prob,
            mode="batch",
            label_smoothing=0.0,
            num_classes=n_outputs,
            multi_label=True,  # dense targets for every task: one-hot ones for multiclass
        )
        what = " and ".join(
            f"{name} (alpha {alpha})"
            for name, alpha in (("mixup", self.mixup), ("cutmix", self.cutmix))
            if alpha
        )
        log.info("training batches mixed: %s, probability %g per batch", what, self.prob)

    def on_train_batch_start(self, trainer, pl_module, batch: dict, batch_idx: int) -> None:
        if self.mixer is None:
            return
        image, target = batch["image"], batch["target"]
        if self.task == "multiclass":
            dense = torch.nn.functional.one_hot(target.long(), self.mixer.num_classes).float()
        else:
            dense = target.float().reshape(len(target), -1)  # binary: (N, 1)
        paired = len(image) - len(image) % 2
        if paired < 2:
            batch["soft_target"] = dense
            return
        if not image.is_floating_point():
            image = batch["image"] = image.float()
        state = np.random.get_state()  # timm draws from NumPy's global generator
        np.random.seed(derived_seed(self.seed, trainer.current_epoch, batch_idx))
        try:
            _, mixed = self.mixer(image[:paired], dense[:paired])  # the images in place
        finally:
            np.random.set_state(state)
        batch["soft_target"] = torch.cat([mixed.to(dense.dtype), dense[paired:]])


def mixing(augment: Any, seed: int) -> MixupCutmix | None:
    """The callback for ``augment.mixup`` / ``augment.cutmix`` (checked by the pre-flight,
    medclf.pipeline.rules.check_augment), or None when both are 0."""
    augment_cfg = augment or {}
    mixup, cutmix = augment_cfg.get("mixup") or 0.0, augment_cfg.get("cutmix") or 0.0
    if not mixup and not cutmix:
        return None
    return MixupCutmix(
        mixup=float(mixup),
        cutmix=float(cutmix),
        prob=float(augment_cfg.get("mix_prob", 1.0)),
        switch_prob=float(augment_cfg.get("mix_switch_prob", 0.5)),
        seed=seed,
    )
