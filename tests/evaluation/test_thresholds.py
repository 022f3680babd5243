"""Thresholds chosen on validation predictions: hand-computed cases, a brute-force sklearn
oracle, and the errors a user can cause."""

from __future__ import annotations

import ast
import inspect

import numpy as np
import pytest
from sklearn.metrics import f1_score, recall_score

from medclf.errors import ConfigError, DataError
from medclf.evaluation import thresholds
from medclf.evaluation.thresholds import (
    ThresholdRule,
    check_rule_for_task,
    choose_threshold,
    choose_thresholds,
    parse_threshold,
)

# P = 5 positives, N = 4 negatives; at threshold t (score >= t is positive):
#   t     TP FP  TPR  FPR  TPR-FPR  F1 = 2TP/(TP+FP+P)  spec
#   0.9   1  0   .2   0    .20      2/6  = .333         1
#   0.8   2  0   .4   0    .40      4/7  = .571         1
#   0.7   3  0   .6   0    .60      6/8  = .750         1
#   0.6   4  0   .8   0    .80 max  8/9  = .889         1
#   0.5   4  1   .8   .25  .55      8/10 = .800         .75
#   0.4   5  1   1    .25  .75      10/11 = .909 max    .75
#   0.3   5  2   1    .5   .50      10/12 = .833        .5
#   0.2   5  3   1    .75  .25      10/13 = .769        .25
#   0.1   5  4   1    1    0        10/14 = .714        0
NEGATIVES = [0.1, 0.2, 0.3, 0.5]
POSITIVES = [0.4, 0.6, 0.7, 0.8, 0.9]
SCORES = np.array(NEGATIVES + POSITIVES)
TARGETS = np.array([0] * len(NEGATIVES) + [1] * len(POSITIVES))


def sensitivity(targets, scores, t):
    return recall_score(targets, scores >= t)


def specificity(targets, scores, t):
    return recall_score(targets, scores >= t, pos_label=0)


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("youden", 0.6),
        ("f1", 0.4),
        ("sensitivity@0.8", 0.6),  # TPR exactly .8 at 0.6 (>=), .6 at 0.7
        ("sensitivity@0.85", 0.4),  # .8 at 0.6 is too little; 1 at 0.4
        ("specificity@0.75", 0.4),  # .5 at 0.3; .75 at 0.4
        ("specificity@0.8", 0.6),  # .75 at 0.5; 1 at 0.6
        ("specificity@0.5", 0.3),
    ],
)
def test_hand_computed_thresholds(rule: str, expected: float) -> None:
    parsed = parse_threshold(rule)
    t = choose_threshold(parsed, TARGETS, SCORES)
    assert t == expected
    candidates = np.unique(SCORES)
    larger = candidates[candidates > t]
    smaller = candidates[candidates < t]
    if parsed.name == "sensitivity":
        assert sensitivity(TARGETS, SCORES, t) >= parsed.level
        assert sensitivity(TARGETS, SCORES, larger[0]) < parsed.level
    if parsed.name == "specificity":
        assert specificity(TARGETS, SCORES, t) >= parsed.level
        assert specificity(TARGETS, SCORES, smaller[-1]) < parsed.level


def test_specificity_may_leave_nothing_positive() -> None:
    """The highest score is a negative: only a threshold above it reaches specificity 0.9."""
    targets = np.array([1, 1, 0])
    scores = np.array([0.5, 0.7, 1.0], dtype=np.float32)
    t = choose_threshold(ThresholdRule("specificity", 0.9), targets, scores)
    assert t > 1.0 and np.float32(t) > scores.max()
    assert not (scores >= t).any()


def test_ties_go_to_the_largest_threshold() -> None:
    # negatives .1 .5, positives .3 .9: TPR-FPR is .5 at t=.9 (.5 - 0) and at t=.3 (1 - .5)
    targets = np.array([0, 0, 1, 1])
    assert choose_threshold(ThresholdRule("youden"), targets, np.array([0.1, 0.5, 0.3, 0.9])) == 0.9
    # negatives .4 .5, positives .2 .9: F1 = 2TP/(TP+FP+P) is 2/3 at t=.9 (2/3) and at t=.2
    # (4/6), 2/4 at .5 and 2/5 at .4
    assert choose_threshold(ThresholdRule("f1"), targets, np.array([0.4, 0.5, 0.2, 0.9])) == 0.9


