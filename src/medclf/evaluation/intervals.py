"""Test metrics with bootstrap confidence intervals, resampling patients rather than images.

Plain numpy, so that a thousand resamples take seconds: ``metric_values`` computes the
platform's headline metrics (the names it logs under ``test/``) plus per-class sensitivity,
specificity and F1 from decisions already made (``chosen``); ``bootstrap_intervals`` gives
their percentile intervals. Inputs follow the evaluation layer's convention: ``targets`` are
class indices (N,) or, multi-label, a 0/1 matrix (N, K); ``probs`` (N, K) probabilities (a
binary task's column 1 is the positive class); ``chosen`` (N, K) booleans, True where a class
is predicted.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

TASKS = ("multiclass", "binary", "multilabel")
HEADLINE = ("accuracy", "precision", "recall", "f1", "auroc")
PER_CLASS = ("sensitivity", "specificity", "f1")


def metric_names(task: str, class_names: Sequence[str]) -> list[str]:
    """The names ``metric_values`` returns, in its order: the headline metrics, then
    ``sensitivity_<class>``, ``specificity_<class>`` and ``f1_<class>`` for every class."""
    _check_task(task)
    return list(HEADLINE) + [f"{kind}_{name}" for kind in PER_CLASS for name in class_names]


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"task must be multiclass, binary or multilabel, got {task!r}")


@dataclass(frozen=True)
class _Scored:
    """One test set prepared for repeated scoring of row subsets: truth and decisions as
    (N, K) booleans, and each AUROC column's scores replaced by integer keys that keep their
    order and ties (dense rank + column * ``width``), so that counting replaces sorting."""

    task: str
    truth: np.ndarray
    chosen: np.ndarray
    keys: np.ndarray
    width: int


def _prepare(
    targets: np.ndarray,
    probs: np.ndarray,
    chosen: np.ndarray,
    task: str,
    class_names: Sequence[str],
) -> _Scored:
    """Check shapes and build the booleans and rank keys that ``_scores`` reads."""
    _check_task(task)
    probs = np.asarray(probs, dtype=float)
    chosen = np.asarray(chosen, dtype=bool)
    targets = np.asarray(targets)
    n, k = len(probs), len(class_names)
    if probs.shape != (n, k) or chosen.shape != (n, k):
        raise ValueError(
            f"probs {probs.shape} and chosen {chosen.shape} must both be (N, {k}) "
            f"for {k} class names"
        )
    if task == "binary" and k != 2:
        raise ValueError(f"a binary task has 2 class names (negative, positive), got {k}")
    if task == "multilabel":
        if targets.shape != (n, k):
            raise ValueError(f"multi-label targets must be (N, K) = {(n, k)}, got {targets.shape}")
        truth = targets > 0.5
    else:
        if targets.shape != (n,):
            raise ValueError(f"targets must be class indices of shape ({n},), got {targets.shape}")
        truth = targets.astype(int)[:, None] == np.arange(k)
    scored = probs[:, 1:2] if task == "binary" else probs
    dense = [np.unique(column, return_inverse=True)[1].reshape(-1) for column in scored.T]
    width = max((int(d.max()) + 1 for d in dense if d.size), default=1)
    keys = np.stack([d + i * width for i, d in enumerate(dense)], axis=1).astype(np.intp)
    return _Scored(task, truth, chosen, keys, width)


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Elementwise ratio, 0 where the denominator is 0 (scikit-learn's zero_division=0)."""
    out = np.zeros(np.shape(numerator), dtype=float)
    return np.divide(numerator, denominator, out=out, where=denominator > 0)


def _auroc(keys: np.ndarray, truth: np.ndarray, width: int) -> np.ndarray:
    """One-vs-rest AUROC per column by the Mann–Whitney U statistic: the share of
    (positive, negative) pairs ranked correctly, ties counting half (average ranks), which
    equals roc_auc_score. NaN for a column with only positives or only negatives."""
    columns = keys.shape[1]
    size = columns * width
    total = np.bincount(keys.reshape(-1), minlength=size).reshape(columns, width)
    positive = np.bincount(keys[truth], minlength=size).reshape(columns, width)
    negative = total - positive
    below = np.cumsum(negative, axis=1) - negative
    twice_won = (positive * (2 * below + negative)).sum(axis=1)
    pairs = positive.sum(axis=1) * negative.sum(axis=1)
    out = np.full(columns, np.nan)
    return np.divide(twice_won, 2 * pairs, out=out, where=pairs > 0)


def _mean_defined(values: np.ndarray) -> float:
    """The mean of the non-NaN values; NaN when there is none (without numpy's warning)."""
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if defined.size else float("nan")


