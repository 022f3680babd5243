"""Conformal prediction sets: coverage 1 − α over 200 random calibration/test splits (LAC,
APS, randomized APS; per class with Mondrian on a 1:10 imbalance), the same sets as crepes
and MAPIE, a JSON-safe state, and multi-label yes/no/unsure decisions.

Deliberate differences from the libraries: crepes includes a class when its p-value equals
α (``p >= 1 − confidence``), we exclude it as split conformal's ⌈(n + 1)(1 − α)⌉-th score
does, so the sets differ only where (n + 1)α is a whole number (there ours are subsets);
MAPIE's APS always randomizes its calibration scores (ours only with ``randomized=True``,
from another generator), so APS is compared with crepes fed our scores' definition."""

from __future__ import annotations

import json

import numpy as np
import pytest
from crepes import ConformalClassifier
from crepes.extras import hinge
from mapie.classification import SplitConformalClassifier
from sklearn.base import BaseEstimator, ClassifierMixin

from medclf.errors import ConfigError
from medclf.evaluation.conformal import (
    abstains,
    coverage_table,
    fit,
    label_decisions,
    predict_sets,
)

SPLITS = 200


def softmax_data(rng, splits: int, n: int, priors, signal: float = 1.5):
    """(probs (splits, n, K), targets (splits, n)): informative, prior-weighted softmax."""
    priors = np.asarray(priors, dtype=float) / np.sum(priors)
    k = len(priors)
    targets = rng.choice(k, size=(splits, n), p=priors)
    logits = rng.normal(size=(splits, n, k)) + signal * np.eye(k)[targets] + np.log(priors)
    probs = np.exp(logits)
    return probs / probs.sum(-1, keepdims=True), targets


def coverage_by_class(split_data, half: int, alpha: float, **options) -> np.ndarray:
    """Mean coverage over the splits, overall then per true class, fitting on the first
    ``half`` images of each split and testing on the rest."""
    probs, targets = split_data
    k = probs.shape[-1]
    hits = np.zeros((len(probs), k + 1))
    for s in range(len(probs)):
        state = fit(probs[s, :half], targets[s, :half], "multiclass", alpha, **options)
        sets = predict_sets(probs[s, half:], state)
        y = targets[s, half:]
        hit = sets[np.arange(len(y)), y]
        hits[s] = [hit.mean(), *(hit[y == c].mean() for c in range(k))]
    return hits.mean(axis=0)


@pytest.mark.parametrize(
    "options",
    [{"score": "lac"}, {"score": "aps"}, {"score": "aps", "randomized": True, "seed": 3}],
    ids=["lac", "aps", "aps-randomized"],
)
def test_mean_coverage_is_1_minus_alpha(options: dict) -> None:
    data = softmax_data(np.random.default_rng(0), SPLITS, 2000, np.ones(4))
    for alpha in (0.05, 0.1, 0.2):
        coverage = coverage_by_class(data, 1000, alpha, **options)[0]
        assert coverage == pytest.approx(1 - alpha, abs=0.01), alpha


def test_mondrian_covers_each_class_of_an_imbalanced_problem() -> None:
    """Classes 10 : 10 : 1; the pooled threshold leaves the rare class mostly uncovered."""
    data = softmax_data(np.random.default_rng(1), SPLITS, 8000, [10, 10, 1])
    pooled = coverage_by_class(data, 4000, 0.1, score="lac")
    assert pooled[0] == pytest.approx(0.9, abs=0.01) and pooled[3] < 0.5
    for options in ({"score": "lac"}, {"score": "aps", "randomized": True}):
        per_class = coverage_by_class(data, 4000, 0.1, mondrian=True, **options)[1:]
        assert per_class == pytest.approx([0.9] * 3, abs=0.01), options
    deterministic_aps = coverage_by_class(data, 4000, 0.1, score="aps", mondrian=True)[1:]
    assert (deterministic_aps >= 0.89).all()  # valid, conservative where scores tie at 1


