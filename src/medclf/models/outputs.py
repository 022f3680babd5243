"""What the network's outputs mean: class probabilities from logits, and the one decision
rule that turns probabilities into predicted classes.

Every place that decides (the test report, eval.py, predict.py, the MLflow model, the
exported ONNX/TorchScript model, Grad-CAM's target, the logged metrics) calls :func:`decide`,
so a probability equal to the threshold gets the same label everywhere: **at or above the
threshold is positive**, as a clinical cut-off is read and as scikit-learn's ``roc_curve``
defines its operating points.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

Threshold = float | Sequence[float]


def class_probabilities(
    logits: torch.Tensor, activation: str, binary: bool, temperature: float = 1.0
) -> torch.Tensor:
    """(N, K) float32 probabilities of the K class names: softmax, or a sigmoid per label; a
    binary head's single output p becomes [1 − p, p]. ``temperature`` (calibration) divides
    the logits first."""
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    probs = logits.softmax(dim=-1) if activation == "softmax" else logits.sigmoid()
    return torch.cat([1 - probs, probs], dim=1) if binary else probs


def decide(probs: torch.Tensor | np.ndarray, task: str, threshold: Threshold | torch.Tensor):
    """(N, K) booleans, True where a class is predicted, of the same kind as ``probs``.

    multiclass: the most probable class (the first one on a tie); binary: the second class
    when its probability is at least ``threshold``, else the first; multilabel: every label
    whose probability is at least ``threshold`` (one number, or one per label: thresholds
    chosen on the validation split)."""
    as_numpy = isinstance(probs, np.ndarray)
    p = torch.from_numpy(probs) if as_numpy else probs
    if not isinstance(threshold, int | float):  # per label: compared in the probabilities' dtype
        threshold = torch.as_tensor(threshold, dtype=p.dtype, device=p.device).reshape(-1)
    if task == "multilabel":
        chosen = p >= threshold
    elif task == "binary":
        positive = p[:, 1:2] >= threshold
        chosen = torch.cat([~positive, positive], dim=1)
    elif task == "multiclass":
        chosen = torch.nn.functional.one_hot(p.argmax(dim=1), p.shape[1]).bool()
    else:
        raise ValueError(f"task must be multiclass, multilabel or binary, got {task!r}")
    return chosen.numpy() if as_numpy else chosen


def predicted_labels(
    probs: torch.Tensor | np.ndarray, class_names: Sequence[str], task: str, threshold: Threshold
) -> list[str]:
    """The predicted class name per row; multi-label rows join their labels with ``;``."""
    chosen = np.asarray(decide(probs, task, threshold))
    names = np.asarray(list(class_names), dtype=object)
    return [";".join(names[row]) for row in chosen]


def metric_threshold(threshold: float) -> float:
    """The threshold to give torchmetrics, which counts ``p > threshold`` as positive, so that
    its decisions are :func:`decide`'s on float32 probabilities (the largest float32 below
    ``threshold``; torchmetrics refuses negative thresholds, so at 0 a probability of exactly
    0 is the one it counts as negative)."""
    below = np.nextafter(np.float32(threshold), np.float32(-np.inf))
    return max(float(below), 0.0)


def plain_threshold(value) -> Threshold:
    """A stored threshold as a float (one for all labels) or a list of floats (per label)."""
    if isinstance(value, int | float | str):
        return float(value)
    values = [float(v) for v in value]
    return values[0] if len(values) == 1 else values
