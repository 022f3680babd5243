"""Calibration of a classifier's probabilities: expected calibration error, Brier score,
calibration intercept and slope, reliability diagrams and temperature scaling (Guo et al.
2017).

Conventions, as in the rest of the evaluation layer: ``task`` is "multiclass", "binary" or
"multilabel"; ``targets`` are class indices (N,) or, multi-label, a 0/1 matrix (N, K);
``probs`` are (N, K) probabilities, binary ones ``[1 - p, p]``; ``logits`` are the network's
raw outputs, (N, K) or, binary, (N, 1) for its single sigmoid output.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from medclf.errors import DataError  # noqa: E402

TASKS = ("multiclass", "binary", "multilabel")


def _as_numpy(values) -> np.ndarray:
    """A numpy copy of a tensor (any device) or array-like."""
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")


def _prepare(probs, targets, task: str) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and targets as float64/int arrays, checked against the task's shapes."""
    _check_task(task)
    probs = _as_numpy(probs).astype(np.float64)
    targets = _as_numpy(targets)
    if len(probs) == 0:
        raise DataError("calibration needs at least one sample, got none")
    if len(probs) != len(targets):
        raise DataError(f"probs have {len(probs)} rows but targets {len(targets)}")
    if not np.all((probs >= 0) & (probs <= 1)):
        raise DataError("probs must lie in [0, 1]; pass probabilities, not logits")
    if task == "multilabel" and probs.shape != targets.shape:
        raise DataError(f"multi-label probs {probs.shape} and targets {targets.shape} differ")
    return probs, targets.astype(np.int64)


def _positive(probs: np.ndarray) -> np.ndarray:
    """Probability of the positive class: column 1 of (N, 2), or a 1-D array as it is."""
    return probs[:, 1] if probs.ndim == 2 else probs


def _curves(probs: np.ndarray, targets: np.ndarray, task: str) -> list[tuple]:
    """(confidence, outcome) pairs whose binning gives the ECE: the top-label confidence and
    whether it was right (multiclass), the positive probability and label (binary), or one
    such pair per label (multilabel)."""
    if task == "multiclass":
        return [(probs.max(axis=1), (probs.argmax(axis=1) == targets).astype(np.float64))]
    if task == "binary":
        return [(_positive(probs), targets.astype(np.float64))]
    return [(probs[:, k], targets[:, k].astype(np.float64)) for k in range(probs.shape[1])]


