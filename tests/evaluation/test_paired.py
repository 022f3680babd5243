"""Paired comparison: DeLong's test equals an O(n²) placement-value implementation and
reproduces pROC's published roc.test results; the exact McNemar test equals scipy's binomial
test; Holm equals statsmodels; the paired bootstrap follows its protocol and resamples
patients; the table and the forest plot hold one row per comparison."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests

from medclf.evaluation.intervals import metric_values
from medclf.evaluation.paired import (
    COLUMNS,
    compare_models,
    comparison_figure,
    delong_test,
    holm,
    mcnemar_test,
    paired_bootstrap,
)
from medclf.evaluation.plots import save_figure

# pROC's aSAH data set (Turck et al. 2010, Intensive Care Med 36:107; shipped with the R
# package pROC as data(aSAH)): 113 patients after subarachnoid haemorrhage, outcome Poor (1)
# or Good (0), the WFNS grade and two biomarkers, in the data set's row order.
POOR = "00001101001011001011101000000000100110110000000001100010001010011101101111000110100000010000000000001111110001000"  # noqa: E501
WFNS = "11113254125255125225211112121134214541425511241125521251222151125214524414121421232421451154221113125225552445111"  # noqa: E501
S100B = np.array(
    """
    0.13 0.14 0.1 0.04 0.13 0.1 0.47 0.16 0.18 0.1 0.12 0.1 0.44 0.71 0.04 0.08 0.49 0.04
    0.07 0.33 0.09 0.09 0.07 0.11 0.07 0.17 0.07 0.11 0.13 0.19 0.05 0.16 0.41 0.14 0.34
    0.35 0.48 0.09 0.96 0.25 0.5 0.46 0.16 0.07 0.43 0.45 0.11 0.08 0.09 0.86 0.52 0.08 0.06
    0.13 2.07 0.1 0.14 0.15 0.07 0.06 0.77 0.05 0.09 0.3 0.03 0.09 0.04 0.23 0.7 0.09 0.27
    0.71 0.08 0.26 0.08 0.16 0.09 0.13 0.1 0.08 0.11 0.33 0.11 0.28 0.07 0.1 0.32 0.22 0.07
    0.05 0.24 0.38 0.1 0.15 0.08 0.14 0.1 0.07 0.04 0.19 0.56 0.14 0.58 0.32 0.82 0.74 0.15
    0.47 0.17 0.44 0.15 0.5 0.48
    """.split(),  # noqa: SIM905
    dtype=float,
)
NDKA = np.array(
    """
    3.01 8.54 8.09 10.42 17.4 12.75 6 13.2 15.54 6.01 15.96 17.86 5.18 8.9 13.41 20.75 11.6
    16.11 32.37 54.82 32.41 49.94 40.34 9.47 6.29 12.53 6.54 6.3 80.3 12.8 9.8 9.81 9.85
    18.21 5.03 14.04 21.93 8.02 7.42 8.38 6.59 9.63 13.12 7.96 14.34 41.43 7.63 7.06 12.59
    13.56 3.87 9.44 7.66 12.98 419.19 27.19 22.27 9.95 21.22 11.73 10.4 58.83 6.39 11.09
    12.22 13.67 17.21 22.63 12.9 9.7 21.57 8.23 72.57 15.54 10.51 10.6 14.57 5.19 9.63 4.61
    21.48 17.3 12.71 9.44 11.07 19.46 10.83 5.37 11.97 7.75 9.83 10.55 28.49 8.53 12.57 12.9
    46.83 11.68 12.67 9.01 9.57 34.06 11.72 14.26 47.61 11.67 24.58 10.33 13.87 15.89 22.43
    6.79 13.45
    """.split(),  # noqa: SIM905
    dtype=float,
)

NAMES = ["benign", "malignant", "normal"]


def quadratic_delong(truth, scores_a, scores_b) -> tuple[float, float, float, float]:
    """DeLong et al. (1988) from its definition: every (positive, negative) pair's kernel
    ψ = 1 if ranked right, ½ if tied, 0 if wrong; placements are row and column means of ψ.
    Returns (auc_a, auc_b, variance of auc_b − auc_a, z)."""
    truth = np.asarray(truth, bool)
    v10, v01, auc = [], [], []
    for scores in (np.asarray(scores_a, float), np.asarray(scores_b, float)):
        x, y = scores[truth], scores[~truth]
        psi = (x[:, None] > y[None, :]) + 0.5 * (x[:, None] == y[None, :])
        v10.append(psi.mean(axis=1))
        v01.append(psi.mean(axis=0))
        auc.append(psi.mean())
    m, n = truth.sum(), (~truth).sum()
    s = np.cov(np.array(v10)) / m + np.cov(np.array(v01)) / n
    variance = s[0, 0] + s[1, 1] - 2 * s[0, 1]
    return auc[0], auc[1], variance, (auc[1] - auc[0]) / np.sqrt(variance)


@pytest.mark.parametrize("ties", [True, False])
def test_delong_equals_the_quadratic_placement_definition(ties: bool) -> None:
    rng = np.random.default_rng(0)
    truth = rng.random(300) < 0.35
    a = truth + rng.normal(size=300)
    b = 0.5 * a + truth + rng.normal(size=300)  # correlated with a, and better
    if ties:
        a, b = np.round(a, 1), np.round(b, 1)
    result = delong_test(truth, a, b)
    auc_a, auc_b, variance, z = quadratic_delong(truth, a, b)
    assert result.auc_a == pytest.approx(auc_a, abs=1e-12)
    assert result.auc_b == pytest.approx(auc_b, abs=1e-12)
    assert result.difference == pytest.approx(auc_b - auc_a, abs=1e-12)
    assert result.variance == pytest.approx(variance, abs=1e-12)
    assert result.z == pytest.approx(z, abs=1e-9)
    assert result.p == pytest.approx(2 * stats.norm.sf(abs(z)), abs=1e-9)
    assert result.z > 2  # b is clearly better on 300 samples


def test_delong_reproduces_proc_roc_test_on_asah() -> None:
    """pROC's roc.test (DeLong, paired, two-sided) on data(aSAH), as asserted in pROC's own
    test suite (tests/testthat/test-roc.test.R) and shown in its roc.test documentation
    ("Z = 2.209, p-value = 0.02718" for wfns against s100b):
        roc.test(r.wfns, r.s100b): Z = 2.20898359144091,  p = 0.0271757822291882
        roc.test(r.wfns, r.ndka):  Z = 2.79777591868904,  p = 0.00514557970691098
        roc.test(r.ndka, r.s100b): Z = -1.39077002573558, p = 0.164295175223054
    with AUCs 0.823678861788618 (wfns), 0.731368563685637 (s100b), 0.611957994579946
    (ndka). pROC's Z is AUC(first) − AUC(second); here z is B − A, so B is pROC's first."""
    poor = np.array([c == "1" for c in POOR])
    wfns = np.array([int(c) for c in WFNS], dtype=float)
    assert len(poor) == len(wfns) == len(S100B) == len(NDKA) == 113 and poor.sum() == 41
    expected = [
        (S100B, wfns, 2.20898359144091, 0.0271757822291882),
        (NDKA, wfns, 2.79777591868904, 0.00514557970691098),
        (S100B, NDKA, -1.39077002573558, 0.164295175223054),
    ]
    for a, b, z, p in expected:
        result = delong_test(poor, a, b)
        assert result.z == pytest.approx(z, abs=1e-9)
        assert result.p == pytest.approx(p, abs=1e-9)
    first = delong_test(poor, S100B, wfns)
    assert (first.auc_a, first.auc_b) == pytest.approx((0.731368563685637, 0.823678861788618))
    assert delong_test(poor, NDKA, NDKA)[4:] == (0.0, 1.0)  # identical curves: z 0, p 1


def test_delong_needs_two_of_each_kind() -> None:
    assert np.isnan(delong_test([1, 0, 0, 0], [0.9, 0.1, 0.2, 0.3], [0.8, 0.2, 0.1, 0.4]).p)


def test_mcnemar_equals_exact_binomial_tests() -> None:
    rng = np.random.default_rng(1)
    for n, rate_a, rate_b in [(40, 0.7, 0.8), (200, 0.6, 0.6), (15, 0.2, 0.9), (7, 1.0, 1.0)]:
        a, b = rng.random(n) < rate_a, rng.random(n) < rate_b
        result = mcnemar_test(a, b)
        only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
        assert (result.only_a, result.only_b) == (only_a, only_b)
        if only_a + only_b:
            assert result.p == pytest.approx(stats.binomtest(only_b, only_a + only_b).pvalue)
        table = [[(a & b).sum(), only_a], [only_b, (~a & ~b).sum()]]
        assert result.p == pytest.approx(mcnemar(table, exact=True).pvalue, abs=1e-12)


def test_holm_equals_statsmodels() -> None:
    rng = np.random.default_rng(2)
    p = rng.random(12) ** 3
    p[[2, 7]] = np.nan
    adjusted = holm(p)
    tested = ~np.isnan(p)
    assert np.isnan(adjusted[~tested]).all()
    expected = multipletests(p[tested], method="holm")[1]
    assert adjusted[tested] == pytest.approx(expected, abs=1e-12)
    assert holm([]).shape == (0,)


def make_pair(task: str, n: int = 90, seed: int = 0):
    """(targets, (probs_a, chosen_a), (probs_b, chosen_b), names): B's scores sharper."""
    rng = np.random.default_rng(seed)
    if task == "multilabel":
        targets = (rng.random((n, 3)) < 0.4).astype(int)
        runs = []
        for signal in (0.3, 0.5):
            p = np.clip(signal * targets + (1 - signal) * rng.random((n, 3)), 0, 1)
            runs.append((p, p >= 0.5))
        return targets, *runs, ["a", "b", "c"]
    k = 2 if task == "binary" else 3
    targets = rng.integers(0, k, n)
    runs = []
    for signal in (0.8, 1.6):
        logits = rng.normal(size=(n, k)) + signal * np.eye(k)[targets]
        probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        runs.append((probs, np.eye(k, dtype=bool)[probs.argmax(1)]))
    names = ["negative", "positive"] if task == "binary" else NAMES
    return targets, *runs, names