def _scores(data: _Scored, rows: np.ndarray | None = None) -> np.ndarray:
    """The values of ``metric_names`` on the given rows (all rows when None)."""
    truth, chosen, keys = data.truth, data.chosen, data.keys
    if rows is not None:
        truth, chosen, keys = truth[rows], chosen[rows], keys[rows]
    n = len(truth)
    tp = np.count_nonzero(truth & chosen, axis=0)
    fp = np.count_nonzero(chosen, axis=0) - tp
    fn = np.count_nonzero(truth, axis=0) - tp
    tn = n - tp - fp - fn
    precision = _divide(tp, tp + fp)
    recall = _divide(tp, tp + fn)
    f1 = _divide(2 * tp, 2 * tp + fp + fn)
    specificity = _divide(tn, tn + fp)
    auroc = _auroc(keys, truth[:, 1:] if data.task == "binary" else truth, data.width)
    if data.task == "multiclass":
        accuracy = tp.sum() / n if n else np.nan
        seen = (tp + fp + fn) > 0
        macro = [v[seen].mean() if seen.any() else 0.0 for v in (precision, recall, f1)]
        headline = [accuracy, *macro, _mean_defined(auroc)]
    elif data.task == "binary":
        accuracy = tp.sum() / n if n else np.nan
        headline = [accuracy, precision[1], recall[1], f1[1], auroc[0]]
    else:
        accuracy = (tp.sum() + tn.sum()) / truth.size if truth.size else np.nan
        headline = [accuracy, precision.mean(), recall.mean(), f1.mean(), _mean_defined(auroc)]
    return np.concatenate([np.asarray(headline, dtype=float), recall, specificity, f1])


def metric_values(
    targets: np.ndarray,
    probs: np.ndarray,
    chosen: np.ndarray,
    task: str,
    class_names: Sequence[str],
) -> dict[str, float]:
    """The platform's test metrics, recomputed in numpy from the decisions in ``chosen``.

    multiclass: accuracy (fraction correct) and precision, recall, F1, AUROC (one-vs-rest)
    macro over the classes that occur in the targets or predictions; binary: accuracy and the
    positive class's precision, recall, F1, AUROC; multilabel: the fraction of correct
    (sample, label) decisions and the others macro over labels. Per class (one-vs-rest):
    ``sensitivity_<c>``, ``specificity_<c>``, ``f1_<c>``. A ratio with a zero denominator is 0;
    the AUROC of a class with only one kind of label is undefined, left out of the macro mean
    (NaN when no class has one).
    """
    data = _prepare(targets, probs, chosen, task, class_names)
    return dict(zip(metric_names(task, class_names), _scores(data).tolist(), strict=True))


def _unit_members(groups: np.ndarray | None, n: int):
    """A function from drawn unit numbers to the rows they hold (each drawn unit's rows in
    ascending order, units in draw order, repeats kept), and the number of units."""
    if groups is None:
        return (lambda drawn: drawn), n
    groups = np.asarray(groups)
    if len(groups) != n:
        raise ValueError(f"groups has {len(groups)} entries for {n} samples")
    _, inverse = np.unique(groups, return_inverse=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(inverse, kind="stable")
    sizes = np.bincount(inverse)
    starts = np.cumsum(sizes) - sizes

    def members(drawn: np.ndarray) -> np.ndarray:
        counts = sizes[drawn]
        offsets = np.cumsum(counts) - counts
        return order[np.repeat(starts[drawn] - offsets, counts) + np.arange(counts.sum())]

    return members, len(sizes)


def bootstrap_intervals(
    targets: np.ndarray,
    probs: np.ndarray,
    chosen: np.ndarray,
    task: str,
    class_names: Sequence[str],
    groups: Sequence | np.ndarray | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals of every ``metric_values`` metric, resampling whole
    groups (patients) when given, since images of one patient are not independent.

    Protocol: ``rng = np.random.default_rng(seed)``; the units are the unique groups in the
    order of ``np.unique(groups, return_inverse=True)`` (each sample when ``groups`` is None);
    each of ``n_resamples`` resamples draws ``rng.integers(0, n_units, size=n_units)`` and
    takes all samples of the drawn units (repeats kept, in draw order); the metrics are
    ``metric_values`` of that resample; the interval is ``np.nanpercentile(values,
    [100 * (1 - level) / 2, 100 * (1 + level) / 2])`` per metric (linear method), so
    resamples where a metric is undefined are left out; (nan, nan) when it is never defined.
    ``n_resamples == 0`` gives {}.
    """
    if n_resamples < 0:
        raise ValueError(f"n_resamples must be 0 or more, got {n_resamples}")
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1 (e.g. 0.95), got {level}")
    data = _prepare(targets, probs, chosen, task, class_names)
    names = metric_names(task, class_names)
    if n_resamples == 0:
        return {}
    members, n_units = _unit_members(groups, len(data.truth))
    rng = np.random.default_rng(seed)
    values = np.empty((n_resamples, len(names)))
    for i in range(n_resamples):
        values[i] = _scores(data, members(rng.integers(0, n_units, size=n_units)))
    quantiles = [100 * (1 - level) / 2, 100 * (1 + level) / 2]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        low, high = np.nanpercentile(values, quantiles, axis=0)
    return {name: (float(lo), float(hi)) for name, lo, hi in zip(names, low, high, strict=True)}
