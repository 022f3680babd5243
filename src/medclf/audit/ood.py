"""An out-of-distribution gate: a score of how unusual an image is for the model, fitted on
the validation split, and a threshold at a quantile of the validation scores (0.95: about
5 % of in-distribution images are flagged, by construction).

Two scores, higher = more unusual:

- ``energy`` (Liu et al. 2020): E = −T · logsumexp(logits / T). A single logit (a binary
  sigmoid head) is read as the two logits [−l/2, l/2]; a multi-label head's independent
  sigmoids use the joint energy −T · Σ softplus(l_k / T) (Wang et al. 2021). Needs only the
  logits, and its state is a few numbers.
- ``mahalanobis`` (Lee et al. 2018): the smallest squared Mahalanobis distance of the pooled
  features to a class mean, with one covariance shared by the classes, shrunk towards a
  scaled identity by Ledoit-Wolf (scikit-learn) so that a validation split smaller than
  the feature dimension still gives a usable inverse. Features are first projected on
  their ``max_dims`` leading principal components, which keeps the state small.

The default is ``mahalanobis``: images of another scanner, stain or body part change the
features more reliably than the logits, which a classifier can make confidently large for
anything. Measured with the small net trained on 8 px digits in tests/audit/test_ood.py,
generated blobs against held-out digits: energy AUROC 0.42-0.51, Mahalanobis 1.00 (on the
generated features of that file both reach 1.00). Use ``energy`` where no features are at
hand; its state is a few numbers, Mahalanobis's about (D + K + 128) × 128 floats.

The fitted state is a plain dict of floats, strings and nested lists, to be stored in a
checkpoint's hyper-parameters: :func:`fit` makes it, :func:`score` and :func:`flags` use it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medclf.errors import ConfigError, DataError

METHODS = ("energy", "mahalanobis")
DEFAULT_METHOD = "mahalanobis"
QUANTILE = 0.95
MAX_SHARE = 0.5
"""A batch in which more than this share is flagged gets a warning."""
MAX_DIMS = 128
FOLDS = 5
VERSION = 1


def energy(logits: np.ndarray, temperature: float = 1.0, task: str = "multiclass") -> np.ndarray:
    """Energy of each row of (N, K) logits (see the module; higher = more unusual)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z.reshape(-1, 1) if z.ndim == 1 else z
    t = float(temperature)
    if task == "multilabel":
        return -t * np.logaddexp(0.0, z / t).sum(axis=1)
    if z.shape[1] == 1:
        z = np.concatenate([-z / 2, z / 2], axis=1)
    scaled = z / t
    top = scaled.max(axis=1, keepdims=True)
    return -t * (top[:, 0] + np.log(np.exp(scaled - top).sum(axis=1)))


def _check_quantile(quantile: float) -> float:
    if not 0.0 < float(quantile) < 1.0:
        raise ConfigError(f"ood quantile={quantile} must be between 0 and 1, e.g. 0.95.")
    return float(quantile)


