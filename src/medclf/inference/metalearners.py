"""The metalearners of a stacked ensemble (AUCMEDI's stacking), all scikit-learn estimators:
``logistic`` (the default), ``naive_bayes``, ``svm``, ``random_forest``,
``gradient_boosting``, ``knn``, ``best`` (the member with the smallest log loss) and
``weighted_mean`` (member weights that minimise the log loss).

A metalearner reads the members' class probabilities side by side, member-major:
``X[:, m * K + k]`` is member m's probability of class k (:func:`features`), and returns
(N, K) probabilities. Multi-label targets get one metalearner per label
(``MultiOutputClassifier``); ``best`` and ``weighted_mean`` combine the members' columns
directly for every task.

A fitted metalearner is kept as plain data (:meth:`Metalearner.state`): its name, its
parameters, the rows it was fitted on and its probabilities on them. Loading fits the
estimator again on those rows (deterministic: fixed seeds) and checks that it reproduces the
stored probabilities, so nothing is unpickled and a scikit-learn that would answer
differently is caught.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from medclf.errors import ConfigError, DataError, did_you_mean

REFIT_ATOL = 1e-6  # a refitted metalearner must give the stored probabilities to this


def _log_loss(y: np.ndarray, probs: np.ndarray, task: str) -> float:
    """Mean log loss of (N, K) probabilities: class indices (multiclass, binary) or 0/1 rows
    (multi-label: the mean binary log loss over labels)."""
    p = np.clip(probs, 1e-12, 1 - 1e-12)
    if task == "multilabel":
        return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
    return float(-np.mean(np.log(p[np.arange(len(y)), y.astype(int)])))


class _Combiner(ClassifierMixin, BaseEstimator):
    """Base of the metalearners that combine the members' own columns."""

    def __init__(self, n_members: int = 1, task: str = "multiclass") -> None:
        self.n_members = n_members
        self.task = task

    def _blocks(self, X: np.ndarray) -> np.ndarray:
        """(M, N, K): each member's probabilities."""
        X = np.asarray(X, dtype=float)
        return X.reshape(len(X), self.n_members, -1).transpose(1, 0, 2)


class BestMember(_Combiner):
    """The member whose held-out probabilities have the smallest log loss."""

    def fit(self, X: np.ndarray, y: np.ndarray) -> BestMember:
        blocks = self._blocks(X)
        self.losses_ = np.array([_log_loss(np.asarray(y), b, self.task) for b in blocks])
        self.member_ = int(np.argmin(self.losses_))
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self._blocks(X)[self.member_]


class WeightedMean(_Combiner):
    """The members' probabilities averaged with weights (softmax of free parameters, so they
    are positive and sum to 1) that minimise the log loss of the held-out rows."""

    def fit(self, X: np.ndarray, y: np.ndarray) -> WeightedMean:
        from scipy.optimize import minimize
        from scipy.special import softmax

        blocks, y = self._blocks(X), np.asarray(y)

        def loss(theta: np.ndarray) -> float:
            return _log_loss(y, np.tensordot(softmax(theta), blocks, axes=1), self.task)

        found = minimize(loss, np.zeros(self.n_members), method="L-BFGS-B")
        self.weights_ = softmax(found.x)
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return np.tensordot(self.weights_, self._blocks(X), axes=1)


def _sklearn(path: str, **defaults: Any) -> Callable[..., Any]:
    def make(seed: int, n_members: int, task: str, n_rows: int, **params: Any) -> Any:
        module, _, name = path.rpartition(".")
        import importlib

        cls = getattr(importlib.import_module(module), name)
        chosen = {**defaults, **params}
        if "random_state" in cls().get_params():
            chosen.setdefault("random_state", seed)
        if name == "KNeighborsClassifier":
            chosen["n_neighbors"] = min(int(chosen.get("n_neighbors", 15)), n_rows)
        return cls(**chosen)

    return make


