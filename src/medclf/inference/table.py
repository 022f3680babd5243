"""The predictions table, one format for the test report (``test_predictions.csv``), eval.py
and predict.py: ``sample``, ``label`` (where the truth is known), ``prediction`` and one
``prob_<class>`` column per class, written with 9 significant digits (float32 round-trips
exactly), so metrics can be recomputed from it independently.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from medclf.models.outputs import predicted_labels

PROB_PREFIX = "prob_"
FLOAT_FORMAT = "%.9g"


def prob_columns(class_names: Sequence[str]) -> list[str]:
    return [f"{PROB_PREFIX}{name}" for name in class_names]


def true_labels(targets: np.ndarray, class_names: Sequence[str], task: str) -> list[str]:
    """Class indices (N,) → names; multi-label 0/1 rows (N, K) → ``;``-joined names."""
    names = np.asarray(list(class_names), dtype=object)
    targets = np.asarray(targets)
    if task == "multilabel":
        return [";".join(names[row > 0.5]) for row in targets]
    return list(names[targets.astype(int)])


def predictions_frame(
    samples: Sequence[str],
    probs: np.ndarray,
    class_names: Sequence[str],
    task: str,
    threshold: float | list[float],
    targets: np.ndarray | None = None,
) -> pd.DataFrame:
    """One row per sample: its id, its true label (``targets`` given), the prediction by
    medclf.models.outputs.decide, and one probability per class."""
    frame = pd.DataFrame({"sample": list(samples)})
    if targets is not None:
        frame["label"] = true_labels(targets, class_names, task)
    frame["prediction"] = predicted_labels(probs, class_names, task, threshold)
    probs = np.asarray(probs)
    for i, column in enumerate(prob_columns(class_names)):
        frame[column] = probs[:, i]
    return frame
