"""Likely label errors, found by confident learning (Northcutt et al. 2021, cleanlab) from
out-of-fold predicted probabilities: a sample whose given class the model, trained without
it, finds much less likely than that class's typical confidence is flagged.

The probabilities must be out-of-fold (each sample predicted by a model that did not train
on it: cross-validation); a model's probabilities on its own training images have learnt
the wrong labels and hide them. Flagged samples come first, in cleanlab's ranking (lowest
self-confidence, i.e. probability of the given label, first); the rest follow by their
label quality score, lowest first.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from medclf.errors import ConfigError, DataError

TASKS = ("multiclass", "binary", "multilabel")
RANKED_BY = "self_confidence"
COLUMNS = (
    "index",
    "sample",
    "given",
    "suggested",
    "given_name",
    "suggested_name",
    "quality",
    "flagged",
)


def _probabilities(pred_probs: np.ndarray, task: str, n: int) -> np.ndarray:
    """(N, K) float64 probabilities, checked; a binary task's (N,) or (N, 1) positive-class
    probabilities become [1 − p, p]."""
    probs = np.asarray(pred_probs, dtype=np.float64)
    if task == "binary" and (probs.ndim == 1 or (probs.ndim == 2 and probs.shape[1] == 1)):
        positive = probs.reshape(-1)
        probs = np.stack([1.0 - positive, positive], axis=1)
    if probs.ndim != 2 or len(probs) != n:
        raise DataError(
            f"pred_probs of shape {np.shape(pred_probs)} do not match {n} labels; pass one row "
            "of class probabilities per sample, (N, K)."
        )
    if not np.isfinite(probs).all() or probs.min() < 0 or probs.max() > 1:
        raise DataError(
            "pred_probs hold values outside [0, 1] (or NaN): pass probabilities (softmax or "
            "sigmoid outputs), not logits."
        )
    if task != "multilabel" and not np.allclose(probs.sum(axis=1), 1.0, atol=1e-3):
        raise DataError(
            "pred_probs rows do not sum to 1: a single-label task needs softmax "
            "probabilities; for sigmoid outputs of a multi-label model use task=multilabel."
        )
    return probs


def _labels(labels, task: str, k: int) -> np.ndarray:
    """Class indices (N,), or for multilabel a 0/1 matrix (N, K), checked against K classes."""
    if task == "multilabel":
        matrix = np.array([list(v) for v in labels], dtype=np.float64).reshape(len(labels), -1)
        if matrix.shape[1] != k or not np.isin(matrix, (0, 1)).all():
            raise DataError(
                f"multi-label labels must be 0/1 rows of {k} values (one per class), found "
                f"shape {matrix.shape}."
            )
        return matrix.astype(np.int64)
    given = np.asarray(labels)
    if given.dtype.kind in "Of":  # e.g. a frame's object column of ints, or 0.0/1.0
        try:
            numbers = given.astype(np.float64)
        except (TypeError, ValueError):
            numbers = np.array([np.nan])
        if np.isfinite(numbers).all() and (numbers == np.round(numbers)).all():
            given = numbers.astype(np.int64)
    if given.ndim != 1 or given.dtype.kind not in "iu" or given.min() < 0 or given.max() >= k:
        raise DataError(
            f"labels must be class indices 0..{k - 1} (one per sample), found dtype "
            f"{given.dtype} and shape {given.shape}."
        )
    return given.astype(np.int64)


def _names(indices: np.ndarray, class_names: Sequence[str]) -> list[str]:
    return [class_names[int(i)] for i in indices]


def label_issues(
    labels: Sequence | np.ndarray,
    pred_probs: np.ndarray,
    *,
    task: str = "multiclass",
    class_names: Sequence[str] | None = None,
    samples: Sequence[str] | None = None,
    filter_by: str = "prune_by_noise_rate",
    threshold: float = 0.5,
    n_jobs: int = 1,
) -> pd.DataFrame:
    """Every sample ranked by how likely its label is wrong, with cleanlab's verdict.

    ``labels``: class indices (N,), or 0/1 rows (N, K) for ``task=multilabel``.
    ``pred_probs``: out-of-fold probabilities (N, K) (binary also (N,) of the positive
    class). Columns: index (row in the input), sample, given and suggested (class index, or
    for multi-label a tuple of indices; suggested is the most probable class, or every label
    with probability ≥ ``threshold``), given_name and suggested_name (``;``-joined for
    multi-label), quality (cleanlab's self-confidence score, 0 worst), flagged.
    ``filter_by``: cleanlab's method (``prune_by_noise_rate``, ``confident_learning``...).
    """
    from cleanlab.filter import find_label_issues

    if task not in TASKS:
        raise ConfigError(f"task={task!r}: use one of {', '.join(TASKS)}.")
    probs = _probabilities(pred_probs, task, len(labels))
    k = probs.shape[1]
    given = _labels(labels, task, k)
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    if len(names) != k:
        raise ConfigError(f"class_names has {len(names)} names for {k} probability columns.")
    if samples is not None and len(samples) != len(given):
        raise DataError(f"samples has {len(samples)} names for {len(given)} labels.")
    multilabel = task == "multilabel"
    cleanlab_labels = [list(np.flatnonzero(row)) for row in given] if multilabel else given
    try:
        ranked = find_label_issues(
            cleanlab_labels,
            probs,
            filter_by=filter_by,
            return_indices_ranked_by=RANKED_BY,
            multi_label=multilabel,
            n_jobs=n_jobs,
        )
        quality = _quality(cleanlab_labels, probs, multilabel)
    except (ValueError, AssertionError, TypeError) as exc:
        raise DataError(f"cleanlab cannot rank these labels: {exc}") from None
    n = len(given)
    flagged = np.zeros(n, bool)
    flagged[ranked] = True
    rest = np.flatnonzero(~flagged)
    rest = rest[np.lexsort((rest, quality[rest]))]
    order = np.concatenate([np.asarray(ranked, dtype=np.int64), rest])
    if multilabel:
        chosen = probs >= threshold
        given_col = [tuple(int(c) for c in np.flatnonzero(row)) for row in given]
        suggested_col = [tuple(int(c) for c in np.flatnonzero(row)) for row in chosen]
        given_names = [";".join(_names(np.array(v, int), names)) for v in given_col]
        suggested_names = [";".join(_names(np.array(v, int), names)) for v in suggested_col]
    else:
        given_col, suggested_col = list(given), list(probs.argmax(axis=1))
        given_names, suggested_names = _names(given, names), _names(probs.argmax(axis=1), names)
    table = pd.DataFrame(
        {
            "index": np.arange(n),
            "sample": list(samples) if samples is not None else [str(i) for i in range(n)],
            "given": given_col,
            "suggested": suggested_col,
            "given_name": given_names,
            "suggested_name": suggested_names,
            "quality": quality,
            "flagged": flagged,
        },
        columns=list(COLUMNS),
    )
    return table.iloc[order].reset_index(drop=True)


def _quality(labels, probs: np.ndarray, multilabel: bool) -> np.ndarray:
    """cleanlab's label quality score of each sample (self-confidence; 0 worst, 1 best)."""
    if multilabel:
        from cleanlab.multilabel_classification import get_label_quality_scores

        return np.asarray(get_label_quality_scores(labels, probs, method=RANKED_BY))
    from cleanlab.rank import get_label_quality_scores

    return np.asarray(get_label_quality_scores(labels, probs, method=RANKED_BY))