class GivenProbabilities(ClassifierMixin, BaseEstimator):
    """A fitted scikit-learn classifier whose features are its own probabilities."""

    def __init__(self, k: int = 4) -> None:
        self.k = k

    def fit(self, x, y):
        return self

    def __sklearn_is_fitted__(self) -> bool:
        return True

    @property
    def classes_(self) -> np.ndarray:
        return np.arange(self.k)

    def predict_proba(self, x) -> np.ndarray:
        return np.asarray(x)

    def predict(self, x) -> np.ndarray:
        return np.asarray(x).argmax(axis=1)


def aps_scores_by_loop(probs: np.ndarray) -> np.ndarray:
    """APS from its definition: the probabilities of the classes at least as probable as y
    (ties: the earlier class first), summed."""
    out = np.zeros_like(probs)
    for i, row in enumerate(probs):
        for y, p in enumerate(row):
            ahead = [q for j, q in enumerate(row) if q > p or (q == p and j < y)]
            out[i, y] = sum(ahead) + p
    return out


def test_sets_equal_crepes_and_mapie() -> None:
    probs, targets = (a[0] for a in softmax_data(np.random.default_rng(6), 1, 1600, np.ones(4)))
    cal, test, y_cal, alpha = probs[:1000], probs[1000:], targets[:1000], 0.1
    assert ((np.bincount(y_cal) + 1) % 10 != 0).all()  # no class at crepes' boundary
    classes = np.arange(4)

    lac = predict_sets(test, fit(cal, y_cal, "multiclass", alpha, "lac"))
    crepes = ConformalClassifier().fit(hinge(cal, classes, y_cal))
    expected = crepes.predict_set(hinge(test), confidence=1 - alpha, smoothing=False)
    assert np.array_equal(lac, expected.astype(bool))
    mapie = SplitConformalClassifier(GivenProbabilities(4), confidence_level=1 - alpha)
    mapie.conformalize(cal, y_cal)
    assert np.array_equal(lac, mapie.predict_set(test)[1][:, :, 0])
    assert 1.2 < lac.sum(1).mean() < 3  # informative sets, not trivially all or one

    mondrian = predict_sets(test, fit(cal, y_cal, "multiclass", alpha, "lac", mondrian=True))
    crepes = ConformalClassifier().fit(hinge(cal, classes, y_cal), bins=y_cal)
    for c in classes:
        column = crepes.predict_set(
            hinge(test)[:, [c]], bins=np.full(len(test), c), confidence=0.9, smoothing=False
        )
        assert np.array_equal(mondrian[:, c], column[:, 0].astype(bool))

    aps = predict_sets(test, fit(cal, y_cal, "multiclass", alpha, "aps"))
    truth_scores = aps_scores_by_loop(cal)[np.arange(1000), y_cal]
    crepes = ConformalClassifier().fit(truth_scores)
    expected = crepes.predict_set(aps_scores_by_loop(test), confidence=0.9, smoothing=False)
    assert np.array_equal(aps, expected.astype(bool))
    assert not np.array_equal(aps, lac)

    # (n + 1)α whole (999 + 1) · 0.1 = 100: crepes keeps the boundary class, we do not
    boundary = predict_sets(test, fit(cal[:999], y_cal[:999], "multiclass", alpha, "lac"))
    crepes = ConformalClassifier().fit(hinge(cal[:999], classes, y_cal[:999]))
    wider = crepes.predict_set(hinge(test), confidence=0.9, smoothing=False).astype(bool)
    assert (boundary <= wider).all() and (boundary != wider).any()