@pytest.mark.parametrize("seed", range(3))
def test_agrees_with_brute_force_sklearn(seed: int) -> None:
    """Every candidate (each distinct score, and one above the largest) scored with sklearn on
    (scores >= t); each rule's pick, ties to the largest threshold, is choose_threshold's."""
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, 2, 40)
    targets[:2] = [0, 1]
    # rounded scores, so that tied scores occur; positives score higher on average
    scores = np.round(np.clip(rng.normal(0.4 + 0.2 * targets, 0.2), 0, 1), 2)
    if seed % 2:
        scores[0] = 1.0  # a negative scores highest: specificity@0.999 leaves nothing positive
    candidates = np.append(np.unique(scores), np.nextafter(scores.max(), np.inf))
    sens = np.array([sensitivity(targets, scores, t) for t in candidates])
    spec = np.array([specificity(targets, scores, t) for t in candidates])
    f1 = np.array([f1_score(targets, scores >= t, zero_division=0) for t in candidates])
    youden = sens + spec - 1

    def last_max(values: np.ndarray) -> float:
        return candidates[np.flatnonzero(values >= values.max() - 1e-12)[-1]]

    expected = {
        "youden": last_max(youden),
        "f1": last_max(f1),
        "sensitivity@0.9": candidates[np.flatnonzero(sens >= 0.9)[-1]],
        "sensitivity@0.5": candidates[np.flatnonzero(sens >= 0.5)[-1]],
        "specificity@0.8": candidates[np.flatnonzero(spec >= 0.8)[0]],
        "specificity@0.999": candidates[np.flatnonzero(spec >= 0.999)[0]],
    }
    for rule, want in expected.items():
        t = choose_threshold(parse_threshold(rule), targets, scores)
        if want > scores.max():
            assert t > scores.max(), rule
        else:
            assert t == want, rule


def test_choose_thresholds_binary_and_multilabel() -> None:
    probs = np.stack([1 - SCORES, SCORES], axis=1)
    binary = choose_thresholds(ThresholdRule("youden"), TARGETS, probs, "binary", ["a", "b"])
    assert binary.shape == (1,) and binary[0] == 0.6

    rng = np.random.default_rng(0)
    targets = rng.integers(0, 2, (30, 3))
    probs = np.round(rng.random((30, 3)), 2)
    rule = ThresholdRule("f1")
    chosen = choose_thresholds(rule, targets, probs, "multilabel", ["x", "y", "z"])
    expected = [choose_threshold(rule, targets[:, k], probs[:, k]) for k in range(3)]
    assert chosen.shape == (3,)
    np.testing.assert_array_equal(chosen, expected)
    assert choose_thresholds(0.3, targets, probs, "multilabel", "xyz").tolist() == [0.3] * 3


def test_a_label_without_positives_is_refused_by_name() -> None:
    targets = np.array([[1, 0], [0, 0], [1, 0]])
    probs = np.array([[0.9, 0.2], [0.1, 0.3], [0.8, 0.1]])
    names = ["mass", "effusion"]
    with pytest.raises(DataError, match="'effusion' has no positive.*needs both"):
        choose_thresholds(ThresholdRule("youden"), targets, probs, "multilabel", names)
    with pytest.raises(DataError, match="'mass' has no negative"):
        choose_threshold(ThresholdRule("f1"), np.ones(3), np.array([0.1, 0.2, 0.3]), "mass")


def test_multiclass_task_refuses_a_rule() -> None:
    with pytest.raises(ConfigError, match="threshold=youden.*argmax"):
        check_rule_for_task(ThresholdRule("youden"), "multiclass")
    check_rule_for_task(0.5, "multiclass")
    check_rule_for_task(ThresholdRule("youden"), "binary")
    with pytest.raises(ConfigError, match="multi-class"):
        choose_thresholds(ThresholdRule("f1"), np.zeros(2), np.ones((2, 3)), "multiclass", "abc")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.5, 0.5),
        (1, 1.0),
        (0, 0.0),
        ("0.25", 0.25),
        ("youden", ThresholdRule("youden")),
        ("F1", ThresholdRule("f1")),
        ("sensitivity@0.95", ThresholdRule("sensitivity", 0.95)),
        ("specificity@0.9", ThresholdRule("specificity", 0.9)),
    ],
)
def test_parse_threshold(value, expected) -> None:
    parsed = parse_threshold(value)
    assert parsed == expected
    if isinstance(parsed, ThresholdRule):
        assert parse_threshold(str(parsed)) == parsed


def test_rule_prints_as_its_config_string() -> None:
    assert str(ThresholdRule("sensitivity", 0.95)) == "sensitivity@0.95"
    assert str(ThresholdRule("youden")) == "youden"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("sensitivity@0", "strictly between 0 and 1, e.g. threshold=sensitivity@0.95"),
        ("specificity@1", "strictly between 0 and 1, e.g. threshold=specificity@0.95"),
        ("sensitivity@1.2", "threshold=sensitivity@1.2: the level must lie strictly between"),
        ("sensitivity@high", "not a number"),
        ("sensitivity", "needs a level"),
        ("yuoden", "Did you mean: youden"),
        ("gini", "youden, f1, sensitivity@0.95 or specificity@0.95"),
        (1.5, "threshold=1.5: a number must lie between 0 and 1"),
        ("-0.1", "between 0 and 1"),
        ("nan", "between 0 and 1"),
        (True, "threshold=True"),
    ],
)
def test_parse_errors_name_the_key_and_the_fix(value, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        parse_threshold(value)


def test_imports_stay_light() -> None:
    """Only numpy, the standard library and medclf.errors: no pipeline, cli or torch."""
    tree = ast.parse(inspect.getsource(thresholds))
    nodes = list(ast.walk(tree))
    imported = {a.name for n in nodes if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in nodes if isinstance(n, ast.ImportFrom)}
    allowed = {"__future__", "math", "collections.abc", "dataclasses", "numbers", "numpy"}
    assert imported - allowed == {"medclf.errors"}