def _svm(seed: int, n_members: int, task: str, n_rows: int, **params: Any) -> Any:
    """An RBF support vector machine with probabilities from Platt scaling fitted by
    cross-validation (scikit-learn's CalibratedClassifierCV over SVC)."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.svm import SVC

    return CalibratedClassifierCV(SVC(**params), method="sigmoid", ensemble=False)


def _combiner(cls: type) -> Callable[..., Any]:
    def make(seed: int, n_members: int, task: str, n_rows: int, **params: Any) -> Any:
        return cls(n_members=n_members, task=task, **params)

    return make


METALEARNERS: dict[str, Callable[..., Any]] = {
    "logistic": _sklearn("sklearn.linear_model.LogisticRegression", max_iter=1000),
    "naive_bayes": _sklearn("sklearn.naive_bayes.GaussianNB"),
    "svm": _svm,
    "random_forest": _sklearn(
        "sklearn.ensemble.RandomForestClassifier", n_estimators=100, min_samples_leaf=2
    ),
    "gradient_boosting": _sklearn("sklearn.ensemble.GradientBoostingClassifier"),
    "knn": _sklearn("sklearn.neighbors.KNeighborsClassifier", n_neighbors=15),
    "best": _combiner(BestMember),
    "weighted_mean": _combiner(WeightedMean),
}
"""Name → factory ``(seed, n_members, task, n_rows, **params)``; the names users type."""

COMBINERS = ("best", "weighted_mean")


def check_name(name: str) -> str:
    """``metalearner`` is a known name (a ConfigError with the closest ones if not)."""
    if name not in METALEARNERS:
        raise ConfigError(
            f"metalearner={name!r} is not a metalearner.{did_you_mean(name, METALEARNERS)} "
            f"Use one of: {', '.join(METALEARNERS)}."
        )
    return name


def features(probabilities: list[np.ndarray]) -> np.ndarray:
    """The metalearner's input from the members' (N, K) probabilities: (N, M * K),
    member-major."""
    return np.concatenate([np.asarray(p, dtype=np.float64) for p in probabilities], axis=1)


@dataclass
class Metalearner:
    """A fitted metalearner and what it was fitted on."""

    name: str
    params: dict[str, Any]
    seed: int
    task: str
    class_names: list[str]
    n_members: int
    estimator: Any
    X: np.ndarray  # the rows it was fitted on (features)
    y: np.ndarray  # their targets: class indices, or (N, K) 0/1 for multi-label
    samples: np.ndarray  # their sample ids

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """(N, K) probabilities of the class names for features ``X``."""
        X = np.asarray(X, dtype=np.float64)
        k = len(self.class_names)
        if self.name in COMBINERS:
            return np.asarray(self.estimator.predict_proba(X), dtype=np.float64)
        out = np.zeros((len(X), k))
        if self.task == "multilabel":
            for j, (est, p) in enumerate(
                zip(self.estimator.estimators_, self.estimator.predict_proba(X), strict=True)
            ):
                out[:, j] = p[:, list(est.classes_).index(1)]
            return out
        out[:, self.estimator.classes_.astype(int)] = self.estimator.predict_proba(X)
        return out

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(JSON-able description, arrays): everything :func:`from_state` needs."""
        import sklearn

        spec = {
            "name": self.name,
            "params": self.params,
            "seed": self.seed,
            "task": self.task,
            "class_names": self.class_names,
            "n_members": self.n_members,
            "rows": len(self.X),
            "scikit_learn": sklearn.__version__,
        }
        arrays = {
            "X": self.X,
            "y": self.y,
            "samples": np.asarray(self.samples, dtype=str),
            "fitted": self.predict_proba(self.X),
        }
        return spec, arrays


