"""The stacking metalearners (medclf.inference.metalearners) on generated member outputs: the
logistic one is scikit-learn's LogisticRegression, stacking beats members that err on
different halves, every metalearner answers for every task, the stored form refits to the
same answers (and refuses one that does not), and the exported torch heads equal
scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medclf.errors import ConfigError, DataError
from medclf.inference.metalearners import (
    METALEARNERS,
    cross_validated,
    features,
    fit_metalearner,
    from_state,
)

NAMES = ["a", "b", "c"]


def two_experts(n: int, rng: np.random.Generator) -> tuple[np.ndarray, list[np.ndarray]]:
    """Three classes; member 0 is right on a random half of the samples (and guesses on the
    others), member 1 on the other half. A sample's half shows in how sure member 0 is."""
    y = rng.integers(0, 3, n)
    first = rng.random(n) < 0.5
    members = []
    for expert_half in (first, ~first):
        probs = rng.dirichlet(np.ones(3), n)  # a guess
        sure = np.full((n, 3), 0.05)
        sure[np.arange(n), y] = 0.9
        members.append(np.where(expert_half[:, None], sure, probs))
    return y, members


def test_logistic_stacking_is_sklearns_logistic_regression() -> None:
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    y, members = two_experts(120, rng)
    X = features(members)
    meta = fit_metalearner("logistic", X, y, np.arange(120), "multiclass", NAMES, 2)
    oracle = LogisticRegression(max_iter=1000).fit(X, y)
    new = features([rng.dirichlet(np.ones(3), 30) for _ in range(2)])
    assert meta.predict_proba(new) == pytest.approx(oracle.predict_proba(new), abs=1e-12)
    assert X[:, :3] == pytest.approx(members[0]) and X[:, 3:] == pytest.approx(members[1])


@pytest.mark.parametrize("name", ["logistic", "random_forest", "knn"])
def test_stacking_beats_members_that_err_on_different_halves(name: str) -> None:
    rng = np.random.default_rng(1)
    y, members = two_experts(400, rng)
    train, test = np.arange(300), np.arange(300, 400)
    meta = fit_metalearner(
        name, features([m[train] for m in members]), y[train], train, "multiclass", NAMES, 2
    )
    stacked = meta.predict_proba(features([m[test] for m in members])).argmax(1)
    accuracy = (stacked == y[test]).mean()
    each = [(m[test].argmax(1) == y[test]).mean() for m in members]
    assert accuracy > max(each) + 0.15, (accuracy, each)


@pytest.mark.parametrize("task", ["multiclass", "binary", "multilabel"])
def test_every_metalearner_answers_and_refits_from_its_stored_rows(task: str) -> None:
    rng = np.random.default_rng(2)
    k = 2 if task == "binary" else 3
    n = 60
    y = (rng.random((n, k)) > 0.5).astype(int) if task == "multilabel" else rng.integers(0, k, n)
    X = features([rng.dirichlet(np.ones(k), n) for _ in range(2)])  # two members' outputs
    if task == "multilabel":
        X = rng.random((n, 2 * k))
    for name in METALEARNERS:
        if name in ("random_forest", "gradient_boosting") and task != "multiclass":
            continue  # trees: covered above and in multiclass; they take seconds each
        meta = fit_metalearner(name, X, y, np.arange(n), task, NAMES[:k], 2, seed=3)
        probs = meta.predict_proba(X)
        assert probs.shape == (n, k) and np.isfinite(probs).all()
        if task != "multilabel":
            assert probs.sum(1) == pytest.approx(1.0)
        spec, arrays = meta.state()
        assert from_state(spec, arrays).predict_proba(X) == pytest.approx(probs, abs=1e-12)
        if name in ("logistic", "weighted_mean"):  # out-of-fold: each row from a copy without it
            held = cross_validated(meta)
            assert held.shape == (n, k) and not np.allclose(held, probs)


def test_a_stored_metalearner_that_refits_differently_is_refused() -> None:
    rng = np.random.default_rng(4)
    y, members = two_experts(80, rng)
    meta = fit_metalearner("logistic", features(members), y, np.arange(80), "multiclass", NAMES, 2)
    spec, arrays = meta.state()
    arrays["fitted"] = arrays["fitted"] + 1e-3  # another scikit-learn would answer so
    with pytest.raises(DataError, match="differs from the stored one"):
        from_state(spec, arrays)


def test_unknown_metalearner_and_one_class_are_user_errors() -> None:
    X = np.random.default_rng(5).random((20, 6))
    with pytest.raises(ConfigError, match="logistic"):
        fit_metalearner("logistc", X, np.zeros(20, int), np.arange(20), "multiclass", NAMES, 2)
    with pytest.raises(DataError, match="one class only"):
        fit_metalearner("logistic", X, np.zeros(20, int), np.arange(20), "multiclass", NAMES, 2)


@pytest.mark.parametrize("task", ["multiclass", "binary", "multilabel"])
def test_exported_heads_equal_scikit_learn(task: str) -> None:
    from medclf.inference.export_stack import EXPORTABLE, torch_head

    rng = np.random.default_rng(6)
    k = 2 if task == "binary" else 3
    y = (rng.random((80, k)) > 0.5).astype(int) if task == "multilabel" else rng.integers(0, k, 80)
    X = rng.random((80, 2 * k))
    for name in EXPORTABLE:
        meta = fit_metalearner(name, X, y, np.arange(80), task, NAMES[:k], 2)
        head = torch_head(meta)(torch.as_tensor(X, dtype=torch.float32)).numpy()
        assert head == pytest.approx(meta.predict_proba(X), abs=1e-5)
    meta = fit_metalearner("knn", X, y, np.arange(80), task, NAMES[:k], 2)
    with pytest.raises(ConfigError, match="metalearner=knn has no ONNX"):
        torch_head(meta)
