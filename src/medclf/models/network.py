"""The network's computation, written once: image in [0, 1] (+ metadata) → logits → class
probabilities.

:class:`ClassifierMixin` is shared by the LightningModule (training, testing, eval.py,
predict.py, Grad-CAM) and by :class:`Network`, the same layers as a plain ``nn.Module``
without Lightning, which the MLflow model runs and ONNX/TorchScript export traces (tracing a
LightningModule probes its ``trainer``, which raises outside a fit).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from medclf.models.outputs import class_probabilities


class ClassifierMixin:
    """Needs ``backbone``, ``head``, the ``mean``/``std`` buffers of the backbone's
    normalisation, ``task``, ``memory_format`` and (calibrated models) ``temperature``."""

    def logits(self, image: torch.Tensor, metadata: torch.Tensor | None = None) -> torch.Tensor:
        """Logits for images (N, C, *spatial) in [0, 1], with metadata (N, M) if the head
        has a metadata block; normalisation to the backbone's mean and std happens here."""
        return self.features_and_logits(image, metadata)[1]

    def features_and_logits(
        self, image: torch.Tensor, metadata: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The backbone's globally pooled features (N, F), what the head's first layer sees
        and the out-of-distribution gate measures, and the logits."""
        image = (image - self.mean) / self.std
        if self.memory_format is not None:
            image = image.contiguous(memory_format=self.memory_format)
        feature_map = self.backbone(image)
        dims = tuple(range(2, feature_map.ndim))
        pooled = feature_map.mean(dim=dims) if dims else feature_map
        return pooled, self.head(feature_map, metadata)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """(N, classes) float32 probabilities of the class names (a binary head's p as
        [1 − p, p])."""
        temperature = getattr(self, "temperature", 1.0)
        return class_probabilities(logits, self.head.activation, self.task == "binary", temperature)

    def predict_proba(
        self, image: torch.Tensor, metadata: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The one image → class-probabilities path of every inference use."""
        return self.probabilities(self.logits(image, metadata))


class Network(ClassifierMixin, nn.Module):
    """A trained module's layers (shared, not copied) as a plain module whose ``forward`` is
    ``predict_proba``, in float32 and the default memory layout."""

    def __init__(self, module: Any) -> None:
        super().__init__()
        self.backbone = module.backbone
        self.head = module.head
        self.register_buffer("mean", module.mean.detach().clone())
        self.register_buffer("std", module.std.detach().clone())
        self.task = module.task
        self.temperature = float(getattr(module, "temperature", 1.0))
        self.memory_format = None

    def forward(self, image: torch.Tensor, metadata: torch.Tensor | None = None) -> torch.Tensor:
        return self.predict_proba(image, metadata)
