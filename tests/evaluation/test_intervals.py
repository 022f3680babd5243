"""Bootstrap intervals: metric values equal scikit-learn's, the resampling protocol equals an
independent re-implementation, and resampling patients widens intervals on clustered data."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    precision_recall_fscore_support,
    recall_score,
    roc_auc_score,
)

from medclf.evaluation.intervals import bootstrap_intervals, metric_names, metric_values

TASKS = ("multiclass", "binary", "multilabel")


def make_data(task: str, n: int = 120, seed: int = 0, ties: bool = True):
    """(targets, probs, chosen, class_names): informative random scores, rounded to 1
    decimal (many ties) unless ``ties`` is False; multiclass class 4 is never the target and
    class 3 never predicted; multilabel label 3 is never present nor predicted."""
    rng = np.random.default_rng(seed)
    if task == "binary":
        targets = rng.integers(0, 2, n)
        p = np.clip(0.3 * targets + rng.random(n) * 0.7, 0, 1)
        p = np.round(p, 1) if ties else p
        probs = np.stack([1 - p, p], axis=1)
        return targets, probs, np.stack([p < 0.5, p >= 0.5], axis=1), ["negative", "positive"]
    k = 5 if task == "multiclass" else 4
    names = [f"class_{i}" for i in range(k)]
    if task == "multiclass":
        targets = rng.integers(0, 4, n)
        logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[targets]
        logits[:, 3] -= 10
        probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        probs = np.round(probs, 1) if ties else probs
        chosen = np.eye(k, dtype=bool)[np.argmax(logits, axis=1)]
        return targets, probs, chosen, names
    targets = (rng.random((n, k)) < 0.4).astype(int)
    targets[:, 3] = 0
    probs = np.clip(0.4 * targets + 0.6 * rng.random((n, k)), 0, 1)
    probs[:, 3] = 0.1 * rng.random(n)
    probs = np.round(probs, 1) if ties else probs
    return targets, probs, probs >= 0.5, names


def one_vs_rest(targets: np.ndarray, task: str, k: int) -> np.ndarray:
    return targets.astype(bool) if task == "multilabel" else np.eye(k, dtype=bool)[targets]


def sklearn_auroc(targets, probs, task) -> float:
    """Mean one-vs-rest roc_auc_score over the classes with both kinds of label (binary: the
    positive class); NaN when none has."""
    if task == "binary":
        return roc_auc_score(targets, probs[:, 1]) if len(set(targets)) == 2 else np.nan
    truth = one_vs_rest(targets, task, probs.shape[1])
    scores = [
        roc_auc_score(truth[:, i], probs[:, i])
        for i in range(probs.shape[1])
        if 0 < truth[:, i].sum() < len(truth)
    ]
    return float(np.mean(scores)) if scores else np.nan


def sklearn_metrics(targets, probs, chosen, task, names, per_class=True) -> dict[str, float]:
    """The oracle: metric_values' metrics computed with scikit-learn (without the per-class
    ones unless ``per_class``)."""
    k = len(names)
    if task == "multilabel":
        y, p = targets, chosen.astype(int)
        accuracy = accuracy_score(y.ravel(), p.ravel())
        average = "macro"
    else:
        y, p = targets, np.argmax(chosen, axis=1)
        accuracy = accuracy_score(y, p)
        average = "binary" if task == "binary" else "macro"
    precision, recall, f1, _ = precision_recall_fscore_support(
        y, p, average=average, zero_division=0
    )
    values = {
        "accuracy": accuracy,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "auroc": sklearn_auroc(targets, probs, task),
    }
    if not per_class:
        return values
    truth = one_vs_rest(targets, task, k)
    _, sensitivity, per_class_f1, _ = precision_recall_fscore_support(
        truth, chosen, average=None, zero_division=0
    )
    _, specificity, _, _ = precision_recall_fscore_support(
        ~truth, ~chosen, average=None, zero_division=0
    )
    for i, name in enumerate(names):
        values[f"sensitivity_{name}"] = sensitivity[i]
        values[f"specificity_{name}"] = specificity[i]
        values[f"f1_{name}"] = per_class_f1[i]
    return values


def test_per_class_oracle_agrees_with_binary_scores() -> None:
    """The vectorised per-class oracle above equals scikit-learn's one-class scores."""
    targets, probs, chosen, names = make_data("multiclass")
    expected = sklearn_metrics(targets, probs, chosen, "multiclass", names)
    truth = one_vs_rest(targets, "multiclass", len(names))
    for i, name in enumerate(names):
        t, c = truth[:, i], chosen[:, i]
        assert expected[f"sensitivity_{name}"] == recall_score(t, c, zero_division=0)
        assert expected[f"specificity_{name}"] == recall_score(~t, ~c, zero_division=0)
        assert expected[f"f1_{name}"] == f1_score(t, c, zero_division=0)


@pytest.mark.parametrize("ties", [True, False])
@pytest.mark.parametrize("task", TASKS)
def test_metric_values_equal_sklearn(task: str, ties: bool) -> None:
    targets, probs, chosen, names = make_data(task, ties=ties)
    values = metric_values(targets, probs, chosen, task, names)
    expected = sklearn_metrics(targets, probs, chosen, task, names)
    assert list(values) == metric_names(task, names)
    assert set(values) == set(expected)
    for name, value in expected.items():
        assert values[name] == pytest.approx(value, abs=1e-12, nan_ok=True), name
    assert 0.5 < values["auroc"] < 1