def _bin_stats(
    confidence: np.ndarray, outcome: np.ndarray, bins: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean confidence, mean outcome and count per bin of ``bins`` equal-width bins of [0, 1].

    Binned as torchmetrics does: left-closed bins, and a confidence of exactly 1 in a bin of
    its own (bins + 1 slots), so the ECE equals its CalibrationError.
    """
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.searchsorted(edges, confidence, side="right") - 1
    count = np.bincount(index, minlength=bins + 1).astype(np.float64)
    total_conf = np.bincount(index, weights=confidence, minlength=bins + 1)
    total_outcome = np.bincount(index, weights=outcome, minlength=bins + 1)
    nonzero = np.maximum(count, 1.0)
    return total_conf / nonzero, total_outcome / nonzero, count


def _ece(confidence: np.ndarray, outcome: np.ndarray, bins: int) -> float:
    """Σ_bins (count / N) · |mean outcome − mean confidence| (the L1 calibration error)."""
    conf, acc, count = _bin_stats(confidence, outcome, bins)
    return float(np.sum(np.abs(acc - conf) * count) / count.sum())


def expected_calibration_error(
    probs,
    targets,
    task: str,
    bins: int = 15,
    average: Literal["none", "macro"] = "none",
) -> float | dict[int, float]:
    """Expected calibration error (L1, equal-width bins), as torchmetrics' CalibrationError.

    Multiclass: of the top-label confidence; binary: of the positive probability; multilabel:
    each label as a binary problem, returned as {label index: ECE}, or their mean when
    ``average="macro"``.
    """
    probs, targets = _prepare(probs, targets, task)
    values = [_ece(conf, outcome, bins) for conf, outcome in _curves(probs, targets, task)]
    if task != "multilabel":
        return values[0]
    if average == "macro":
        return float(np.mean(values))
    return dict(enumerate(values))


def brier_score(
    probs, targets, task: str, average: Literal["none", "macro"] = "none"
) -> float | dict[int, float]:
    """Brier score: mean squared distance between probabilities and outcomes (lower is better).

    Binary: mean (p − y)² of the positive probability (sklearn's brier_score_loss).
    Multiclass: mean over samples of Σ_k (p_k − onehot_k)², from 0 to 2 (with two classes
    twice the binary value). Multilabel: the binary score of each label, as {label index:
    score}, or their mean when ``average="macro"``.
    """
    probs, targets = _prepare(probs, targets, task)
    if task == "binary":
        return float(np.mean((_positive(probs) - targets) ** 2))
    if task == "multiclass":
        onehot = np.eye(probs.shape[1])[targets]
        return float(np.mean(np.sum((probs - onehot) ** 2, axis=1)))
    per_label = np.mean((probs - targets) ** 2, axis=0)
    if average == "macro":
        return float(per_label.mean())
    return {k: float(v) for k, v in enumerate(per_label)}


class Recalibration(NamedTuple):
    """Logistic recalibration of predicted probabilities: 0 and 1 when calibrated."""

    intercept: float
    slope: float


LOGIT_CLIP = 1e-7


def _logistic(design: np.ndarray, outcome: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """Maximum-likelihood coefficients of logit P(y=1) = design @ beta + offset by Newton's
    method; NaN when it does not converge (outcomes of one kind, perfect separation)."""
    beta = np.zeros(design.shape[1])
    for _ in range(100):
        eta = np.clip(design @ beta + offset, -500, 500)
        p = 1 / (1 + np.exp(-eta))
        hessian = design.T @ (design * (p * (1 - p))[:, None])
        try:
            step = np.linalg.solve(hessian, design.T @ (outcome - p))
        except np.linalg.LinAlgError:
            break
        beta = beta + step
        if not np.all(np.isfinite(beta)) or np.abs(beta).max() > 1e6:
            break
        if np.abs(step).max() < 1e-10:
            return beta
    return np.full(design.shape[1], np.nan)


def _recalibrate(confidence: np.ndarray, outcome: np.ndarray) -> Recalibration:
    """Intercept with the logit as offset (slope fixed at 1), and the slope of the logit in
    a logistic regression with its own intercept (Van Calster et al. 2016)."""
    p = np.clip(confidence, LOGIT_CLIP, 1 - LOGIT_CLIP)
    logit = np.log(p) - np.log1p(-p)
    ones = np.ones((len(logit), 1))
    intercept = _logistic(ones, outcome, logit)[0]
    slope = _logistic(np.column_stack([ones, logit]), outcome, np.zeros_like(logit))[1]
    return Recalibration(float(intercept), float(slope))


def calibration_intercept_slope(
    probs, targets, task: str, average: Literal["none", "macro"] = "none"
) -> Recalibration | dict[int, Recalibration]:
    """Calibration intercept and slope (Van Calster et al. 2016, J Clin Epidemiol 74:167):
    intercept ``a`` of logit P(y=1) = a + logit(p) (the logit as offset; > 0 when risks are
    underestimated on average), slope ``b`` of logit P(y=1) = a' + b · logit(p) (< 1 when
    predictions are too extreme, as after overfitting). Ideal: 0 and 1.

    Of the same (probability, outcome) pairs as the ECE: the top-label confidence and whether
    it was right (multiclass), the positive probability (binary), each label (multilabel:
    {label index: values}, or their means with ``average="macro"``). Probabilities are
    clipped to [1e-7, 1 − 1e-7] before the logit; NaN where the fit does not converge
    (outcomes of one kind, perfect separation).
    """
    probs, targets = _prepare(probs, targets, task)
    values = [_recalibrate(conf, outcome) for conf, outcome in _curves(probs, targets, task)]
    if task != "multilabel":
        return values[0]
    if average == "macro":
        return Recalibration(*np.mean(np.asarray(values, dtype=float), axis=0).tolist())
    return dict(enumerate(values))


def _draw_reliability(
    ax: plt.Axes, curves: list[tuple[str, np.ndarray, np.ndarray]], bins: int
) -> list[float]:
    """Plot accuracy against mean confidence per non-empty bin for each (label, confidence,
    outcome) curve, with the diagonal of perfect calibration; returns each curve's ECE."""
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="perfectly calibrated")
    eces = []
    for label, confidence, outcome in curves:
        conf, acc, count = _bin_stats(confidence, outcome, bins)
        filled = count > 0
        ece = _ece(confidence, outcome, bins)
        eces.append(ece)
        name = f"{label} (ECE {ece:.3f})" if label else f"ECE {ece:.3f}"
        ax.plot(conf[filled], acc[filled], marker="o", markersize=3, label=name)
    ax.set(xlim=(0, 1), ylim=(0, 1.02))
    ax.set_aspect("equal")
    return eces


def _title(eces: list[float]) -> str:
    if len(eces) == 1:
        return f"ECE {eces[0]:.3f}"
    return f"ECE {eces[0]:.3f} → {eces[1]:.3f}"


