"""Figures logged as MLflow artifacts (matplotlib, headless)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


def _row_rates(counts: np.ndarray) -> np.ndarray:
    """Each row divided by its total (0 for an empty row)."""
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros_like(counts, dtype=float), where=totals > 0)


def _annotate(ax: plt.Axes, rates: np.ndarray, counts: np.ndarray, fontsize: int) -> None:
    """Write "rate (count)" in every cell, white on dark cells."""
    for i in range(rates.shape[0]):
        for j in range(rates.shape[1]):
            color = "white" if rates[i, j] > 0.5 else "black"
            ax.text(
                j,
                i,
                f"{rates[i, j]:.2f}\n({counts[i, j]})",
                ha="center",
                va="center",
                color=color,
                fontsize=fontsize,
            )


def confusion_matrix_figure(counts: np.ndarray, class_names: Sequence[str]) -> plt.Figure:
    """Row-normalised confusion matrix (recall per true class), each cell also giving counts."""
    counts = np.asarray(counts)
    rates = _row_rates(counts)
    n = len(class_names)
    size = max(4.0, 0.6 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size * 0.9))
    image = ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    ax.set(
        xticks=range(n),
        yticks=range(n),
        xticklabels=class_names,
        yticklabels=class_names,
        xlabel="predicted class",
        ylabel="true class",
        title="Confusion matrix (normalised)",
    )
    plt.setp(ax.get_xticklabels(), rotation=45, ha="right", rotation_mode="anchor")
    if n <= 20:
        _annotate(ax, rates, counts, fontsize=7)
    fig.tight_layout()
    return fig


def multilabel_confusion_figure(matrices: np.ndarray, class_names: Sequence[str]) -> plt.Figure:
    """One row-normalised 2×2 confusion matrix (absent/present) per label, in a grid."""
    n = len(class_names)
    cols = min(n, 4)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 2.8 * rows), squeeze=False)
    for ax, counts, name in zip(axes.flat, matrices, class_names, strict=False):
        rates = _row_rates(counts)
        ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0)
        ax.set(
            xticks=[0, 1],
            yticks=[0, 1],
            xticklabels=["no", "yes"],
            yticklabels=["no", "yes"],
            title=name,
            xlabel="predicted",
            ylabel="true",
        )
        _annotate(ax, rates, counts, fontsize=8)
    for ax in axes.flat[n:]:
        ax.axis("off")
    fig.suptitle("Confusion matrix per label (normalised)")
    fig.tight_layout()
    return fig


def per_class_figure(report) -> plt.Figure:
    """Grouped bars per class: precision, recall (sensitivity), specificity and F1 (rows of
    the per-class report, indexed by class name)."""
    kinds = [k for k in ("precision", "sensitivity", "specificity", "f1") if k in report]
    names = [str(n) for n in report.index]
    x = np.arange(len(names))
    width = 0.8 / len(kinds)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(names) + 2), 4))
    for i, kind in enumerate(kinds):
        ax.bar(x + (i - (len(kinds) - 1) / 2) * width, report[kind], width, label=kind)
    ax.set(xticks=x, xticklabels=names, ylim=(0, 1.05), ylabel="score", title="Per-class metrics")
    plt.setp(ax.get_xticklabels(), rotation=45, ha="right", rotation_mode="anchor")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def save_figure(fig: plt.Figure, path) -> None:
    """Write a figure to ``path`` and free it (figures otherwise accumulate in pyplot)."""
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _one_vs_rest(target: np.ndarray, probs: np.ndarray, task: str) -> np.ndarray:
    """Targets as a 0/1 matrix matching ``probs`` (N, C), whatever the task."""
    if task == "multilabel":
        return (np.asarray(target) > 0.5).astype(int)
    return np.eye(probs.shape[1], dtype=int)[np.asarray(target, dtype=int)]


def roc_pr_figures(
    target: np.ndarray, probs: np.ndarray, class_names: Sequence[str], task: str = "multiclass"
) -> tuple[plt.Figure, plt.Figure]:
    """ROC and precision-recall curves, one per class (one-vs-rest), with AUC and AP.

    A binary task draws the positive (second) class only. Classes absent from the targets
    have no curve.
    """
    from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_curve

    truth = _one_vs_rest(target, probs, task)
    indices = [1] if task == "binary" else range(len(class_names))
    roc, pr = plt.subplots(figsize=(5.5, 5)), plt.subplots(figsize=(5.5, 5))
    for i in indices:
        if truth[:, i].min() == truth[:, i].max():
            continue
        fpr, tpr, _ = roc_curve(truth[:, i], probs[:, i])
        roc[1].plot(fpr, tpr, label=f"{class_names[i]} (AUC {auc(fpr, tpr):.3f})")
        precision, recall, _ = precision_recall_curve(truth[:, i], probs[:, i])
        ap = average_precision_score(truth[:, i], probs[:, i])
        pr[1].plot(recall, precision, label=f"{class_names[i]} (AP {ap:.3f})")
    roc[1].plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    roc[1].set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (test)")
    pr[1].set(xlabel="recall", ylabel="precision", title="Precision-recall (test)")
    for fig, ax in (roc, pr):
        ax.set(xlim=(0, 1), ylim=(0, 1.02))
        ax.legend(fontsize=7, loc="lower right" if ax is roc[1] else "lower left")
        fig.tight_layout()
    return roc[0], pr[0]


def training_curves_figure(
    history: list[dict[str, float]], unfrozen_at: int | None = None
) -> plt.Figure:
    """Loss and F1 per epoch, train and validation side by side; with two-phase transfer
    learning a dashed line where the backbone was unfrozen (epoch ``unfrozen_at``)."""
    fig, (loss_ax, f1_ax) = plt.subplots(1, 2, figsize=(10, 4))
    epochs = [row["epoch"] for row in history]
    for ax, name in ((loss_ax, "loss"), (f1_ax, "f1")):
        for stage, key in (("train", f"train/{name}"), ("val", f"val/{name}")):
            values = [row.get(key, np.nan) for row in history]
            if not np.all(np.isnan(values)):
                ax.plot(epochs, values, marker="o", label=stage)
        if unfrozen_at:
            ax.axvline(unfrozen_at - 0.5, color="grey", linestyle="--", label="backbone unfrozen")
        ax.set(xlabel="epoch", ylabel=name, title=f"{name} per epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend()
    fig.tight_layout()
    return fig
