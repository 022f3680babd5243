"""Conformal prediction sets: instead of one label, the set of labels that the model cannot
rule out at error rate α, guaranteed to hold the true label for at least 1 − α of future
images from the validation data's distribution (split conformal, Vovk et al. 2005).

``fit`` reads the validation split's (calibrated) probabilities: the nonconformity score of
each image's true class, and the ⌈(n + 1)(1 − α)⌉-th smallest of them as threshold q̂;
``predict_sets`` puts in an image's set every class whose score is at most q̂ (up to
``TOLERANCE``). Over exchangeable validation and test images, coverage is at least 1 − α,
and below 1 − α + 1/(n + 1) when scores do not tie. Scores:

* ``"lac"`` (least ambiguous set-valued classifier, Sadinle et al. 2019): 1 − p_y; the
  smallest sets on average.
* ``"aps"`` (adaptive prediction sets, Romano et al. 2020): the total probability of the
  classes ranked at or above y (ties broken by class order); sets grow where the model is
  unsure. Deterministic by default: an image gets the same set alone or in a batch. Its
  scores tie at 1 for a class ranked last, so coverage can exceed 1 − α (with
  ``mondrian=True``, a rare class that is usually ranked last may enter nearly every set).
  ``randomized=True`` replaces p_y by U · p_y with U uniform (Romano et al.'s randomized
  APS), which removes the ties and gives coverage close to exactly 1 − α; U comes from
  ``np.random.default_rng(seed)`` at fitting and ``default_rng([seed, 1])`` at prediction,
  one per image (and label) in input order, so an image's set depends on its place in the
  batch: use it for evaluation, not for single-image decisions.

An image's set may be empty (no class is plausible enough): an abstention, like a set of
several classes. ``mondrian=True`` fits one threshold per true class (class-conditional
coverage, for rare classes that the pooled threshold would under-cover). Multi-label
outputs are conformalised label by label as binary problems (absent, present): a label's
decision is "yes" (only present in its set), "no" (only absent) or "unsure" (both, or
neither). Where too few validation images exist for 1 − α (⌈(n + 1)(1 − α)⌉ > n) the
threshold is unbounded, stored as None, and every class enters the set.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from medclf.errors import ConfigError, DataError

SCORES = ("lac", "aps")
TASKS = ("multiclass", "binary", "multilabel")
STATE_VERSION = 1
TOLERANCE = 1e-10  # a score within rounding of q̂ is in the set (APS sums ≈ 1 differ in ulps)


def class_scores(probs: np.ndarray, score: str, u: np.ndarray | None = None) -> np.ndarray:
    """(N, K) nonconformity score of every candidate class: LAC 1 − p_y; APS the cumulated
    probability of the classes sorted by decreasing probability, up to and including y, or
    with ``u`` (N,) randomized APS: the classes ranked above y plus u · p_y."""
    probs = np.asarray(probs, dtype=float)
    if score == "lac":
        return 1.0 - probs
    if score == "aps":
        order = np.argsort(-probs, axis=1, kind="stable")
        cumulated = np.cumsum(np.take_along_axis(probs, order, axis=1), axis=1)
        out = np.empty_like(probs)
        np.put_along_axis(out, order, cumulated, axis=1)
        if u is not None:
            out -= (1 - np.asarray(u, dtype=float)[:, None]) * probs
        return out
    raise ConfigError(f"score={score!r}: choose one of {', '.join(SCORES)}")


def conformal_threshold(scores: np.ndarray, alpha: float) -> float:
    """The ⌈(n + 1)(1 − α)⌉-th smallest calibration score; +inf when that exceeds n."""
    scores = np.asarray(scores, dtype=float).reshape(-1)
    n = len(scores)
    rank = math.ceil((n + 1) * (1 - alpha) - 1e-9)
    if rank > n:
        return math.inf
    return float(np.partition(scores, rank - 1)[rank - 1])


def _binary_problems(probs: np.ndarray, targets: np.ndarray, task: str):
    """The task as a list of (probs (N, C), true class (N,)) problems: one for multiclass
    and binary outputs, one (absent, present) problem per label for multi-label outputs."""
    if task == "multilabel":
        if targets.shape != probs.shape:
            raise DataError(f"multi-label probs {probs.shape} and targets {targets.shape} differ")
        truth = (targets > 0.5).astype(int)
        return [
            (np.stack([1 - probs[:, k], probs[:, k]], axis=1), truth[:, k])
            for k in range(probs.shape[1])
        ]
    if targets.shape != (len(probs),):
        raise DataError(f"targets must be class indices of shape ({len(probs)},)")
    return [(probs, targets.astype(int))]


def _uniforms(seed: int | None, n: int, problems: int, stage: int) -> list[np.ndarray | None]:
    """One U per image for each problem (randomized APS; None otherwise): fitting draws from
    ``default_rng(seed)``, prediction from ``default_rng([seed, 1])``, an (N, problems)
    matrix read column by column."""
    if seed is None:
        return [None] * problems
    rng = np.random.default_rng(seed if stage == 0 else [seed, stage])
    u = rng.random((n, problems))
    return [u[:, j] for j in range(problems)]


def _check(probs, task: str) -> np.ndarray:
    if task not in TASKS:
        raise ConfigError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    probs = np.asarray(probs, dtype=float)
    if probs.ndim != 2 or len(probs) == 0:
        raise DataError(f"probs must be a non-empty (N, K) array, got shape {probs.shape}")
    if task == "binary" and probs.shape[1] != 2:
        raise DataError(f"binary probs must be (N, 2), [1 − p, p]; got {probs.shape}")
    return probs


def fit(
    probs_val,
    targets_val,
    task: str,
    alpha: float = 0.1,
    score: str = "lac",
    mondrian: bool = False,
    randomized: bool = False,
    seed: int = 0,
) -> dict:
    """Split-conformal state fitted on validation probabilities and targets: a plain dict of
    numbers and lists (JSON- and YAML-safe; None stands for an unbounded threshold) for a
    checkpoint's hyper-parameters, read back by ``predict_sets``.

    ``thresholds[j][c]`` is the threshold of class c in problem j (the single problem of a
    multiclass or binary output, or label j's (absent, present) problem); without
    ``mondrian`` all classes of a problem share one. ``randomized`` (APS only) and ``seed``:
    see the module's description.
    """
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha={alpha}: the error rate must lie between 0 and 1, e.g. 0.1")
    if score not in SCORES:
        raise ConfigError(f"score={score!r}: choose one of {', '.join(SCORES)}")
    if randomized and score != "aps":
        raise ConfigError("randomized=True is for score=aps; LAC scores need no randomization")
    probs = _check(probs_val, task)
    targets = np.asarray(targets_val)
    if len(targets) != len(probs):
        raise DataError(f"{len(probs)} validation probabilities for {len(targets)} targets")
    thresholds, counts = [], []
    problems = _binary_problems(probs, targets, task)
    uniforms = _uniforms(int(seed) if randomized else None, len(probs), len(problems), 0)
    for (p, y), u in zip(problems, uniforms, strict=True):
        all_scores = class_scores(p, score, u)
        true_scores = np.take_along_axis(all_scores, y[:, None], axis=1)[:, 0]
        n_classes = p.shape[1]
        if mondrian:
            row = [conformal_threshold(true_scores[y == c], alpha) for c in range(n_classes)]
            counts.append(np.bincount(y, minlength=n_classes).tolist())
        else:
            row = [conformal_threshold(true_scores, alpha)] * n_classes
            counts.append([len(y)])
        thresholds.append([None if math.isinf(q) else q for q in row])
    return {
        "version": STATE_VERSION,
        "task": task,
        "score": score,
        "alpha": float(alpha),
        "mondrian": bool(mondrian),
        "randomized": bool(randomized),
        "seed": int(seed),
        "n_classes": int(probs.shape[1]),
        "n_calibration": counts,
        "thresholds": thresholds,
    }


def predict_sets(probs, state: dict) -> np.ndarray:
    """Set membership of each image: (N, K) booleans for multiclass and binary outputs (the
    classes in the set); (N, K, 2) for multi-label outputs, [..., 0] "absent" and [..., 1]
    "present" in label k's set."""
    if state.get("version") != STATE_VERSION:
        raise ConfigError(f"conformal state version {state.get('version')} is not supported")
    task = state["task"]
    probs = _check(probs, task)
    if probs.shape[1] != state["n_classes"]:
        raise DataError(
            f"probs have {probs.shape[1]} classes, the conformal state {state['n_classes']}"
        )
    limits = np.array(
        [[math.inf if q is None else q for q in row] for row in state["thresholds"]], float
    )
    problems = len(limits)
    seed = state["seed"] if state.get("randomized") else None
    uniforms = _uniforms(seed, len(probs), problems, 1)
    if task == "multilabel":
        scores = np.stack(
            [
                class_scores(np.stack([1 - probs[:, k], probs[:, k]], axis=1), state["score"], u)
                for k, u in enumerate(uniforms)
            ],
            axis=1,
        )
        return scores <= limits[None, :, :] + TOLERANCE
    return class_scores(probs, state["score"], uniforms[0]) <= limits[0][None, :] + TOLERANCE


def label_decisions(sets: np.ndarray) -> np.ndarray:
    """(N, K) "yes", "no" or "unsure" from multi-label sets (N, K, 2): yes when only
    "present" is in a label's set, no when only "absent", unsure otherwise."""
    sets = np.asarray(sets, dtype=bool)
    out = np.full(sets.shape[:2], "unsure", dtype=object)
    out[sets[..., 1] & ~sets[..., 0]] = "yes"
    out[sets[..., 0] & ~sets[..., 1]] = "no"
    return out


def abstains(sets: np.ndarray, task: str) -> np.ndarray:
    """(N,) True where the model should defer to a human: the set is not exactly one class
    (empty or several), or, multi-label, some label is unsure."""
    sets = np.asarray(sets, dtype=bool)
    if task == "multilabel":
        return (sets.sum(axis=2) != 1).any(axis=1)
    return sets.sum(axis=1) != 1


def coverage_table(
    sets: np.ndarray, targets, task: str, class_names: Sequence[str]
) -> pd.DataFrame:
    """Empirical coverage and set size, overall ("all") and per class: columns ``class, n,
    coverage, mean_size, abstain``. Multiclass/binary: per true class, the share of its
    images whose set holds it, their mean set size and abstention rate. Multi-label: per
    label over all images, the share whose set holds the label's true value, the mean size
    of its set (1 is decided, 2 or 0 unsure) and the unsure rate; "all" pools the labels
    (coverage, size) and counts images with any unsure label as abstaining."""
    sets = np.asarray(sets, dtype=bool)
    targets = np.asarray(targets)
    rows = []
    if task == "multilabel":
        truth = (targets > 0.5).astype(int)
        hit = np.take_along_axis(sets, truth[..., None], axis=2)[..., 0]
        size = sets.sum(axis=2)
        rows.append(("all", len(sets), hit.mean(), size.mean(), abstains(sets, task).mean()))
        for k, name in enumerate(class_names):
            rows.append(
                (name, len(sets), hit[:, k].mean(), size[:, k].mean(), (size[:, k] != 1).mean())
            )
    else:
        y = targets.astype(int)
        hit = sets[np.arange(len(y)), y]
        size = sets.sum(axis=1)
        defer = abstains(sets, task)
        rows.append(("all", len(y), hit.mean(), size.mean(), defer.mean()))
        for c, name in enumerate(class_names):
            mine = y == c
            if mine.any():
                rows.append(
                    (name, int(mine.sum()), hit[mine].mean(), size[mine].mean(), defer[mine].mean())
                )
            else:
                rows.append((name, 0, np.nan, np.nan, np.nan))
    return pd.DataFrame(rows, columns=["class", "n", "coverage", "mean_size", "abstain"])