def _check_targets(y: np.ndarray, task: str, class_names: list[str]) -> None:
    if task == "multilabel":
        for j, name in enumerate(class_names):
            if len(np.unique(y[:, j])) < 2:
                state = "positive" if y[:, j].all() else "negative"
                raise DataError(
                    f"label {name!r} is {state} in all {len(y)} held-out samples the "
                    "metalearner is fitted on: it cannot learn that label. Use more folds "
                    "or data with both values of it."
                )
    elif len(np.unique(y)) < 2:
        raise DataError(
            f"the {len(y)} held-out samples the metalearner is fitted on hold one class only; "
            "stack runs whose validation (or out-of-fold) predictions cover several classes."
        )


def fit_metalearner(
    name: str,
    X: np.ndarray,
    y: np.ndarray,
    samples: np.ndarray,
    task: str,
    class_names: list[str],
    n_members: int,
    params: dict[str, Any] | None = None,
    seed: int = 0,
) -> Metalearner:
    """Fit metalearner ``name`` on features ``X`` (:func:`features`) and targets ``y``."""
    from sklearn.multioutput import MultiOutputClassifier

    check_name(name)
    params = dict(params or {})
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y)
    _check_targets(y, task, class_names)
    try:
        estimator = METALEARNERS[name](seed, n_members, task, len(X), **params)
    except TypeError as error:
        raise ConfigError(f"metalearner_params={params}: {error}") from None
    if task == "multilabel" and name not in COMBINERS:
        estimator = MultiOutputClassifier(estimator)
    estimator.fit(X, y.astype(int))
    return Metalearner(
        name, params, seed, task, list(class_names), n_members, estimator, X, y, np.asarray(samples)
    )


def from_state(spec: dict[str, Any], arrays: dict[str, np.ndarray]) -> Metalearner:
    """The metalearner of :meth:`Metalearner.state`, fitted again and checked against the
    stored probabilities (a DataError names both scikit-learn versions if they differ)."""
    import sklearn

    fitted = fit_metalearner(
        check_name(str(spec["name"])),
        arrays["X"],
        arrays["y"],
        arrays["samples"],
        str(spec["task"]),
        list(spec["class_names"]),
        int(spec["n_members"]),
        dict(spec.get("params") or {}),
        int(spec.get("seed", 0)),
    )
    difference = float(np.abs(fitted.predict_proba(arrays["X"]) - arrays["fitted"]).max())
    if difference > REFIT_ATOL:
        raise DataError(
            f"the {spec['name']} metalearner fitted again differs from the stored one by "
            f"{difference:.1e} (stored with scikit-learn {spec.get('scikit_learn')}, this is "
            f"{sklearn.__version__}); rebuild the ensemble with medclf-ensemble."
        )
    return fitted


def cross_validated(meta: Metalearner, folds: int = 5) -> np.ndarray:
    """The metalearner's out-of-fold probabilities on its own rows (each row predicted by a
    copy fitted without it): an honest validation score and the rows a threshold rule is
    chosen on."""
    from sklearn.model_selection import KFold, StratifiedKFold

    y = meta.y
    n = len(y)
    if meta.task == "multilabel":
        splitter = KFold(min(folds, n), shuffle=True, random_state=meta.seed)
        splits = splitter.split(meta.X)
    else:
        smallest = int(np.bincount(y.astype(int)).min(initial=n) or n)
        k = max(2, min(folds, smallest)) if smallest >= 2 else min(folds, n)
        splitter = StratifiedKFold(k, shuffle=True, random_state=meta.seed)
        splits = splitter.split(meta.X, y) if smallest >= 2 else KFold(k).split(meta.X)
    out = np.zeros((n, len(meta.class_names)))
    for train, held in splits:
        try:
            part = fit_metalearner(
                meta.name,
                meta.X[train],
                y[train],
                meta.samples[train],
                meta.task,
                meta.class_names,
                meta.n_members,
                meta.params,
                meta.seed,
            )
        except DataError:  # a fold without some class: its rows get the full fit's answer
            part = meta
        out[held] = part.predict_proba(meta.X[held])
    return out
