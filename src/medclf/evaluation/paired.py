"""Paired comparison of two models on the same test samples: is model B really better than
baseline A, or is the difference noise?

Every headline metric's difference B − A gets a paired percentile bootstrap interval (the
same resampled patients, or images without groups, scored for both models, with the
protocol of ``intervals.bootstrap_intervals``); AUROC gets DeLong's test for correlated ROC
curves (per class one-vs-rest, per label for multi-label), accuracy the exact McNemar test;
the p-values are corrected together with Holm's method. DeLong and McNemar treat images as
independent: with several images per patient their p-values are optimistic, the bootstrap
interval (over patients) is the honest one.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import stats  # noqa: E402

from medclf.errors import ConfigError  # noqa: E402
from medclf.evaluation.intervals import (  # noqa: E402
    HEADLINE,
    _auroc,
    _prepare,
    _Scored,
    _scores,
    _unit_members,
    metric_names,
)

COLUMNS = (
    "model_a",
    "model_b",
    "metric",
    "class",
    "value_a",
    "value_b",
    "difference",
    "ci_low",
    "ci_high",
    "test",
    "statistic",
    "p",
    "p_holm",
)


class DeLong(NamedTuple):
    """DeLong's test of two correlated AUCs: ``z = (auc_b − auc_a) / sqrt(variance)``."""

    auc_a: float
    auc_b: float
    difference: float
    variance: float
    z: float
    p: float


class McNemar(NamedTuple):
    """Exact McNemar test: the discordant pairs only A (``only_a``) or only B got right."""

    only_a: int
    only_b: int
    p: float


def delong_test(truth, scores_a, scores_b) -> DeLong:
    """DeLong's test that two scores of the same samples have the same AUROC (two-sided).

    The covariance of the two AUCs comes from the placement values (DeLong et al. 1988)
    computed by the fast algorithm of Sun & Xu (2014, IEEE Signal Process. Lett. 21:1389):
    midranks among positives, among negatives and among all give every placement in
    O(n log n). Ties count one half, as in the Mann–Whitney AUC. NaN statistics when there
    are fewer than two positives or two negatives.
    """
    truth = np.asarray(truth).astype(bool).reshape(-1)
    scores = np.stack([np.asarray(scores_a, float), np.asarray(scores_b, float)])
    if scores.shape[1] != len(truth):
        raise ValueError(f"scores of {scores.shape[1]} samples for {len(truth)} targets")
    positives, negatives = scores[:, truth], scores[:, ~truth]
    m, n = positives.shape[1], negatives.shape[1]
    if m < 2 or n < 2:
        nan = float("nan")
        return DeLong(nan, nan, nan, nan, nan, nan)
    within_pos = stats.rankdata(positives, axis=1)
    within_neg = stats.rankdata(negatives, axis=1)
    overall = stats.rankdata(np.concatenate([positives, negatives], axis=1), axis=1)
    auc = (overall[:, :m].sum(axis=1) / m - (m + 1) / 2) / n
    v10 = (overall[:, :m] - within_pos) / n  # share of negatives below each positive
    v01 = 1 - (overall[:, m:] - within_neg) / m  # share of positives above each negative
    covariance = np.cov(v10) / m + np.cov(v01) / n
    variance = float(covariance[0, 0] + covariance[1, 1] - 2 * covariance[0, 1])
    difference = float(auc[1] - auc[0])
    if variance > 0:
        z = difference / np.sqrt(variance)
    else:  # identical rankings (or every pair perfectly ranked by both)
        z = 0.0 if difference == 0 else float(np.copysign(np.inf, difference))
    p = float(2 * stats.norm.sf(abs(z)))
    return DeLong(float(auc[0]), float(auc[1]), difference, variance, float(z), p)


def mcnemar_test(correct_a, correct_b) -> McNemar:
    """Exact McNemar test of equal accuracy on paired decisions: under the null the
    discordant pairs split as Binomial(b + c, 1/2), and p = min(1, 2 · P(X ≤ min(b, c)))."""
    correct_a = np.asarray(correct_a, dtype=bool)
    correct_b = np.asarray(correct_b, dtype=bool)
    only_a = int(np.count_nonzero(correct_a & ~correct_b))
    only_b = int(np.count_nonzero(~correct_a & correct_b))
    discordant = only_a + only_b
    if discordant == 0:
        return McNemar(only_a, only_b, 1.0)
    p = min(1.0, 2 * float(stats.binom.cdf(min(only_a, only_b), discordant, 0.5)))
    return McNemar(only_a, only_b, p)


