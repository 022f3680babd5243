"""torchmetrics collections with the platform's metric names (``{stage}/{name}``).

multiclass: accuracy is the fraction of samples classified correctly; precision, recall,
F1 and AUROC are macro-averaged over classes (scikit-learn's ``average="macro"``).
multilabel: accuracy is the fraction of correct (sample, label) decisions at ``threshold``;
the others are macro-averaged over labels. binary (one sigmoid output): the positive class's
precision, recall, F1 and AUROC (scikit-learn's ``average="binary"``). Decisions at
``threshold`` follow medclf.models.outputs.decide (at or above the threshold is positive).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryAUROC,
    BinaryF1Score,
    BinaryPrecision,
    BinaryRecall,
    MulticlassAccuracy,
    MulticlassAUROC,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
    MultilabelAccuracy,
    MultilabelAUROC,
    MultilabelF1Score,
    MultilabelPrecision,
    MultilabelRecall,
)

from medclf.compat import multiclass_counts_update
from medclf.models.outputs import metric_threshold

SUMMARY = ("accuracy", "precision", "recall", "f1", "auroc")
DECIDED = ("accuracy", "precision", "recall", "f1")  # of decisions (at the threshold)
RANKED = ("auroc",)  # of probabilities
PER_CLASS = ("precision", "recall", "f1")


class _OneHotCounts:
    """Per-class true/false positives and negatives of a multiclass metric counted by
    comparing labels with the class indices, instead of torchmetrics' ``torch.bincount``,
    which on a GPU reads the labels' minimum and maximum back to the host: two
    synchronisations per update, which stall a training step that is otherwise queued
    ahead. Same counts (tested); for the global, top-1 metrics without ``ignore_index``
    that the platform makes."""

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        multiclass_counts_update(self, preds, target)


class _Precision(_OneHotCounts, MulticlassPrecision):
    pass


class _Recall(_OneHotCounts, MulticlassRecall):
    pass


class _F1(_OneHotCounts, MulticlassF1Score):
    pass


def _factories(task: str, n: int, threshold: float, validate_args: bool = True):
    """``validate_args=False`` (training steps) skips torchmetrics' input checks and counts
    multiclass precision, recall and F1 without ``torch.bincount``: both read values back
    from the device (a GPU synchronisation per update)."""
    v = {"validate_args": validate_args}
    threshold = metric_threshold(threshold)
    if task == "multiclass":
        sync_free = not validate_args
        precision = _Precision if sync_free else MulticlassPrecision
        recall = _Recall if sync_free else MulticlassRecall
        f1 = _F1 if sync_free else MulticlassF1Score
        return {
            "accuracy": lambda avg: MulticlassAccuracy(n, average="micro", **v),
            "precision": lambda avg: precision(n, average=avg, zero_division=0, **v),
            "recall": lambda avg: recall(n, average=avg, zero_division=0, **v),
            "f1": lambda avg: f1(n, average=avg, zero_division=0, **v),
            "auroc": lambda avg: MulticlassAUROC(n, average=avg, **v),
        }
    if task == "multilabel":
        kw = {"threshold": threshold, "zero_division": 0, **v}
        return {
            "accuracy": lambda avg: MultilabelAccuracy(
                n, threshold=threshold, average="micro", **v
            ),
            "precision": lambda avg: MultilabelPrecision(n, average=avg, **kw),
            "recall": lambda avg: MultilabelRecall(n, average=avg, **kw),
            "f1": lambda avg: MultilabelF1Score(n, average=avg, **kw),
            "auroc": lambda avg: MultilabelAUROC(n, average=avg, **v),
        }
    if task == "binary":
        kw = {"threshold": threshold, **v}
        return {
            "accuracy": lambda avg: BinaryAccuracy(**kw),
            "precision": lambda avg: BinaryPrecision(zero_division=0, **kw),
            "recall": lambda avg: BinaryRecall(zero_division=0, **kw),
            "f1": lambda avg: BinaryF1Score(zero_division=0, **kw),
            "auroc": lambda avg: BinaryAUROC(**v),
        }
    raise ValueError(f"task must be multiclass, multilabel or binary, got {task!r}")


def summary_metrics(
    task: str,
    n_classes: int,
    names: Sequence[str] = SUMMARY,
    threshold: float = 0.5,
    validate_args: bool = True,
) -> MetricCollection:
    """Macro-averaged metrics, without prefix (clone per stage with ``prefix='val/'``)."""
    make = _factories(task, n_classes, threshold, validate_args)
    return MetricCollection({name: make[name]("macro") for name in names})


def per_class_metrics(task: str, n_classes: int, threshold: float = 0.5) -> MetricCollection:
    """Per-class precision, recall and F1 (``average=None``: one value per class). A binary
    task is scored per class on its two-column probabilities [1 − p, p]."""
    make = _factories("multiclass" if task == "binary" else task, n_classes, threshold)
    return MetricCollection({name: make[name](None) for name in PER_CLASS})
