"""Decision curves (Vickers & Elkin 2006): is acting on the model's probability worth more
than treating everyone or no one, at the threshold probability a clinician would accept?

At threshold probability pt, a patient is treated when the predicted probability is at
least pt (``models.outputs.decide``'s rule), and

    net benefit = TP / n − FP / n · pt / (1 − pt),

true positives counted as a benefit and false positives as harms weighted by the odds of pt.
Treat-all has net benefit prevalence − (1 − prevalence) · pt / (1 − pt); treat-none has 0.
Binary outputs give one curve (the positive class), multi-label outputs one per label;
softmax multi-class outputs have no single "treat" decision and are refused.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from medclf.errors import ConfigError  # noqa: E402

THRESHOLDS = np.round(np.arange(0.0, 1.0, 0.01), 2)
KEYS = ("threshold", "label", "treat_all", "treat_none")


def net_benefit(truth, scores, thresholds) -> np.ndarray:
    """Net benefit of treating the samples whose score is at least each threshold pt in
    [0, 1): TP/n − FP/n · pt/(1 − pt), with ``truth`` the 0/1 outcomes."""
    truth = np.asarray(truth).astype(bool).reshape(-1)
    scores = np.asarray(scores, dtype=float).reshape(-1)
    pt = np.asarray(thresholds, dtype=float).reshape(-1)
    if len(scores) != len(truth) or len(truth) == 0:
        raise ValueError(f"{len(scores)} scores for {len(truth)} outcomes (need one each, > 0)")
    if np.any((pt < 0) | (pt >= 1)):
        raise ValueError("threshold probabilities must lie in [0, 1)")
    order = np.sort(scores)
    treated = len(scores) - np.searchsorted(order, pt, side="left")
    tp = np.count_nonzero(truth) - np.searchsorted(np.sort(scores[truth]), pt, side="left")
    fp = treated - tp
    n = len(truth)
    return tp / n - fp / n * pt / (1 - pt)


def _curves(targets, probs, task: str, class_names: Sequence[str]):
    """(label, truth, score) per curve: the positive class (binary) or each label."""
    probs = np.asarray(probs, dtype=float)
    targets = np.asarray(targets)
    if task == "binary":
        return [(class_names[-1], targets.astype(int) == 1, probs[:, -1])]
    if task == "multilabel":
        if probs.shape != targets.shape or probs.shape[1] != len(class_names):
            raise ValueError(
                f"multi-label probs {probs.shape}, targets {targets.shape} and "
                f"{len(class_names)} class names must agree"
            )
        return [(name, targets[:, k] > 0.5, probs[:, k]) for k, name in enumerate(class_names)]
    raise ConfigError(
        f"decision curves need a binary or multi-label task, got {task!r}: a softmax over "
        "several classes has no single treat/do-not-treat decision"
    )


def decision_curve(
    targets,
    probs,
    task: str,
    class_names: Sequence[str],
    thresholds: Sequence[float] | np.ndarray = THRESHOLDS,
    model: str = "model",
) -> pd.DataFrame:
    """Net benefit per threshold probability and label, CSV-ready: columns ``threshold,
    label, <model>, treat_all, treat_none`` (``model`` names the model's column, so that
    tables of several runs can be merged on threshold and label for one figure)."""
    if model in KEYS:
        raise ConfigError(f"model={model!r} clashes with the table's column {model!r}")
    pt = np.asarray(thresholds, dtype=float).reshape(-1)
    frames = []
    for label, truth, score in _curves(targets, probs, task, class_names):
        prevalence = truth.mean()
        frames.append(
            pd.DataFrame(
                {
                    "threshold": pt,
                    "label": label,
                    model: net_benefit(truth, score, pt),
                    "treat_all": prevalence - (1 - prevalence) * pt / (1 - pt),
                    "treat_none": 0.0,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def decision_curve_figure(table: pd.DataFrame) -> plt.Figure:
    """Net benefit against threshold probability, one panel per label: every model column of
    a ``decision_curve`` table (several after merging runs), treat-all and treat-none. The
    y axis runs from a little below 0 to the best net benefit, as Vickers recommends."""
    models = [c for c in table.columns if c not in KEYS]
    labels = list(dict.fromkeys(table["label"]))
    cols = min(len(labels), 3)
    rows = (len(labels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.6 * rows), squeeze=False)
    for ax, label in zip(axes.flat, labels, strict=False):
        part = table[table["label"] == label]
        x = part["threshold"].to_numpy(float)
        for name in models:
            ax.plot(x, part[name].to_numpy(float), label=name)
        ax.plot(x, part["treat_all"], color="grey", linestyle="--", label="treat all")
        ax.plot(x, part["treat_none"], color="black", linestyle=":", label="treat none")
        top = np.nanmax(part[[*models, "treat_all"]].to_numpy(float), initial=0.0)
        ax.set(
            xlim=(x.min(), x.max()),
            ylim=(-0.05 * max(top, 0.1), 1.05 * max(top, 0.01)),
            xlabel="threshold probability",
            ylabel="net benefit",
            title=str(label),
        )
        ax.legend(fontsize=7, loc="upper right")
    for ax in axes.flat[len(labels) :]:
        ax.remove()
    fig.suptitle("Decision curves")
    fig.tight_layout()
    return fig