def test_multiclass_auroc_equals_sklearn_ovr_macro() -> None:
    """With every class present, the macro AUROC is scikit-learn's one-vs-rest macro."""
    rng = np.random.default_rng(3)
    targets = np.arange(200) % 4
    logits = rng.normal(size=(200, 4)) + np.eye(4)[targets]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    chosen = np.eye(4, dtype=bool)[probs.argmax(1)]
    value = metric_values(targets, probs, chosen, "multiclass", list("abcd"))["auroc"]
    expected = roc_auc_score(targets, probs, multi_class="ovr", average="macro")
    assert value == pytest.approx(expected, abs=1e-12)


def test_undefined_auroc_is_nan_and_left_out_of_the_mean() -> None:
    targets = np.array([0, 0, 1, 1])
    probs = np.array([[0.2, 0.9], [0.6, 0.1], [0.7, 0.8], [0.3, 0.2]])
    labels = np.stack([targets, np.zeros(4, dtype=int)], axis=1)  # label "b" never present
    values = metric_values(labels, probs, probs >= 0.5, "multilabel", ["a", "b"])
    assert values["auroc"] == pytest.approx(roc_auc_score(targets, probs[:, 0]), abs=1e-12)
    only_one = metric_values(labels * 0, probs, probs >= 0.5, "multilabel", ["a", "b"])
    assert np.isnan(only_one["auroc"])
    binary = np.stack([1 - probs[:, 0], probs[:, 0]], axis=1)
    negatives = metric_values(np.zeros(4, int), binary, binary >= 0.5, "binary", ["n", "p"])
    assert np.isnan(negatives["auroc"])
    assert negatives["recall"] == 0 and negatives["f1"] == 0


def reference_bootstrap(targets, probs, chosen, task, names, groups, n_resamples, seed, level):
    """The documented protocol written out plainly, with scikit-learn's headline metrics."""
    rng = np.random.default_rng(seed)
    _, inverse = np.unique(groups, return_inverse=True)
    n_units = inverse.max() + 1
    values: dict[str, list[float]] = {}
    for _ in range(n_resamples):
        drawn = rng.integers(0, n_units, size=n_units)
        rows = np.concatenate([np.flatnonzero(inverse == unit) for unit in drawn])
        resample = (targets[rows], probs[rows], chosen[rows], task, names)
        for name, value in sklearn_metrics(*resample, per_class=False).items():
            values.setdefault(name, []).append(value)
    quantiles = [100 * (1 - level) / 2, 100 * (1 + level) / 2]
    out = {}
    for name, series in values.items():
        defined = [v for v in series if not np.isnan(v)]
        out[name] = tuple(np.percentile(defined, quantiles)) if defined else (np.nan, np.nan)
    return out


@pytest.mark.parametrize("task", TASKS)
def test_bootstrap_equals_a_plain_reimplementation(task: str) -> None:
    targets, probs, chosen, names = make_data(task, n=60, seed=1)
    groups = np.array([f"patient_{i % 17:02d}" for i in range(60)])
    args = (targets, probs, chosen, task, names)
    intervals = bootstrap_intervals(*args, groups=groups, n_resamples=80, seed=7, level=0.9)
    expected = reference_bootstrap(*args, groups, n_resamples=80, seed=7, level=0.9)
    assert set(intervals) == set(metric_names(task, names))
    assert set(expected) == {"accuracy", "precision", "recall", "f1", "auroc"}
    for name in expected:
        assert intervals[name] == pytest.approx(expected[name], abs=1e-9, nan_ok=True), name
    low, high = intervals["accuracy"]
    point = metric_values(*args)["accuracy"]
    assert low < point < high


def test_resampling_patients_widens_the_interval_on_clustered_data() -> None:
    """40 patients x 5 images, each patient's images alike: 200 images hold the information
    of 40 patients, and only resampling patients shows it."""
    rng = np.random.default_rng(2)
    patient_target = rng.integers(0, 2, 40)
    patient_correct = rng.random(40) < 0.7
    patient_p = np.where(patient_correct == patient_target.astype(bool), 0.8, 0.2)
    targets, p = np.repeat(patient_target, 5), np.repeat(patient_p, 5)
    probs = np.stack([1 - p, p], axis=1)
    chosen = np.stack([p < 0.5, p >= 0.5], axis=1)
    args = (targets, probs, chosen, "binary", ["negative", "positive"])
    by_image = bootstrap_intervals(*args, n_resamples=500)
    by_patient = bootstrap_intervals(*args, groups=np.repeat(np.arange(40), 5), n_resamples=500)
    image_width = by_image["accuracy"][1] - by_image["accuracy"][0]
    patient_width = by_patient["accuracy"][1] - by_patient["accuracy"][0]
    assert patient_width > 1.5 * image_width


def test_same_seed_same_intervals_and_zero_resamples() -> None:
    targets, probs, chosen, names = make_data("multiclass")
    args = (targets, probs, chosen, "multiclass", names)
    first = bootstrap_intervals(*args, n_resamples=50, seed=3)
    assert first == bootstrap_intervals(*args, n_resamples=50, seed=3)
    assert first != bootstrap_intervals(*args, n_resamples=50, seed=4)
    assert bootstrap_intervals(*args, n_resamples=0) == {}


def test_a_metric_never_defined_has_a_nan_interval() -> None:
    p = np.linspace(0, 1, 30)
    probs = np.stack([1 - p, p], axis=1)
    args = (np.zeros(30, dtype=int), probs, probs >= 0.5, "binary", ["negative", "positive"])
    intervals = bootstrap_intervals(*args, n_resamples=20)
    assert np.isnan(intervals["auroc"]).all()
    assert not np.isnan(intervals["accuracy"]).any()
