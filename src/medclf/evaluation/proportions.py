"""Intervals that do not collapse on small groups: exact binomial intervals for proportions
where the percentile bootstrap cannot work, and a mark on metrics too small to claim.

A percentile bootstrap of a proportion with few successes or failures degenerates: four
images all wrong resample to accuracy 0 every time, giving [0, 0]. The rule
(``choose_interval``), for a proportion k/n (accuracy, sensitivity, specificity, binary
precision and recall):

* n = 0: nothing to estimate, method ``"too small"``, interval (NaN, NaN);
* fewer than ``MIN_COUNT`` (5) successes or failures, or fewer than ``MIN_UNITS`` (10)
  resampling units (patients, else images): an exact binomial interval, Clopper–Pearson by
  default (``"clopper-pearson"``; never below the nominal coverage) or ``"wilson"``;
* otherwise the bootstrap interval (``"bootstrap"``), which respects patients' clustering.

Other metrics (F1, AUROC, macro averages, multi-label accuracy) are not one binomial
proportion; their bootstrap interval is kept with at least ``MIN_UNITS`` units, and below
that they are marked ``"too small"`` with (NaN, NaN). The exact intervals count images as
independent: with several images per patient they are narrower than they should be.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

from medclf.evaluation.intervals import bootstrap_intervals, metric_names

MIN_COUNT = 5
MIN_UNITS = 10
TOO_SMALL = "too small"
EXACT = {"clopper-pearson": "exact", "wilson": "wilson"}
Interval = tuple[float, float, str]


def proportion_interval(
    successes: int, trials: int, level: float = 0.95, method: str = "clopper-pearson"
) -> tuple[float, float]:
    """A two-sided binomial interval of ``successes / trials``: Clopper–Pearson (exact, from
    beta quantiles) or Wilson score (no continuity correction); (NaN, NaN) for 0 trials."""
    if method not in EXACT:
        raise ValueError(f"method must be one of {', '.join(EXACT)}, got {method!r}")
    if not 0 <= successes <= trials:
        raise ValueError(f"successes must lie in [0, trials], got {successes} of {trials}")
    if trials == 0:
        return float("nan"), float("nan")
    ci = stats.binomtest(int(successes), int(trials)).proportion_ci(level, EXACT[method])
    return float(ci.low), float(ci.high)


def choose_interval(
    successes: int | None,
    trials: int | None,
    bootstrap: tuple[float, float],
    units: int,
    level: float = 0.95,
    exact: str = "clopper-pearson",
) -> Interval:
    """(low, high, method) of one metric by the module's rule: ``successes``/``trials`` for a
    proportion (None for any other metric), its bootstrap interval, and the number of
    resampling units (patients, or images without groups) the bootstrap drew from."""
    if successes is None or trials is None:
        if units < MIN_UNITS:
            return float("nan"), float("nan"), TOO_SMALL
        return float(bootstrap[0]), float(bootstrap[1]), "bootstrap"
    if trials == 0:
        return float("nan"), float("nan"), TOO_SMALL
    few = min(successes, trials - successes) < MIN_COUNT or units < MIN_UNITS
    if few or not all(math.isfinite(v) for v in bootstrap):
        return (*proportion_interval(successes, trials, level, exact), exact)
    return float(bootstrap[0]), float(bootstrap[1]), "bootstrap"


def proportion_counts(
    targets, chosen, task: str, class_names: Sequence[str]
) -> dict[str, tuple[int, int]]:
    """(successes, trials) of the ``metric_values`` metrics that are one binomial proportion:
    ``accuracy`` (multiclass, binary: correct images of all), ``sensitivity_<c>`` (TP of the
    class's positives), ``specificity_<c>`` (TN of its negatives) and, binary, ``recall``
    (as sensitivity of the positive class) and ``precision`` (TP of predicted positives)."""
    chosen = np.asarray(chosen, dtype=bool)
    targets = np.asarray(targets)
    if task == "multilabel":
        truth = targets > 0.5
    else:
        truth = targets.astype(int)[:, None] == np.arange(len(class_names))
    tp = np.count_nonzero(truth & chosen, axis=0)
    positives = np.count_nonzero(truth, axis=0)
    negatives = len(truth) - positives
    tn = np.count_nonzero(~truth & ~chosen, axis=0)
    counts = {}
    if task != "multilabel":
        counts["accuracy"] = (int(np.count_nonzero((truth & chosen).any(axis=1))), len(truth))
    if task == "binary":
        counts["precision"] = (int(tp[1]), int(np.count_nonzero(chosen[:, 1])))
        counts["recall"] = (int(tp[1]), int(positives[1]))
    for k, name in enumerate(class_names):
        counts[f"sensitivity_{name}"] = (int(tp[k]), int(positives[k]))
        counts[f"specificity_{name}"] = (int(tn[k]), int(negatives[k]))
    return counts


def robust_intervals(
    targets,
    probs,
    chosen,
    task: str,
    class_names: Sequence[str],
    groups=None,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    exact: str = "clopper-pearson",
) -> dict[str, Interval]:
    """(low, high, method) of every ``metric_values`` metric on these samples:
    ``bootstrap_intervals`` (same arguments and protocol) where it can work, exact binomial
    intervals for proportions where it cannot, "too small" below the minimums (see the
    module's rule). ``n_resamples=0`` asks for no interval: every metric is (NaN, NaN,
    "none")."""
    if exact not in EXACT:
        raise ValueError(f"exact must be one of {', '.join(EXACT)}, got {exact!r}")
    boot = bootstrap_intervals(
        targets, probs, chosen, task, class_names, groups, n_resamples, seed, level
    )
    if n_resamples == 0:
        return {name: (math.nan, math.nan, "none") for name in metric_names(task, class_names)}
    counts = proportion_counts(targets, chosen, task, class_names)
    n = len(np.asarray(targets))
    units = n if groups is None else len(np.unique(np.asarray(groups)))
    out = {}
    for name in metric_names(task, class_names):
        k, trials = counts.get(name, (None, None))
        out[name] = choose_interval(k, trials, boot[name], units, level, exact)
    return out
