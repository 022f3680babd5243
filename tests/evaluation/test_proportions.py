"""Intervals on small groups: exact binomial intervals equal statsmodels' and scipy's, the
rule picks the bootstrap only where it can work, and a subgroup of four images all wrong
gets the Clopper–Pearson interval rather than the bootstrap's [0, 0]."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.proportion import proportion_confint

from medclf.evaluation.intervals import bootstrap_intervals, metric_values
from medclf.evaluation.proportions import (
    MIN_COUNT,
    MIN_UNITS,
    choose_interval,
    proportion_counts,
    proportion_interval,
    robust_intervals,
)
from medclf.evaluation.subgroups import subgroup_table

NAMES = ["benign", "malignant", "normal"]


@pytest.mark.parametrize("k, n", [(0, 4), (4, 4), (3, 10), (17, 40), (1, 1)])
@pytest.mark.parametrize("level", [0.95, 0.9])
def test_exact_intervals_equal_statsmodels(k: int, n: int, level: float) -> None:
    alpha = 1 - level
    expected = proportion_confint(k, n, alpha=alpha, method="beta")
    assert proportion_interval(k, n, level) == pytest.approx(expected, abs=1e-10)
    wilson = proportion_confint(k, n, alpha=alpha, method="wilson")
    assert proportion_interval(k, n, level, "wilson") == pytest.approx(wilson, abs=1e-10)
    assert np.isnan(proportion_interval(0, 0)).all()


def test_four_images_all_wrong_get_clopper_pearson_not_zero() -> None:
    targets = np.array([0, 1, 2, 0])
    probs = np.eye(3)[[1, 2, 0, 2]] * 0.8 + 0.2 / 3
    chosen = probs == probs.max(axis=1, keepdims=True)
    args = (targets, probs, chosen, "multiclass", NAMES)
    assert bootstrap_intervals(*args, n_resamples=200)["accuracy"] == (0.0, 0.0)  # collapsed
    intervals = robust_intervals(*args, n_resamples=200)
    expected = stats.binomtest(0, 4).proportion_ci(0.95, method="exact")
    low, high, method = intervals["accuracy"]
    assert method == "clopper-pearson"
    assert (low, high) == pytest.approx((expected.low, expected.high), abs=1e-12)
    assert (low, high) == pytest.approx(proportion_confint(0, 4, method="beta"), abs=1e-12)
    assert high == pytest.approx(1 - 0.025 ** (1 / 4))  # the closed form for 0 of 4
    assert intervals["sensitivity_benign"][2] == "clopper-pearson"  # 0 of 2
    assert intervals["f1"] == (pytest.approx(np.nan, nan_ok=True),) * 2 + ("too small",)


def test_the_rule() -> None:
    boot = (0.61, 0.79)
    enough = MIN_UNITS + 5
    assert choose_interval(35, 50, boot, units=enough) == (0.61, 0.79, "bootstrap")
    few_failures = choose_interval(50 - MIN_COUNT + 1, 50, boot, units=enough)
    assert few_failures[2] == "clopper-pearson"
    assert few_failures[:2] == pytest.approx(proportion_interval(50 - MIN_COUNT + 1, 50))
    assert choose_interval(35, 50, boot, units=MIN_UNITS - 1)[2] == "clopper-pearson"
    assert choose_interval(3, 50, boot, enough, exact="wilson")[2] == "wilson"
    assert choose_interval(35, 50, (np.nan, np.nan), units=enough)[2] == "clopper-pearson"
    assert choose_interval(0, 0, boot, units=enough)[2] == "too small"
    assert choose_interval(None, None, boot, units=enough) == (0.61, 0.79, "bootstrap")
    assert choose_interval(None, None, boot, units=MIN_UNITS - 1)[2] == "too small"


@pytest.mark.parametrize("task", ["multiclass", "binary", "multilabel"])
def test_counts_are_the_metric_values(task: str) -> None:
    rng = np.random.default_rng(0)
    n = 50
    if task == "multilabel":
        targets = (rng.random((n, 3)) < 0.4).astype(int)
        probs = rng.random((n, 3))
        chosen, names = probs >= 0.5, NAMES
    else:
        k = 2 if task == "binary" else 3
        targets = rng.integers(0, k, n)
        probs = rng.dirichlet(np.ones(k), n)
        chosen = np.eye(k, dtype=bool)[probs.argmax(1)]
        names = ["negative", "positive"] if task == "binary" else NAMES
    values = metric_values(targets, probs, chosen, task, names)
    counts = proportion_counts(targets, chosen, task, names)
    expected = {f"{kind}_{c}" for kind in ("sensitivity", "specificity") for c in names}
    expected |= {"accuracy"} if task != "multilabel" else set()
    expected |= {"precision", "recall"} if task == "binary" else set()
    assert set(counts) == expected
    for name, (k, trials) in counts.items():
        assert k / trials == pytest.approx(values[name], abs=1e-12), name


def test_large_groups_keep_the_bootstrap() -> None:
    rng = np.random.default_rng(1)
    targets = rng.integers(0, 3, 300)
    probs = rng.dirichlet(np.ones(3), 300) + 0.6 * np.eye(3)[targets]
    chosen = np.eye(3, dtype=bool)[probs.argmax(1)]
    args = (targets, probs, chosen, "multiclass", NAMES)
    groups = np.arange(300) // 3
    got = robust_intervals(*args, groups=groups, n_resamples=100, seed=2)
    boot = bootstrap_intervals(*args, groups=groups, n_resamples=100, seed=2)
    assert {method for _, _, method in got.values()} == {"bootstrap"}
    assert all(got[name][:2] == boot[name] for name in boot)
    assert {m for *_, m in robust_intervals(*args, n_resamples=0).values()} == {"none"}


def test_subgroup_table_marks_each_interval() -> None:
    """A site of 4 images, all wrong: Clopper–Pearson accuracy, F1 too small."""
    rng = np.random.default_rng(3)
    n = 124
    targets = rng.integers(0, 3, n)
    predicted = targets.copy()
    predicted[:4] = (targets[:4] + 1) % 3
    chosen = np.eye(3, dtype=bool)[predicted]
    probs = np.where(chosen, 0.6, 0.2)
    site = pd.Series(["small"] * 4 + ["large"] * (n - 4))
    table = subgroup_table(
        targets, probs, chosen, "multiclass", NAMES, {"site": site}, n_resamples=50
    ).set_index("subgroup")
    small = table.loc["small"]
    assert small["accuracy"] == 0 and small["accuracy_interval"] == "clopper-pearson"
    ci = proportion_confint(0, 4, method="beta")
    assert (small["accuracy_ci_low"], small["accuracy_ci_high"]) == pytest.approx(ci)
    assert small["f1_interval"] == small["auroc_interval"] == "too small"
    assert np.isnan(small[["f1_ci_low", "f1_ci_high"]].to_numpy(float)).all()
    large = table.loc["large"]  # 120 of 120 right: no failures, so exact as well
    assert large["accuracy_interval"] == "clopper-pearson"
    assert large["accuracy_ci_high"] == 1.0 and large["accuracy_ci_low"] < 1.0
    assert large["f1_interval"] == "bootstrap"
