"""Likely label errors by confident learning: flipped labels found from out-of-fold
probabilities, cleanlab's own ranking kept, binary and multi-label inputs, bad input named."""

from __future__ import annotations

import numpy as np
import pytest
from audit_synthetic import single_blas_thread

from medclf.audit.labels import label_issues
from medclf.errors import ConfigError, DataError

one_blas_thread = pytest.fixture(autouse=True, scope="module")(single_blas_thread)


@pytest.fixture(scope="module")
def flipped():
    """1,000 learnable samples in 3 classes, 5 % of the labels flipped, and out-of-fold
    probabilities of a logistic regression (5-fold cross_val_predict)."""
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict

    x, y = make_classification(
        n_samples=1000,
        n_features=10,
        n_informative=6,
        n_classes=3,
        n_clusters_per_class=1,
        class_sep=2.0,
        random_state=3,
    )
    rng = np.random.default_rng(3)
    flips = rng.choice(len(y), 50, replace=False)
    noisy = y.copy()
    noisy[flips] = (y[flips] + rng.integers(1, 3, len(flips))) % 3
    probs = cross_val_predict(
        LogisticRegression(max_iter=1000), x, noisy, cv=5, method="predict_proba"
    )
    return noisy, probs, set(flips.tolist()), y


def test_flipped_labels_are_found(flipped) -> None:
    noisy, probs, flips, truth = flipped
    table = label_issues(noisy, probs, class_names=["a", "b", "c"])
    found = set(table.loc[table["flagged"], "index"].tolist())
    true_positives = len(found & flips)
    assert true_positives / len(found) >= 0.7  # precision
    assert true_positives / len(flips) >= 0.6  # recall
    assert len(table) == len(noisy) and table["flagged"].iloc[: len(found)].all()
    # a found flip's suggestion is mostly its true class
    hits = table[table["index"].isin(flips) & table["flagged"]]
    assert (hits["suggested"].to_numpy() == truth[hits["index"]]).mean() >= 0.8
    assert set(hits["given_name"]) <= {"a", "b", "c"}
    rest = table[~table["flagged"]]["quality"].to_numpy()
    assert (np.diff(rest) >= 0).all()  # the unflagged follow, lowest quality first


def test_the_ranking_is_cleanlabs_own() -> None:
    from cleanlab.filter import find_label_issues

    rng = np.random.default_rng(7)
    labels = np.repeat([0, 1, 2], 7)[:20]
    probs = rng.dirichlet([1.0, 1.0, 1.0], size=20)
    probs[np.arange(20), labels] += 1.5
    probs /= probs.sum(axis=1, keepdims=True)
    probs[[3, 11, 17]] = probs[[3, 11, 17]][:, [2, 0, 1]]  # three confidently other classes
    expected = find_label_issues(
        labels, probs, return_indices_ranked_by="self_confidence", n_jobs=1
    )
    table = label_issues(labels, probs)
    assert len(expected) >= 2
    assert table.loc[table["flagged"], "index"].tolist() == list(expected)
    assert len({3, 11, 17} & set(expected.tolist())) >= 2  # most planted errors among them


def test_binary_probabilities_of_the_positive_class(flipped) -> None:
    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(60, int), np.ones(60, int)]
    positive = np.clip(labels * 0.8 + 0.1 + rng.normal(0, 0.05, 120), 0.01, 0.99)
    positive[[5, 70]] = [0.97, 0.02]  # a confident 1 labelled 0, and the reverse
    one_column = label_issues(labels, positive, task="binary")
    two_columns = label_issues(labels, np.c_[1 - positive, positive], task="binary")
    assert one_column.equals(two_columns)
    assert set(one_column.loc[one_column["flagged"], "index"]) >= {5, 70}


def test_multilabel() -> None:
    rng = np.random.default_rng(0)
    labels = (rng.random((300, 3)) < 0.4).astype(int)
    probs = np.clip(labels * 0.8 + 0.1 + rng.normal(0, 0.05, labels.shape), 0, 1)
    given = labels.copy()
    given[:10, 0] = 1 - given[:10, 0]
    table = label_issues(given, probs, task="multilabel", class_names=["x", "y", "z"])
    flagged = set(table.loc[table["flagged"], "index"].tolist())
    assert len(flagged & set(range(10))) >= 8 and len(flagged - set(range(10))) <= 3
    row = table.set_index("index").loc[0]
    assert row["given"] == tuple(np.flatnonzero(given[0]))
    assert row["suggested"] == tuple(np.flatnonzero(labels[0]))
    assert row["suggested_name"] == ";".join(np.array(["x", "y", "z"])[labels[0] == 1])


def test_bad_input_is_named() -> None:
    labels = np.array([0, 1, 0, 1])
    with pytest.raises(DataError, match="not logits"):
        label_issues(labels, np.array([[2.0, -1.0]] * 4))
    with pytest.raises(DataError, match="do not sum to 1.*task=multilabel"):
        label_issues(labels, np.full((4, 2), 0.7))
    with pytest.raises(DataError, match=r"do not match 4 labels"):
        label_issues(labels, np.full((3, 2), 0.5))
    with pytest.raises(DataError, match=r"class indices 0\.\.1"):
        label_issues(np.array([0, 1, 2, 1]), np.full((4, 2), 0.5))
    with pytest.raises(DataError, match=r"class indices 0\.\.1"):
        label_issues(np.array(["cat", "dog", "cat", "dog"], dtype=object), np.full((4, 2), 0.5))
    with pytest.raises(DataError, match="samples has 3 names for 4 labels"):
        label_issues(labels, np.full((4, 2), 0.5), samples=["a", "b", "c"])
    with pytest.raises(ConfigError, match="task='regression'"):
        label_issues(labels, np.full((4, 2), 0.5), task="regression")