def test_state_is_plain_json_and_small_calibration_is_unbounded() -> None:
    probs, targets = (a[0] for a in softmax_data(np.random.default_rng(3), 1, 300, [5, 5, 1]))
    state = fit(probs[:150], targets[:150], "multiclass", 0.05, "aps", mondrian=True)
    restored = json.loads(json.dumps(state, allow_nan=False))
    assert restored == state
    assert np.array_equal(predict_sets(probs[150:], restored), predict_sets(probs[150:], state))
    rare = int(np.argmin(state["n_calibration"][0]))
    assert state["n_calibration"][0][rare] < 19  # too few for 1 − 0.05
    assert state["thresholds"][0][rare] is None
    assert predict_sets(probs[150:], state)[:, rare].all()
    with pytest.raises(ConfigError, match="randomized"):
        fit(probs, targets, "multiclass", 0.1, "lac", randomized=True)
    with pytest.raises(ConfigError, match="alpha"):
        fit(probs, targets, "multiclass", 1.5)


def test_binary_and_randomized_sets_are_reproducible() -> None:
    probs, targets = (a[0] for a in softmax_data(np.random.default_rng(4), 1, 600, [3, 1]))
    state = fit(probs[:300], targets[:300], "binary", 0.1, "aps", randomized=True, seed=7)
    first = predict_sets(probs[300:], state)
    assert np.array_equal(first, predict_sets(probs[300:], state))
    other = fit(probs[:300], targets[:300], "binary", 0.1, "aps", randomized=True, seed=8)
    assert not np.array_equal(first, predict_sets(probs[300:], other))
    assert first.shape == (300, 2)


def test_multilabel_decisions_and_per_label_coverage() -> None:
    rng = np.random.default_rng(5)
    shape = (SPLITS, 1200, 3)
    targets = (rng.random(shape) < [0.1, 0.3, 0.6]).astype(int)
    probs = 1 / (1 + np.exp(-(rng.normal(size=shape) + 2.0 * (targets - 0.5))))
    hits = np.zeros((SPLITS, 3))
    for s in range(SPLITS):
        state = fit(probs[s, :600], targets[s, :600], "multilabel", 0.1, "lac")
        sets = predict_sets(probs[s, 600:], state)
        truth = targets[s, 600:]
        hits[s] = np.take_along_axis(sets, truth[..., None], axis=2)[..., 0].mean(axis=0)
    assert hits.mean(axis=0) == pytest.approx([0.9] * 3, abs=0.01)

    assert sets.shape == (600, 3, 2)
    decisions = label_decisions(sets)
    assert set(np.unique(decisions)) <= {"yes", "no", "unsure"}
    assert np.array_equal(decisions == "yes", sets[..., 1] & ~sets[..., 0])
    assert np.array_equal(decisions == "no", sets[..., 0] & ~sets[..., 1])
    assert np.array_equal(abstains(sets, "multilabel"), (decisions == "unsure").any(axis=1))
    p = probs[-1, 600:]
    assert (decisions[p > 0.99] == "yes").all() and (decisions[p < 0.01] == "no").all()

    table = coverage_table(sets, truth, "multilabel", ["a", "b", "c"])
    assert table["class"].tolist() == ["all", "a", "b", "c"]
    assert table["coverage"].iloc[1:].to_numpy() == pytest.approx(hits[-1])
    assert table["abstain"].iloc[0] == pytest.approx(abstains(sets, "multilabel").mean())


def test_coverage_table_multiclass() -> None:
    sets = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 1], [0, 1, 0], [0, 0, 0]], dtype=bool)
    targets = np.array([0, 1, 2, 2, 0])
    table = coverage_table(sets, targets, "multiclass", ["x", "y", "z"]).set_index("class")
    assert table.loc["all"].tolist() == pytest.approx([5, 3 / 5, 5 / 5, 2 / 5])
    assert table.loc["x"].tolist() == pytest.approx([2, 1 / 2, 1 / 2, 1 / 2])
    assert table.loc["y"].tolist() == pytest.approx([1, 1, 2, 1])
    assert table.loc["z"].tolist() == pytest.approx([2, 1 / 2, 1, 0])
    assert abstains(sets, "multiclass").tolist() == [False, True, False, False, True]