def holm(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values of a flat list of tests (family-wise error rate);
    NaN entries stay NaN and are not counted as tests."""
    p = np.asarray(pvalues, dtype=float).reshape(-1)
    out = np.full_like(p, np.nan)
    tested = np.flatnonzero(~np.isnan(p))
    order = tested[np.argsort(p[tested], kind="stable")]
    m = len(order)
    adjusted = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out[order] = np.minimum(adjusted, 1.0)
    return out


def _extra_names(task: str, class_names: Sequence[str]) -> list[str]:
    """The per-class quantities compared beside ``metric_names``: ``auroc_<class>`` (not
    binary, whose AUROC is the positive class's) and, multi-label, ``accuracy_<label>``."""
    if task == "binary":
        return []
    names = [f"auroc_{c}" for c in class_names]
    if task == "multilabel":
        names += [f"accuracy_{c}" for c in class_names]
    return names


def _values(data: _Scored, rows: np.ndarray | None = None) -> np.ndarray:
    """``_scores`` followed by the ``_extra_names`` quantities on the given rows."""
    head = _scores(data, rows)
    if data.task == "binary":
        return head
    truth, chosen, keys = data.truth, data.chosen, data.keys
    if rows is not None:
        truth, chosen, keys = truth[rows], chosen[rows], keys[rows]
    parts = [head, _auroc(keys, truth, data.width)]
    if data.task == "multilabel":
        parts.append(
            (truth == chosen).mean(axis=0) if len(truth) else np.full(truth.shape[1], np.nan)
        )
    return np.concatenate(parts)


def paired_bootstrap(
    targets,
    probs_a,
    chosen_a,
    probs_b,
    chosen_b,
    task: str,
    class_names: Sequence[str],
    groups=None,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals of the differences B − A of every ``metric_values``
    metric and of ``auroc_<class>`` (multiclass, multilabel) and ``accuracy_<label>``
    (multilabel), both models scored on the same resample each time.

    Protocol as ``bootstrap_intervals``: ``np.random.default_rng(seed)`` draws whole groups
    (patients) with replacement when given, else images; the interval is
    ``np.nanpercentile`` of the differences (resamples where one is undefined left out).
    """
    if n_resamples < 0:
        raise ValueError(f"n_resamples must be 0 or more, got {n_resamples}")
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1 (e.g. 0.95), got {level}")
    data_a = _prepare(targets, probs_a, chosen_a, task, class_names)
    data_b = _prepare(targets, probs_b, chosen_b, task, class_names)
    names = metric_names(task, class_names) + _extra_names(task, class_names)
    if n_resamples == 0:
        return {}
    members, n_units = _unit_members(groups, len(data_a.truth))
    rng = np.random.default_rng(seed)
    differences = np.empty((n_resamples, len(names)))
    for i in range(n_resamples):
        rows = members(rng.integers(0, n_units, size=n_units))
        differences[i] = _values(data_b, rows) - _values(data_a, rows)
    quantiles = [100 * (1 - level) / 2, 100 * (1 + level) / 2]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        low, high = np.nanpercentile(differences, quantiles, axis=0)
    return {name: (float(lo), float(hi)) for name, lo, hi in zip(names, low, high, strict=True)}


def _truth(targets, task: str, k: int) -> np.ndarray:
    """Targets as an (N, K) boolean one-vs-rest matrix."""
    targets = np.asarray(targets)
    if task == "multilabel":
        return targets > 0.5
    return targets.astype(int)[:, None] == np.arange(k)


def _comparisons(targets, probs_a, chosen_a, probs_b, chosen_b, task, class_names):
    """(metric, class, test, (statistic, p)) per test: McNemar on accuracy (per label for
    multi-label), DeLong on each class's one-vs-rest AUROC (the positive class if binary)."""
    probs_a, probs_b = np.asarray(probs_a, float), np.asarray(probs_b, float)
    chosen_a, chosen_b = np.asarray(chosen_a, bool), np.asarray(chosen_b, bool)
    truth = _truth(targets, task, len(class_names))
    out = []
    if task == "multilabel":
        for k, name in enumerate(class_names):
            test = mcnemar_test(chosen_a[:, k] == truth[:, k], chosen_b[:, k] == truth[:, k])
            out.append(("accuracy", name, "mcnemar-exact", (test.only_b, test.p)))
    else:
        test = mcnemar_test((chosen_a & truth).any(axis=1), (chosen_b & truth).any(axis=1))
        out.append(("accuracy", "all", "mcnemar-exact", (test.only_b, test.p)))
    columns = [1] if task == "binary" else range(len(class_names))
    for k in columns:
        test = delong_test(truth[:, k], probs_a[:, k], probs_b[:, k])
        label = "all" if task == "binary" else class_names[k]
        out.append(("auroc", label, "delong", (test.z, test.p)))
    return out


def _rows(
    targets, probs_a, chosen_a, probs_b, chosen_b, task, class_names, names, intervals
) -> list[dict]:
    """The comparison rows of one pair of runs, without ``p_holm``."""
    data_a = _prepare(targets, probs_a, chosen_a, task, class_names)
    data_b = _prepare(targets, probs_b, chosen_b, task, class_names)
    keys = metric_names(task, class_names) + _extra_names(task, class_names)
    value_a = dict(zip(keys, _values(data_a).tolist(), strict=True))
    value_b = dict(zip(keys, _values(data_b).tolist(), strict=True))
    tests = {
        (metric, label): (test, result)
        for metric, label, test, result in _comparisons(
            targets, probs_a, chosen_a, probs_b, chosen_b, task, class_names
        )
    }
    wanted = [(m, "all") for m in HEADLINE] + [(m, c) for m, c in tests if c != "all"]
    rows = []
    for metric, label in wanted:
        key = metric if label == "all" else f"{metric}_{label}"
        test, (statistic, p) = tests.get((metric, label), ("none", (np.nan, np.nan)))
        low, high = intervals.get(key, (np.nan, np.nan))
        rows.append(
            {
                "model_a": names[0],
                "model_b": names[1],
                "metric": metric,
                "class": label,
                "value_a": value_a[key],
                "value_b": value_b[key],
                "difference": value_b[key] - value_a[key],
                "ci_low": low,
                "ci_high": high,
                "test": test,
                "statistic": float(statistic),
                "p": float(p),
            }
        )
    return rows


def compare_models(
    targets,
    runs: Mapping[str, tuple],
    task: str,
    class_names: Sequence[str],
    baseline: str | None = None,
    groups=None,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> pd.DataFrame:
    """Every run of ``runs`` (name → (probs, chosen) on the same test samples, in the same
    order) compared with ``baseline`` (default: the first run): a tidy table of ``COLUMNS``.

    One row per headline metric (class "all": accuracy, precision, recall, f1, auroc as
    ``metric_values`` logs them) and per tested class: ``auroc`` of each class one-vs-rest
    (multiclass, multilabel) and ``accuracy`` of each label (multilabel). ``difference`` is
    B − A with its paired bootstrap interval (``paired_bootstrap``; NaN with
    ``n_resamples=0``); ``test`` is "delong" (statistic z), "mcnemar-exact" (statistic: the
    pairs only B got right) or "none"; ``p_holm`` is Holm-corrected over every test in the
    table.
    """
    if not runs:
        raise ConfigError("compare_models needs at least two runs, got none")
    baseline = next(iter(runs)) if baseline is None else baseline
    if baseline not in runs:
        raise ConfigError(f"baseline {baseline!r} is not among the runs {list(runs)}")
    if len(runs) < 2:
        raise ConfigError(f"compare_models needs a run besides the baseline {baseline!r}")
    probs_a, chosen_a = runs[baseline]
    rows = []
    for name, (probs_b, chosen_b) in runs.items():
        if name == baseline:
            continue
        intervals = paired_bootstrap(
            targets,
            probs_a,
            chosen_a,
            probs_b,
            chosen_b,
            task,
            class_names,
            groups,
            n_resamples,
            seed,
            level,
        )
        rows += _rows(
            targets,
            probs_a,
            chosen_a,
            probs_b,
            chosen_b,
            task,
            class_names,
            (baseline, name),
            intervals,
        )
    table = pd.DataFrame(rows)
    table["p_holm"] = holm(table["p"].to_numpy())
    return table[list(COLUMNS)]


def comparison_figure(table: pd.DataFrame, metrics: Sequence[str] | None = None) -> plt.Figure:
    """Forest plot of a ``compare_models`` table: the difference B − A and its interval, one
    row per compared run, metric and class (top to bottom in table order), a dashed line at
    no difference, and Holm-corrected p-values at the right where a test was made."""
    if metrics is not None:
        unknown = sorted(set(metrics) - set(table["metric"]))
        if unknown:
            raise ConfigError(
                f"metrics {unknown} are not in the comparison table; it has "
                f"{', '.join(dict.fromkeys(table['metric']))}"
            )
        table = table[table["metric"].isin(metrics)]
    rows = table.reset_index(drop=True)
    y = np.arange(len(rows))[::-1]
    value = rows["difference"].to_numpy(dtype=float)
    spread = np.vstack([value - rows["ci_low"].to_numpy(float), rows["ci_high"] - value])
    fig, ax = plt.subplots(figsize=(8, max(2.5, 0.35 * len(rows) + 1.5)))
    ax.errorbar(value, y, xerr=np.where(np.isnan(spread), 0, spread), fmt="o", capsize=3)
    ax.axvline(0.0, color="grey", linestyle="--", linewidth=1)
    labels = [
        f"{b} − {a}: {metric}" + ("" if label == "all" else f" [{label}]")
        for a, b, metric, label in rows[["model_a", "model_b", "metric", "class"]].to_numpy()
    ]
    transform = ax.get_yaxis_transform()
    for row_y, p in zip(y, rows["p_holm"], strict=True):
        if np.isfinite(p):
            ax.text(1.01, row_y, f"p={p:.3g}", transform=transform, va="center", fontsize=7)
    ax.set(yticks=y, yticklabels=labels, xlabel="difference (B − A)")
    ax.set_title("Paired differences with bootstrap intervals (Holm-corrected p)")
    ax.set_ylim(-0.75, len(rows) - 0.25)
    fig.tight_layout()
    return fig
