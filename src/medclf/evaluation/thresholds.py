"""Decision thresholds chosen on the validation predictions.

The config key ``threshold`` takes a number in [0, 1] or a rule (``youden``, ``f1``,
``sensitivity@0.95``, ``specificity@0.95``) that picks, per label, the threshold of the
validation scores that best meets it. A chosen threshold ``t`` is always read by the platform's
decision rule (:func:`medclf.models.outputs.decide`): a score **at or above** ``t`` is positive.
The candidates are therefore the distinct observed scores (each makes exactly the samples
scoring at least that much positive) plus one value just above the largest score (nothing
positive), as scikit-learn's ``roc_curve`` lists its operating points.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Real

import numpy as np

from medclf.errors import ConfigError, DataError, did_you_mean

RULES = ("youden", "f1", "sensitivity", "specificity")
LEVELLED = ("sensitivity", "specificity")
FORMS = "a number in [0, 1] (e.g. 0.5), youden, f1, sensitivity@0.95 or specificity@0.95"


@dataclass(frozen=True)
class ThresholdRule:
    """A rule that chooses the threshold on validation predictions; ``level`` is the required
    sensitivity or specificity (None for youden and f1)."""

    name: str
    level: float | None = None

    def __str__(self) -> str:
        return self.name if self.level is None else f"{self.name}@{self.level!r}"


def parse_threshold(value: object) -> float | ThresholdRule:
    """The ``threshold`` config value as a number in [0, 1] or a :class:`ThresholdRule`."""
    if isinstance(value, ThresholdRule):
        return value
    if isinstance(value, Real) and not isinstance(value, bool):
        return _checked_number(float(value), value)
    if not isinstance(value, str):
        raise ConfigError(f"threshold={value!r}: use {FORMS}.")
    text = value.strip()
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        return _checked_number(number, value)
    name, at, level_text = text.lower().partition("@")
    name = name.strip()
    if name not in RULES:
        hint = did_you_mean(name, RULES)
        raise ConfigError(f"threshold={value}: unknown threshold rule {name!r}.{hint} Use {FORMS}.")
    if name not in LEVELLED:
        if at:
            raise ConfigError(f"threshold={value}: {name} takes no level; write threshold={name}.")
        return ThresholdRule(name)
    example = f"e.g. threshold={name}@0.95"
    if not at:
        raise ConfigError(f"threshold={value}: {name} needs a level after '@', {example}.")
    try:
        level = float(level_text)
    except ValueError:
        raise ConfigError(
            f"threshold={value}: the level {level_text.strip()!r} is not a number, {example}."
        ) from None
    if not 0.0 < level < 1.0:
        raise ConfigError(
            f"threshold={value}: the level must lie strictly between 0 and 1, {example}."
        )
    return ThresholdRule(name, level)


def _checked_number(number: float, value: object) -> float:
    if not (math.isfinite(number) and 0.0 <= number <= 1.0):
        raise ConfigError(
            f"threshold={value}: a number must lie between 0 and 1 (a probability), e.g. "
            "threshold=0.5; or use a rule: youden, f1, sensitivity@0.95, specificity@0.95."
        )
    return number


def check_rule_for_task(rule: float | ThresholdRule, task: str) -> None:
    """Refuse a rule for a multi-class (argmax) task, which has no threshold to choose."""
    if task not in ("binary", "multilabel", "multiclass"):
        raise ValueError(f"task must be multiclass, multilabel or binary, got {task!r}")
    if isinstance(rule, ThresholdRule) and task == "multiclass":
        raise ConfigError(
            f"threshold={rule}: threshold rules apply to binary and multi-label (sigmoid) "
            "outputs, but this task is multi-class: its softmax output decides by argmax and "
            "uses no threshold. Set a number (e.g. threshold=0.5), or, for two-class data, "
            "head.n_outputs=1 to train a binary (sigmoid) output whose threshold a rule can choose."
        )


def threshold_for_task(value: object, task: str | None) -> float | ThresholdRule:
    """``threshold`` parsed and checked against the model's task (None: not known yet)."""
    rule = parse_threshold(value)
    if task is not None:
        check_rule_for_task(rule, task)
    return rule


