"""Losses of the MIA classification page, each for softmax (single-label) and sigmoid
(multi-label) outputs. All take logits and either class indices (N,) or target
probabilities (N, C), and return the mean over samples of the per-sample loss, each sample
weighted by the class weight of its target (Keras/AUCMEDI ``class_weight`` semantics).

Each loss is registered under the name ``loss.name`` takes (medclf.models.registry); a new
loss is one more registered subclass of :class:`ClassificationLoss` plus its YAML in
``conf/loss/``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medclf.models.registry import LOSSES


def balanced_class_weights(labels: np.ndarray, n_classes: int) -> list[float]:
    """scikit-learn's "balanced" weights: n_samples / (n_classes * count(c)); 0 for unseen.

    ``labels`` are class indices (N,) for single-label data or a 0/1 matrix (N, C) for
    multi-label data, where each label's positives are counted.
    """
    labels = np.asarray(labels)
    counts = (
        labels.sum(axis=0) if labels.ndim == 2 else np.bincount(labels, minlength=n_classes)
    ).astype(float)
    n = float(len(labels))
    return [float(n / (n_classes * c)) if c > 0 else 0.0 for c in counts]  # plain floats:
    # they are saved in checkpoints, which load with weights_only=True


class ClassificationLoss(nn.Module):
    """Common plumbing: target encoding, label smoothing and per-class weighting.

    ``label_smoothing`` ε moves the targets towards uniform as Keras does: p(1 − ε) + ε/C
    over the C classes of a softmax, p(1 − ε) + ε/2 for each sigmoid output."""

    def __init__(
        self,
        activation: str = "softmax",
        class_weights: Sequence[float] | None = None,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        if activation not in ("softmax", "sigmoid"):
            raise ValueError(f"activation must be softmax or sigmoid, got {activation!r}")
        self.label_smoothing = float(label_smoothing)
        self.activation = activation
        weights = torch.tensor(list(class_weights), dtype=torch.float32) if class_weights else None
        self.register_buffer("class_weights", weights, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        p = self._as_distribution(target, logits)
        if self.label_smoothing:
            uniform = 1.0 / logits.shape[-1] if self.activation == "softmax" else 0.5
            p = p * (1.0 - self.label_smoothing) + self.label_smoothing * uniform
        if self.activation == "softmax":
            per_class = self.softmax_terms(logits, p)
        else:
            per_class = self.sigmoid_terms(logits, p)
        if self.class_weights is not None:
            weights = self.class_weights.to(per_class.dtype)
            if per_class.shape[1] == 1 and len(weights) == 2:  # one binary output: weight
                weights = torch.where(p > 0.5, weights[1], weights[0])  # by the true class
            per_class = per_class * weights
        per_sample = per_class.sum(dim=1) if self.activation == "softmax" else per_class.mean(1)
        return per_sample.mean()

    @staticmethod
    def _as_distribution(target: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        if target.ndim == 1:
            return F.one_hot(target.long(), logits.shape[-1]).to(logits.dtype)
        return target.to(logits.dtype)

    def softmax_terms(self, logits: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def sigmoid_terms(self, logits: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


@LOSSES.register("ce")
class CrossEntropyLoss(ClassificationLoss):
    """L = −Σ p_i log q_i (softmax); binary cross-entropy per label (sigmoid)."""

    def softmax_terms(self, logits, p):
        return -p * F.log_softmax(logits, dim=-1)

    def sigmoid_terms(self, logits, p):
        return F.binary_cross_entropy_with_logits(logits, p, reduction="none")


@LOSSES.register("focal")
class FocalLoss(ClassificationLoss):
    """L = −Σ α_i (1 − q_i)^γ p_i log q_i (Lin et al. 2017); γ = 0 is cross-entropy.

    With sigmoid outputs each label is a binary focal term −(1 − q_t)^γ log q_t, where q_t is
    the predicted probability of the true state of that label (AUCMEDI's multi-label focal
    loss). ``alpha`` (per class) multiplies the class weights.
    """

    def __init__(
        self,
        activation: str = "softmax",
        class_weights: Sequence[float] | None = None,
        gamma: float = 2.0,
        alpha: Sequence[float] | None = None,
        label_smoothing: float = 0.0,
    ) -> None:
        if alpha is not None:
            base = list(class_weights) if class_weights else [1.0] * len(alpha)
            if len(base) != len(alpha):
                raise ValueError("loss.alpha needs one value per class")
            class_weights = [a * w for a, w in zip(alpha, base, strict=True)]
        super().__init__(activation, class_weights, label_smoothing)
        self.gamma = float(gamma)

    def softmax_terms(self, logits, p):
        log_q = F.log_softmax(logits, dim=-1)
        return -((1 - log_q.exp()) ** self.gamma) * p * log_q

    def sigmoid_terms(self, logits, p):
        log_q, log_1mq = F.logsigmoid(logits), F.logsigmoid(-logits)
        log_qt = p * log_q + (1 - p) * log_1mq
        return -((1 - log_qt.exp()) ** self.gamma) * log_qt


@LOSSES.register("kl")
class KLDivergenceLoss(ClassificationLoss):
    """L = Σ p_i (log p_i − log q_i), with 0 · log 0 = 0 (softmax); per-label Bernoulli KL
    (sigmoid). Equals cross-entropy for one-hot targets; differs for soft targets."""

    def softmax_terms(self, logits, p):
        return torch.xlogy(p, p) - p * F.log_softmax(logits, dim=-1)

    def sigmoid_terms(self, logits, p):
        return (
            torch.xlogy(p, p)
            + torch.xlogy(1 - p, 1 - p)
            - p * F.logsigmoid(logits)
            - (1 - p) * F.logsigmoid(-logits)
        )


def create_loss(config: dict, activation: str) -> ClassificationLoss:
    """The loss ``config["name"]`` names, built with the config's other keys."""
    kwargs = {k: v for k, v in config.items() if k != "name"}
    return LOSSES[config["name"]](activation=activation, **kwargs)
