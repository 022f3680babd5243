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


def set_columns(probs: np.ndarray, class_names: Sequence[str], conformal: dict) -> dict:
    """The conformal prediction set of each sample (medclf.evaluation.conformal): ``set``, the
    classes in it (``;``-joined; multi-label: the labels decided yes), ``unsure`` (multi-label:
    the labels neither yes nor no) and ``abstain`` (the set is not exactly one class, or a
    label is unsure: refer the case)."""
    from medclf.evaluation.conformal import abstains, label_decisions, predict_sets

    sets = predict_sets(probs, conformal)
    names = np.asarray(list(class_names), dtype=object)
    columns: dict[str, list] = {}
    if conformal["task"] == "multilabel":
        decisions = label_decisions(sets)
        columns["set"] = [";".join(names[row == "yes"]) for row in decisions]
        columns["unsure"] = [";".join(names[row == "unsure"]) for row in decisions]
    else:
        columns["set"] = [";".join(names[row]) for row in sets]
    columns["abstain"] = abstains(sets, conformal["task"]).tolist()
    return columns


def predictions_frame(
    samples: Sequence[str],
    probs: np.ndarray,
    class_names: Sequence[str],
    task: str,
    threshold: float | list[float],
    targets: np.ndarray | None = None,
    conformal: dict | None = None,
    ood: tuple[np.ndarray, dict] | None = None,
) -> pd.DataFrame:
    """One row per sample: its id, its true label (``targets`` given), the prediction by
    medclf.models.outputs.decide, one probability per class and, with a ``conformal`` state,
    the prediction set (:func:`set_columns`); with ``ood`` (the gate's scores and state,
    medclf.audit.ood), ``ood_score`` and the ``ood`` flag (the score above the gate's
    threshold: unlike the validation images)."""
    frame = pd.DataFrame({"sample": list(samples)})
    if targets is not None:
        frame["label"] = true_labels(targets, class_names, task)
    frame["prediction"] = predicted_labels(probs, class_names, task, threshold)
    probs = np.asarray(probs)
    for i, column in enumerate(prob_columns(class_names)):
        frame[column] = probs[:, i]
    if conformal is not None:
        for column, values in set_columns(probs, class_names, conformal).items():
            frame[column] = values
    if ood is not None:
        from medclf.audit.ood import flags

        scores, state = ood
        frame["ood_score"] = np.asarray(scores, dtype=np.float64)
        frame["ood"] = flags(state, scores).tolist()
    return frame