def choose_threshold(
    rule: ThresholdRule, targets01: np.ndarray, scores: np.ndarray, label: str = "the label"
) -> float:
    """The threshold that ``rule`` picks for one label from its 0/1 targets and (N,) scores.

    youden: the largest TPR − FPR; f1: the largest F1 of the positive class (ties of either
    go to the largest threshold, the operating point with the fewest positive calls);
    sensitivity@x: the largest threshold whose sensitivity is at least x; specificity@x: the
    smallest threshold whose specificity is at least x. The threshold just above the largest
    score (nothing positive) may exceed 1 when a score equals 1.
    """
    targets = np.asarray(targets01).reshape(-1)
    scores = np.asarray(scores).reshape(-1)
    if targets.shape != scores.shape:
        raise ValueError(f"targets {targets.shape} and scores {scores.shape} differ in length")
    if not np.isin(targets, (0, 1)).all():
        raise ValueError(f"targets of {label!r} must be 0 or 1")
    if not np.isfinite(scores).all():
        raise DataError(f"threshold={rule}: the validation scores of {label!r} are not finite.")
    positive = targets == 1
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        missing = "positive" if n_pos == 0 else "negative"
        raise DataError(
            f"threshold={rule}: label {label!r} has no {missing} sample among the "
            f"{positive.size} validation predictions; the rule needs both positive and "
            "negative samples. Use a validation split that holds both, or a number for threshold."
        )
    values, where = np.unique(scores, return_inverse=True)
    pos_at = np.bincount(where, weights=positive, minlength=values.size).astype(np.int64)
    neg_at = np.bincount(where, minlength=values.size).astype(np.int64) - pos_at
    # candidate i is values[i] (ascending), then one value above the maximum: the counts of
    # samples scoring at least it are reversed cumulative sums.
    tp = np.append(np.cumsum(pos_at[::-1])[::-1], 0)
    fp = np.append(np.cumsum(neg_at[::-1])[::-1], 0)
    above = np.nextafter(np.float32(values[-1]), np.float32(np.inf))
    candidates = np.append(values.astype(np.float64), float(above))
    if rule.name == "youden":
        # TPR − FPR scaled by n_pos * n_neg: exact integers, so ties are exact.
        score = tp * n_neg - fp * n_pos
        index = _last_max(score)
    elif rule.name == "f1":
        # 2·TP / (2·TP + FP + FN) = 2·TP / (TP + FP + P); a correctly rounded division of
        # exact integers, so equal fractions give equal floats.
        index = _last_max(2 * tp / (tp + fp + n_pos))
    elif rule.name == "sensitivity":
        # sensitivity falls as the threshold rises and is 1 at the smallest score
        index = int(np.flatnonzero(tp / n_pos >= rule.level)[-1])
    elif rule.name == "specificity":
        # specificity rises with the threshold and is 1 above the largest score
        index = int(np.flatnonzero((n_neg - fp) / n_neg >= rule.level)[0])
    else:
        raise ValueError(f"unknown threshold rule {rule.name!r}")
    return float(candidates[index])


def _last_max(values: np.ndarray) -> int:
    return int(np.flatnonzero(values == values.max())[-1])


def choose_thresholds(
    rule: float | ThresholdRule,
    targets: np.ndarray,
    probs: np.ndarray,
    task: str,
    class_names: Sequence[str],
) -> np.ndarray:
    """The thresholds ``rule`` picks on validation predictions: binary → (1,) for column 1
    (targets are class indices 0/1); multilabel → (K,), one per label (targets (N, K) 0/1).
    A number is returned as is for every label."""
    check_rule_for_task(rule, task)
    probs = np.asarray(probs)
    targets = np.asarray(targets)
    names = list(class_names)
    if task == "binary":
        columns = [(names[1], targets == 1, probs[:, 1])]
    elif task == "multilabel":
        if targets.shape != probs.shape:
            raise ValueError(f"targets {targets.shape} and probs {probs.shape} differ in shape")
        columns = [(names[k], targets[:, k], probs[:, k]) for k in range(probs.shape[1])]
    else:
        raise ValueError("a multiclass task has no threshold")
    if not isinstance(rule, ThresholdRule):
        return np.full(len(columns), float(rule))
    return np.array([choose_threshold(rule, t, s, label) for label, t, s in columns])
