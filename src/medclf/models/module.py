"""The LightningModule: backbone + AUCMEDI head + loss + torchmetrics.

All constructor arguments are plain values (names, numbers, lists), saved as
hyperparameters, so a checkpoint describes its model fully and loads with
``weights_only=True``; nothing in it names a class to import.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import torch

from medclf.distributed import gather_objects
from medclf.errors import NonFiniteLossError
from medclf.models.backbones import Backbone
from medclf.models.head import ClassificationHead
from medclf.models.losses import create_loss
from medclf.models.metrics import DECIDED, RANKED, per_class_metrics, summary_metrics
from medclf.models.network import ClassifierMixin
from medclf.models.optim import create_optimizer, create_scheduler
from medclf.models.outputs import decide, plain_threshold


def memory_format(channels_last: bool, spatial_dims: int) -> torch.memory_format | None:
    """``model.channels_last``: NHWC for images, NDHWC for volumes; None keeps the default."""
    if not channels_last:
        return None
    return torch.channels_last_3d if spatial_dims == 3 else torch.channels_last


log = logging.getLogger(__name__)


class ClassificationModule(ClassifierMixin, L.LightningModule):
    """Image (N, C, *spatial) [+ metadata] → logits (``forward``); class probabilities with
    ``predict_proba`` (medclf.models.network).

    ``task`` is multiclass (softmax), multilabel (sigmoid per label) or binary (one sigmoid
    output for the second class)."""

    def __init__(
        self,
        class_names: list[str],
        in_chans: int,
        backbone: dict[str, Any],
        head: dict[str, Any],
        loss: dict[str, Any],
        optimizer: dict[str, Any],
        scheduler: dict[str, Any] | None = None,
        task: str = "multiclass",
        threshold: float | list[float] = 0.5,
        temperature: float = 1.0,
        conformal: dict[str, Any] | None = None,
        ood: dict[str, Any] | None = None,
        image_size: Any = None,
        spatial_dims: int = 2,
        metadata: list[dict[str, Any]] | None = None,
        volume_size: list[int] | None = None,
        dicom_window: Any = None,
        channels_last: bool = False,
        compile: bool = False,
        nonfinite_loss: str = "stop",
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)
        self.nonfinite_loss = nonfinite_loss
        self.skipped_steps = 0
        # (epoch, batch, global step) of the first non-finite loss, kept on the device
        self.register_buffer("first_nonfinite", torch.full((3,), -1), persistent=False)
        self.class_names = list(class_names)
        self.task = task
        n_classes = len(self.class_names)
        backbone = dict(backbone)
        self.freeze_epochs = int(backbone.pop("freeze_epochs", 0) or 0)
        self.finetune_lr = backbone.pop("finetune_lr", None)
        self.backbone = Backbone(in_chans=in_chans, **backbone)
        mean, std = self.backbone.normalization(in_chans)
        shape = (1, -1) + (1,) * spatial_dims
        self.register_buffer("mean", torch.tensor(mean).view(shape), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(shape), persistent=False)
        n_outputs = 1 if task == "binary" else n_classes
        self.head = ClassificationHead(self.backbone.num_features, n_outputs, **head)
        self.criterion = create_loss(dict(loss), self.head.activation)
        self.register_buffer("decision_threshold", torch.zeros(1), persistent=False)
        self.set_decision(threshold, temperature, conformal, ood)
        # The decision metrics take the decisions (medclf.models.outputs.decide, as 0/1), so
        # one threshold per label works as one for all; AUROC takes the probabilities.
        decided = summary_metrics(task, n_classes, DECIDED)
        ranked = summary_metrics(task, n_classes, RANKED)
        # updated every training step with the head's own outputs: no input checks (each
        # would wait for the GPU)
        self.train_metrics = summary_metrics(
            task, n_classes, ("accuracy", "f1"), validate_args=False
        )
        self.train_metrics.prefix = "train/"
        self.val_metrics = decided.clone(prefix="val/")
        self.val_ranked = ranked.clone(prefix="val/")
        self.test_metrics = decided.clone(prefix="test/")
        self.test_ranked = ranked.clone(prefix="test/")
        self.test_per_class = per_class_metrics(task, n_classes)
        self.test_outputs: list[dict[str, torch.Tensor]] = []
        self.test_predictions: dict[str, torch.Tensor] | None = None
        self.memory_format = memory_format(channels_last, spatial_dims)
        if self.memory_format is not None:
            self.to(memory_format=self.memory_format)
        if compile:
            self.compile()  # in place: the state dict keeps its keys (no ``_orig_mod.``)

    def set_decision(
        self,
        threshold: float | list[float] | None = None,
        temperature: float | None = None,
        conformal: dict[str, Any] | None = None,
        ood: dict[str, Any] | None = None,
    ) -> None:
        """The decision threshold(s), the calibration temperature, the conformal prediction
        sets' state (medclf.evaluation.conformal) and the out-of-distribution gate's
        (medclf.audit.ood), kept in the hyperparameters (so checkpoints carry them) and used
        by every later step."""
        if threshold is not None:
            self.hparams.threshold = plain_threshold(threshold)
            values = torch.tensor(self.hparams.threshold, dtype=torch.float32).reshape(-1)
            self.decision_threshold = values.to(self.decision_threshold.device)
        if temperature is not None:
            self.hparams.temperature = self.temperature = float(temperature)
        if conformal is not None:
            self.hparams.conformal = dict(conformal)
        if ood is not None:
            self.hparams.ood = dict(ood)

    @property
    def ood(self) -> dict[str, Any] | None:
        """The fitted out-of-distribution gate (None: no gate)."""
        return self.hparams.get("ood")

    @property
    def conformal(self) -> dict[str, Any] | None:
        """The fitted conformal state (None: no prediction sets)."""
        return self.hparams.get("conformal")

    @property
    def threshold(self) -> float | list[float]:
        return self.hparams.threshold

    def forward(self, image: torch.Tensor, metadata: torch.Tensor | None = None) -> torch.Tensor:
        """Logits for images (N, C, *spatial) in [0, 1], with metadata (N, M) if the head
        has a metadata block."""
        return self.logits(image, metadata)

    def model_step(self, batch: dict) -> tuple[torch.Tensor, ...]:
        """Loss, class probabilities (detached), targets and logits of a batch. Loss and
        probabilities are float32 also under mixed precision (bf16 probabilities do not sum
        to 1). The loss takes ``soft_target`` where mixup/CutMix made one
        (medclf.pipeline.mixing); the metrics take the samples' own labels."""
        return self._step(batch, self(batch["image"], batch.get("metadata")))

    def _step(self, batch: dict, logits: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits = logits.float()
        target = batch["target"]
        loss_target = target.float()[:, None] if self.task == "binary" else target
        loss_target = batch.get("soft_target", loss_target)
        loss = self.criterion(logits, loss_target)
        return loss, self.probabilities(logits).detach(), target, logits

    def _scored(self, probs: torch.Tensor) -> torch.Tensor:
        """What the summary metrics take: p for binary, the probability matrix otherwise."""
        return probs[:, 1] if self.task == "binary" else probs

    def _chosen(self, probs: torch.Tensor) -> torch.Tensor:
        """The decisions as 0/1 floats (N, K)."""
        return decide(probs, self.task, self.decision_threshold).float()

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor | None:
        loss, probs, target, _ = self.model_step(batch)
        if self._nonfinite(loss, batch_idx):
            return None  # no backward: the optimizer step finds no gradients and changes nothing
        self.train_metrics.update(self._scored(self._chosen(probs)), target.long())
        bs = len(target)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=bs)
        return loss

    def _nonfinite(self, loss: torch.Tensor, batch_idx: int) -> bool:
        """``nonfinite_loss=skip``: True for a NaN/inf loss (its batch is skipped; one host
        read per step). ``stop``: the first such step is noted on the device and checked on
        the host every step on CPU, every 25 steps and at epoch end on a GPU (no wait for the
        GPU in between); then NonFiniteLossError."""
        finite = torch.isfinite(loss.detach())
        if self.nonfinite_loss == "skip":
            if bool(finite):
                return False
            self.skipped_steps += 1
            if self.skipped_steps <= 5:
                log.warning(
                    "non-finite loss (%s) at epoch %d, step %d: batch skipped (%d so far)",
                    float(loss),
                    self.current_epoch,
                    batch_idx,
                    self.skipped_steps,
                )
            return True
        mark = torch.tensor(
            [self.current_epoch, batch_idx, self.global_step], device=self.first_nonfinite.device
        )
        first = self.first_nonfinite
        self.first_nonfinite = torch.where(~finite & (first[0] < 0), mark, first)
        if loss.device.type == "cpu" or batch_idx % 25 == 0:
            self._raise_if_nonfinite()
        return False

    def _raise_if_nonfinite(self) -> None:
        epoch, batch, step = (int(v) for v in self.first_nonfinite.tolist())
        if epoch < 0:
            return
        raise NonFiniteLossError(
            f"the training loss became NaN or infinite at epoch {epoch}, batch {batch} "
            f"(global step {step}). Lower optimizer.lr, check the inputs for NaN/inf "
            "values, or set nonfinite_loss=skip to skip such batches. The last checkpoint "
            "holds the last finished epoch."
        )

    def on_train_epoch_end(self) -> None:
        self._raise_if_nonfinite()
        # computed once per epoch (synchronised across DDP ranks by torchmetrics) rather than
        # handed to ``self.log`` every step, where Lightning moves each Metric object to the
        # device again: about 1 ms of host time per metric and step
        self.log_dict(self.train_metrics.compute())
        self.train_metrics.reset()

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        loss, probs, target, _ = self.model_step(batch)
        self.val_metrics.update(self._scored(self._chosen(probs)), target.long())
        self.val_ranked.update(self._scored(probs), target.long())
        bs = len(target)
        self.log("val/loss", loss, on_epoch=True, prog_bar=True, batch_size=bs, sync_dist=True)
        self.log_dict(self.val_metrics, on_epoch=True, batch_size=bs)
        self.log_dict(self.val_ranked, on_epoch=True, batch_size=bs)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        features = None
        if (self.ood or {}).get("method") == "mahalanobis":  # what the gate measures
            features, logits = self.features_and_logits(batch["image"], batch.get("metadata"))
            loss, probs, target, logits = self._step(batch, logits)
        else:
            loss, probs, target, logits = self.model_step(batch)
        chosen = self._chosen(probs)
        self.test_metrics.update(self._scored(chosen), target.long())
        self.test_ranked.update(self._scored(probs), target.long())
        self.test_per_class.update(chosen, target.long())
        bs = len(target)
        self.log("test/loss", loss, on_epoch=True, batch_size=bs, sync_dist=True)
        self.log_dict(self.test_metrics, on_epoch=True, batch_size=bs)
        self.log_dict(self.test_ranked, on_epoch=True, batch_size=bs)
        outputs = {"index": batch["index"], "target": target, "probs": probs}
        outputs["logits"] = logits.detach()
        if features is not None:
            outputs["features"] = features.detach().float()
        self.test_outputs.append(outputs)

    def on_test_epoch_start(self) -> None:
        self.test_outputs.clear()

    def on_test_epoch_end(self) -> None:
        for name, values in self.test_per_class.compute().items():
            for class_name, value in zip(self.class_names, values, strict=True):
                self.log(f"test/{name}_{class_name}", value)
        self.test_per_class.reset()
        keys = ("index", "target", "probs", "logits")
        if self.test_outputs and "features" in self.test_outputs[0]:
            keys += ("features",)
        local = {k: torch.cat([o[k] for o in self.test_outputs]).cpu() for k in keys}
        parts = [p for p in gather_objects(local if self.test_outputs else None) if p]
        self.test_outputs.clear()
        if not parts:
            self.test_predictions = None
            return
        merged = {k: torch.cat([p[k] for p in parts]) for k in keys}  # every rank's share
        order = torch.argsort(merged["index"])
        self.test_predictions = {k: v[order] for k, v in merged.items()}

    @property
    def backbone_frozen(self) -> bool:
        return not any(p.requires_grad for p in self.backbone.parameters())

    def on_train_epoch_start(self) -> None:
        """Two-phase transfer learning: a frozen backbone for ``freeze_epochs`` epochs, then
        all layers at ``finetune_lr`` (also right after resuming from either phase)."""
        if not self.freeze_epochs:
            return
        if self.current_epoch < self.freeze_epochs:
            self.backbone.requires_grad_(False)
            self.backbone.eval()  # batch-norm statistics stay as they are, as Keras does
        elif self.backbone_frozen or self.current_epoch == self.freeze_epochs:
            self.backbone.requires_grad_(True)
            self.backbone.train()
            lr = self.finetune_lr if self.finetune_lr is not None else self.hparams.optimizer["lr"]
            for optimizer in self.trainer.optimizers:
                for group in optimizer.param_groups:
                    group["lr"] = group["initial_lr"] = float(lr)
            for config in self.trainer.lr_scheduler_configs:
                config.scheduler.base_lrs = [float(lr)] * len(config.scheduler.base_lrs)
            log.info("epoch %d: backbone unfrozen, learning rate %g", self.current_epoch, lr)

    def configure_optimizers(self) -> Any:
        optimizer = create_optimizer(self.parameters(), dict(self.hparams.optimizer))
        return create_scheduler(optimizer, self.hparams.scheduler)