def reliability_diagram(
    probs,
    targets,
    task: str,
    class_names: Sequence[str],
    bins: int = 15,
    after=None,
) -> plt.Figure:
    """Reliability diagram: observed accuracy per confidence bin against the confidence, with
    the diagonal of a calibrated model and the ECE in the title.

    ``after``: calibrated probabilities of the same samples, drawn on the same axes ("before"
    and "after", each with its ECE). Multiclass plots the top-label confidence, binary the
    positive class; multilabel draws one small panel per label.
    """
    probs, targets = _prepare(probs, targets, task)
    versions = [("", probs)]
    if after is not None:
        versions = [("before", probs), ("after", _prepare(after, targets, task)[0])]
    per_version = [(label, _curves(p, targets, task)) for label, p in versions]

    def panel(k: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
        return [(label, *curves[k]) for label, curves in per_version]

    if task != "multilabel":
        fig, ax = plt.subplots(figsize=(5, 5))
        eces = _draw_reliability(ax, panel(0), bins)
        if task == "binary":
            xlabel, ylabel = f"predicted probability of {class_names[-1]}", "fraction positive"
        else:
            xlabel, ylabel = "confidence (top-label probability)", "accuracy"
        ax.set(xlabel=xlabel, ylabel=ylabel, title=f"Reliability diagram ({_title(eces)})")
        ax.legend(fontsize=8, loc="upper left")
        fig.tight_layout()
        return fig
    n = len(class_names)
    if n != probs.shape[1]:
        raise DataError(f"{n} class names for {probs.shape[1]} multi-label probability columns")
    cols = min(n, 4)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3 * rows), squeeze=False)
    for k, (ax, name) in enumerate(zip(axes.flat, class_names, strict=False)):
        eces = _draw_reliability(ax, panel(k), bins)
        ax.set(xlabel="predicted probability", ylabel="fraction positive")
        ax.set_title(f"{name} ({_title(eces)})", fontsize=9)
        if len(versions) > 1:
            ax.legend(fontsize=6, loc="upper left")
    for ax in axes.flat[n:]:
        ax.remove()
    fig.suptitle("Reliability diagram per label")
    fig.tight_layout()
    return fig


def _prepare_logits(logits, targets, task: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and targets as float64/int CPU tensors that autograd may use, shapes checked."""
    _check_task(task)
    logits = torch.as_tensor(_as_numpy(logits), dtype=torch.float64).clone()
    targets = torch.as_tensor(_as_numpy(targets))
    if logits.ndim == 1:
        logits = logits[:, None]
    if len(logits) == 0:
        raise DataError("fit_temperature needs validation samples, got none")
    if len(logits) != len(targets):
        raise DataError(f"logits have {len(logits)} rows but targets {len(targets)}")
    if not torch.isfinite(logits).all():
        raise DataError("logits contain NaN or infinite values")
    if task == "binary" and logits.shape[1] != 1:
        raise DataError(f"binary logits must be (N, 1), one sigmoid output; got {logits.shape}")
    if task == "multilabel" and logits.shape != targets.shape:
        raise DataError(f"multi-label logits {logits.shape} and targets {targets.shape} differ")
    if task == "multiclass":
        return logits, targets.long()
    return logits, targets.to(torch.float64).reshape(logits.shape)


def fit_temperature(logits, targets, task: str, max_iter: int = 100) -> float:
    """Temperature scaling: the T > 0 minimising the NLL of ``logits / T`` on validation data.

    Multiclass: cross-entropy of the softmax; binary and multilabel: BCE of the sigmoids, one
    T shared by every label. L-BFGS optimises log T, which keeps T positive. Dividing by T
    changes no argmax nor any per-output ranking, only the confidence.
    """
    with torch.inference_mode(False), torch.enable_grad():
        logits, targets = _prepare_logits(logits, targets, task)
        if task == "multiclass":
            loss_fn = torch.nn.functional.cross_entropy
        else:
            loss_fn = torch.nn.functional.binary_cross_entropy_with_logits
        log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
        optimizer = torch.optim.LBFGS(
            [log_t], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe"
        )

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = loss_fn(logits * torch.exp(-log_t), targets)
            loss.backward()
            return loss

        optimizer.step(closure)
        return float(torch.exp(log_t.detach()))


def scaled_probs(logits, temperature: float, task: str) -> np.ndarray:
    """Probabilities of ``logits / temperature``: softmax (multiclass), ``[1 - σ, σ]`` of the
    single output (binary, (N, 2)), or a sigmoid per label (multilabel)."""
    _check_task(task)
    scaled = torch.as_tensor(_as_numpy(logits), dtype=torch.float64) / temperature
    if task == "multiclass":
        return torch.softmax(scaled, dim=1).numpy()
    positive = torch.sigmoid(scaled)
    if task == "binary":
        positive = positive.reshape(-1)
        return torch.stack([1 - positive, positive], dim=1).numpy()
    return positive.numpy()