def _array(values: Any, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2 or not len(array):
        raise DataError(f"{name} must be a non-empty (N, D) array, got shape {array.shape}.")
    if not np.isfinite(array).all():
        raise DataError(f"{name} hold NaN or infinite values; check the model's outputs.")
    return array


def _fit_mahalanobis(features: np.ndarray, labels, max_dims: int) -> dict[str, Any]:
    from sklearn.covariance import LedoitWolf

    mean = features.mean(axis=0)
    centred = features - mean
    dims = int(min(max_dims, features.shape[1], max(1, len(features) - 1)))
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    components = vt[:dims]
    projected = centred @ components.T
    classes = np.zeros(len(features), int) if labels is None else np.asarray(labels)
    if classes.ndim != 1 or len(classes) != len(features):
        raise DataError(
            f"labels of shape {classes.shape} do not match {len(features)} feature rows; "
            "pass class indices (N,) of the validation split, or None (multi-label)."
        )
    names = np.unique(classes)
    means = np.stack([projected[classes == c].mean(axis=0) for c in names])
    residual = projected - means[np.searchsorted(names, classes)]
    model = LedoitWolf(assume_centered=True).fit(residual)
    return {
        "mean": mean.tolist(),
        "components": components.tolist(),
        "class_means": means.tolist(),
        "precision": model.precision_.tolist(),
        "shrinkage": float(model.shrinkage_),
    }


def _mahalanobis(state: dict[str, Any], features: np.ndarray) -> np.ndarray:
    mean, components = np.asarray(state["mean"]), np.asarray(state["components"])
    if features.shape[1] != len(mean):
        raise DataError(
            f"features have {features.shape[1]} dimensions but the OOD gate was fitted on "
            f"{len(mean)}; use the features of the model the gate belongs to."
        )
    projected = (features - mean) @ components.T
    precision, means = np.asarray(state["precision"]), np.asarray(state["class_means"])
    best = np.full(len(features), np.inf)
    for centre in means:
        diff = projected - centre
        best = np.minimum(best, np.einsum("ij,jk,ik->i", diff, precision, diff))
    return best


def _held_out_distances(features: np.ndarray, labels, max_dims: int) -> np.ndarray:
    """Each validation sample's distance under a fit without it (5-fold cross-fitting): the
    distances of the samples a fit has seen are too small, so a threshold drawn from them
    would flag far more than 1 − quantile of new in-distribution images."""
    n = len(features)
    if n < 4 * FOLDS:
        return _mahalanobis(_fit_mahalanobis(features, labels, max_dims), features)
    fold = np.random.default_rng(0).permutation(n) % FOLDS
    classes = None if labels is None else np.asarray(labels)
    out = np.empty(n)
    for k in range(FOLDS):
        seen = fold != k
        part = _fit_mahalanobis(
            features[seen], None if classes is None else classes[seen], max_dims
        )
        out[~seen] = _mahalanobis(part, features[~seen])
    return out


def fit(
    logits: np.ndarray | None = None,
    features: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    *,
    method: str = DEFAULT_METHOD,
    quantile: float = QUANTILE,
    temperature: float = 1.0,
    task: str = "multiclass",
    max_dims: int = MAX_DIMS,
) -> dict[str, Any]:
    """The gate's state, fitted on the validation split: ``logits`` (N, K) for ``energy``;
    ``features`` (N, D) and the class indices ``labels`` (N,) (None: one class, as for a
    multi-label task) for ``mahalanobis``. The threshold is the ``quantile`` of the
    validation scores (for mahalanobis, of scores held out by 5-fold cross-fitting, from 20
    samples on)."""
    if method not in METHODS:
        raise ConfigError(f"ood method={method!r}: use one of {', '.join(METHODS)}.")
    quantile = _check_quantile(quantile)
    if not float(temperature) > 0:
        raise ConfigError(f"ood temperature={temperature} must be > 0.")
    state: dict[str, Any] = {"version": VERSION, "method": method, "quantile": quantile}
    if method == "energy":
        if logits is None:
            raise ConfigError("ood method=energy needs the validation logits (N, K).")
        state |= {"temperature": float(temperature), "task": task}
        values = energy(_array(logits, "logits"), temperature, task)
    else:
        if features is None:
            raise ConfigError("ood method=mahalanobis needs the validation features (N, D).")
        array = _array(features, "features")
        state |= _fit_mahalanobis(array, labels, int(max_dims))
        values = _held_out_distances(array, labels, int(max_dims))
    state["n"] = int(len(values))
    state["threshold"] = float(np.quantile(values, quantile))
    return state


def _check_state(state: dict[str, Any]) -> None:
    needed = {"energy": ("temperature", "task"), "mahalanobis": ("mean", "precision")}
    method = state.get("method") if isinstance(state, dict) else None
    if method not in needed:
        raise ConfigError(
            f"the OOD state has method={method!r}; refit it with medclf.audit.ood.fit."
        )
    missing = [k for k in ("threshold", *needed[method]) if k not in state]
    if missing:
        raise ConfigError(
            f"the OOD state lacks {', '.join(missing)}; refit it with medclf.audit.ood.fit."
        )


def score(
    state: dict[str, Any], logits: np.ndarray | None = None, features: np.ndarray | None = None
) -> np.ndarray:
    """The OOD score of each image (higher = more unusual), by the state's method."""
    _check_state(state)
    if state["method"] == "energy":
        if logits is None:
            raise ConfigError("this OOD gate uses method=energy and needs the logits (N, K).")
        return energy(_array(logits, "logits"), state["temperature"], state["task"])
    if features is None:
        raise ConfigError("this OOD gate uses method=mahalanobis and needs the features (N, D).")
    return _mahalanobis(state, _array(features, "features"))


def flags(state: dict[str, Any], scores: np.ndarray) -> np.ndarray:
    """True where an image's score is above the state's threshold."""
    _check_state(state)
    return np.asarray(scores, dtype=np.float64) > float(state["threshold"])


def batch_summary(
    state: dict[str, Any], scores: np.ndarray, max_share: float = MAX_SHARE
) -> dict[str, Any]:
    """images, flagged, share, and a warning (None unless more than ``max_share`` of the
    batch is flagged) naming the share, for predict.py to log."""
    if not 0.0 <= float(max_share) <= 1.0:
        raise ConfigError(f"ood max_share={max_share} must be between 0 and 1.")
    flagged = flags(state, scores)
    n = int(flagged.size)
    share = float(flagged.mean()) if n else 0.0
    warning = None
    if n and share > max_share:
        warning = (
            f"{int(flagged.sum())} of {n} images ({share:.0%}) look out of distribution for "
            f"this model (their {state['method']} score is above the "
            f"{float(state['quantile']):.0%} quantile of the validation split's): they may "
            "come from another scanner, modality, stain or body part than the training data; "
            "check them before trusting the predictions."
        )
    return {"images": n, "flagged": int(flagged.sum()), "share": share, "warning": warning}
