"""AUCMEDI's classification head, layer for layer, in PyTorch.

GlobalAveragePooling → [Dense(512) + Dropout(0.3) if fcl_dropout] → [concat metadata,
Dense(512)+ReLU+Dropout(0.3), Dense(256)+ReLU+Dropout(0.3) if meta_variables]
→ Dense(n_labels). The head returns logits (for a numerically stable loss); the output
activation (softmax or sigmoid) is applied by :meth:`ClassificationHead.activate`.
"""

from __future__ import annotations

import torch
from torch import nn

from medclf.models.outputs import class_probabilities


class ClassificationHead(nn.Module):
    """Pool a 2D or 3D feature map and classify it, optionally with tabular metadata."""

    def __init__(
        self,
        in_features: int,
        n_labels: int,
        activation: str = "softmax",
        fcl_dropout: bool = True,
        meta_variables: int | None = None,
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        if activation not in ("softmax", "sigmoid"):
            raise ValueError(f"activation must be softmax or sigmoid, got {activation!r}")
        self.activation = activation
        self.meta_variables = meta_variables or None
        width = in_features
        self.fcl = nn.Identity()
        if fcl_dropout:
            self.fcl = nn.Sequential(nn.Linear(width, 512), nn.Dropout(dropout))
            width = 512
        self.meta = None
        if self.meta_variables:
            self.meta = nn.Sequential(
                nn.Linear(width + self.meta_variables, 512),
                nn.ReLU(),
                nn.Dropout(dropout),
                nn.Linear(512, 256),
                nn.ReLU(),
                nn.Dropout(dropout),
            )
            width = 256
        self.classifier = nn.Linear(width, n_labels)

    def forward(self, features: torch.Tensor, metadata: torch.Tensor | None = None) -> torch.Tensor:
        """Feature map (N, F, *spatial) [+ metadata (N, M)] → logits (N, n_labels)."""
        x = features.mean(dim=tuple(range(2, features.ndim))) if features.ndim > 2 else features
        x = self.fcl(x)
        if self.meta is not None:
            if metadata is None:
                raise ValueError(f"this head expects {self.meta_variables} metadata variables")
            x = self.meta(torch.cat([x, metadata.to(x.dtype)], dim=1))
        return self.classifier(x)

    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        """Apply the output activation (float32): softmax over classes or a sigmoid per
        output."""
        return class_probabilities(logits, self.activation, binary=False)