@pytest.mark.parametrize("task", ["multiclass", "binary", "multilabel"])
def test_paired_bootstrap_equals_a_plain_reimplementation(task: str) -> None:
    """The same patients drawn for both models (the intervals.bootstrap_intervals protocol),
    the differences of metric_values, their percentiles."""
    targets, (pa, ca), (pb, cb), names = make_pair(task, n=60)
    groups = np.array([f"p{i % 13:02d}" for i in range(60)])
    got = paired_bootstrap(targets, pa, ca, pb, cb, task, names, groups, 40, seed=5, level=0.9)
    units, inverse = np.unique(groups, return_inverse=True)
    rng = np.random.default_rng(5)
    diffs = []
    for _ in range(40):
        drawn = rng.integers(0, len(units), len(units))
        rows = np.concatenate([np.flatnonzero(inverse == u) for u in drawn])
        a = metric_values(targets[rows], pa[rows], ca[rows], task, names)
        b = metric_values(targets[rows], pb[rows], cb[rows], task, names)
        diffs.append({k: b[k] - a[k] for k in a})
    for name in ("accuracy", "precision", "recall", "f1", "auroc", f"f1_{names[-1]}"):
        values = [d[name] for d in diffs if not np.isnan(d[name])]
        assert got[name] == pytest.approx(tuple(np.percentile(values, [5, 95])), abs=1e-12)
    if task != "binary":
        assert f"auroc_{names[0]}" in got
    assert paired_bootstrap(targets, pa, ca, pb, cb, task, names, n_resamples=0) == {}


