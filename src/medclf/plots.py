"""Figures logged as MLflow artifacts (matplotlib, headless)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def confusion_matrix_figure(counts: np.ndarray, class_names: Sequence[str]) -> plt.Figure:
    """Row-normalised confusion matrix (recall per true class), each cell also giving counts."""
    counts = np.asarray(counts)
    totals = counts.sum(axis=1, keepdims=True)
    rates = np.divide(counts, totals, out=np.zeros_like(counts, dtype=float), where=totals > 0)
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
        for i in range(n):
            for j in range(n):
                color = "white" if rates[i, j] > 0.5 else "black"
                ax.text(
                    j,
                    i,
                    f"{rates[i, j]:.2f}\n({counts[i, j]})",
                    ha="center",
                    va="center",
                    color=color,
                    fontsize=7,
                )
    fig.tight_layout()
    return fig


def multilabel_confusion_figure(matrices: np.ndarray, class_names: Sequence[str]) -> plt.Figure:
    """One row-normalised 2×2 confusion matrix (absent/present) per label, in a grid."""
    n = len(class_names)
    cols = min(n, 4)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 2.8 * rows), squeeze=False)
    for ax, counts, name in zip(axes.flat, matrices, class_names, strict=False):
        totals = counts.sum(axis=1, keepdims=True)
        rates = np.divide(counts, totals, out=np.zeros((2, 2)), where=totals > 0)
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
        for i in range(2):
            for j in range(2):
                color = "white" if rates[i, j] > 0.5 else "black"
                ax.text(
                    j,
                    i,
                    f"{rates[i, j]:.2f}\n({counts[i, j]})",
                    ha="center",
                    va="center",
                    color=color,
                    fontsize=8,
                )
    for ax in axes.flat[n:]:
        ax.axis("off")
    fig.suptitle("Confusion matrix per label (normalised)")
    fig.tight_layout()
    return fig


def save_figure(fig: plt.Figure, path) -> None:
    """Write a figure to ``path`` and free it (figures otherwise accumulate in pyplot)."""
    fig.savefig(path, dpi=120)
    plt.close(fig)