def test_resampling_patients_widens_the_paired_interval_on_clustered_data() -> None:
    """40 patients × 6 images; whether A and B are right depends on the patient, so the
    difference B − A is clustered: 240 images carry the information of 40 patients."""
    rng = np.random.default_rng(3)
    patients = np.repeat(np.arange(40), 6)
    targets = rng.integers(0, 2, 40)[patients]
    runs = []
    for _ in range(2):
        right = (rng.random(40) < 0.75)[patients] ^ (rng.random(240) < 0.05)
        p = np.where(right == targets.astype(bool), 0.7, 0.3) + rng.normal(0, 0.01, 240)
        runs.append((np.stack([1 - p, p], 1), np.stack([p < 0.5, p >= 0.5], 1)))
    args = (targets, *runs[0], *runs[1], "binary", ["negative", "positive"])
    by_image = paired_bootstrap(*args, n_resamples=400)
    by_patient = paired_bootstrap(*args, groups=patients, n_resamples=400)
    for name in ("accuracy", "auroc"):
        image_width = by_image[name][1] - by_image[name][0]
        patient_width = by_patient[name][1] - by_patient[name][0]
        assert patient_width > 1.5 * image_width, name


@pytest.mark.parametrize("task", ["multiclass", "binary", "multilabel"])
def test_compare_models_table(task: str) -> None:
    targets, (pa, ca), (pb, cb), names = make_pair(task, n=120, seed=4)
    runs = {"resnet": (pa, ca), "densenet": (pb, cb), "vit": (pb.copy(), cb)}
    table = compare_models(targets, runs, task, names, groups=np.arange(120) // 3, n_resamples=60)
    assert list(table.columns) == list(COLUMNS)
    assert set(table["model_a"]) == {"resnet"} and set(table["model_b"]) == {"densenet", "vit"}
    one = table[table["model_b"] == "densenet"]
    per_class = [("accuracy", c) for c in names] if task == "multilabel" else []
    per_class += [] if task == "binary" else [("auroc", c) for c in names]
    headline = [(m, "all") for m in ("accuracy", "precision", "recall", "f1", "auroc")]
    assert list(zip(one["metric"], one["class"], strict=True)) == headline + per_class
    value_a = metric_values(targets, pa, ca, task, names)
    value_b = metric_values(targets, pb, cb, task, names)
    head = one[one["class"] == "all"].set_index("metric")
    for metric in ("accuracy", "f1", "auroc"):
        assert head.loc[metric, "value_a"] == pytest.approx(value_a[metric], abs=1e-12)
        assert head.loc[metric, "difference"] == pytest.approx(
            value_b[metric] - value_a[metric], abs=1e-12
        )
    intervals = paired_bootstrap(
        targets, pa, ca, pb, cb, task, names, np.arange(120) // 3, n_resamples=60
    )
    assert tuple(head.loc["f1", ["ci_low", "ci_high"]]) == pytest.approx(intervals["f1"])
    truth = np.eye(len(names), dtype=bool)[targets] if task != "multilabel" else targets > 0
    for row in one[one["test"] == "delong"].itertuples():
        k = 1 if task == "binary" else names.index(row._4)
        expected = delong_test(truth[:, k], pa[:, k], pb[:, k])
        assert (row.statistic, row.p) == pytest.approx((expected.z, expected.p), abs=1e-12)
        assert row.value_b - row.value_a == pytest.approx(expected.difference, abs=1e-12)
    for row in one[one["test"] == "mcnemar-exact"].itertuples():
        if task == "multilabel":
            k = names.index(row._4)
            expected = mcnemar_test(ca[:, k] == truth[:, k], cb[:, k] == truth[:, k])
        else:
            expected = mcnemar_test(ca[truth], cb[truth])
        assert row.p == pytest.approx(expected.p, abs=1e-12)
    assert set(one.loc[~one["test"].isin(["delong", "mcnemar-exact"]), "test"]) == {"none"}
    tested = table["p"].notna()
    assert table.loc[tested, "p_holm"].to_numpy() == pytest.approx(
        multipletests(table.loc[tested, "p"], method="holm")[1]
    )
    assert table["p_holm"].isna().equals(table["p"].isna())
    densenet = table.loc[table["model_b"] == "densenet", "difference"].to_numpy()
    vit = table.loc[table["model_b"] == "vit", "difference"].to_numpy()
    assert densenet == pytest.approx(vit, nan_ok=True)  # the same run twice


def test_comparison_figure_has_a_row_per_comparison(tmp_path: Path) -> None:
    targets, (pa, ca), (pb, cb), names = make_pair("multiclass", n=80, seed=6)
    runs = {"resnet": (pa, ca), "densenet": (pb, cb)}
    table = compare_models(targets, runs, "multiclass", names, n_resamples=30)
    fig = comparison_figure(table)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert len(labels) == len(table) == 8
    assert labels[0] == "densenet − resnet: accuracy"
    assert labels[-1] == "densenet − resnet: auroc [normal]"
    assert ax.get_yticks()[0] == max(ax.get_yticks())  # the first row on top
    assert any(line.get_xdata()[0] == 0 and line.get_linestyle() == "--" for line in ax.lines)
    assert sum(t.get_text().startswith("p=") for t in ax.texts) == table["p"].notna().sum()
    assert len(comparison_figure(table, ["auroc"]).axes[0].get_yticks()) == 4
    save_figure(fig, tmp_path / "comparison.png")
    assert (tmp_path / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
