"""Subgroup tables: each subgroup's metrics equal scikit-learn's on its rows; numeric
columns are binned; the forest plot has a row per subgroup."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

from medclf.errors import ConfigError
from medclf.evaluation.intervals import bootstrap_intervals
from medclf.evaluation.plots import save_figure
from medclf.evaluation.proportions import MIN_UNITS
from medclf.evaluation.subgroups import bin_column, forest_figure, subgroup_table

NAMES = ["benign", "malignant", "normal"]


@pytest.fixture
def study():
    """150 multiclass test images of 50 patients (3 each) with sex, age and site columns."""
    rng = np.random.default_rng(0)
    n = 150
    targets = np.arange(n) % 3
    logits = rng.normal(size=(n, 3)) + 1.2 * np.eye(3)[targets]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    chosen = np.eye(3, dtype=bool)[probs.argmax(1)]
    patients = np.repeat(np.arange(50), 3)
    age = pd.Series(np.repeat(rng.integers(20, 90, 50), 3).astype(float))
    age[[5, 6]] = np.nan
    columns = {
        "sex": pd.Series(np.repeat(rng.choice(["F", "M"], 50), 3)),
        "age": age,
        "site": pd.Series(np.repeat(rng.choice(["A", "B", None], 50), 3)),
    }
    return targets, probs, chosen, patients, columns


def test_subgroup_metrics_equal_sklearn_on_the_subgroup_rows(study) -> None:
    targets, probs, chosen, patients, columns = study
    table = subgroup_table(
        targets,
        probs,
        chosen,
        "multiclass",
        NAMES,
        columns,
        bins={"age": [20, 50, 90]},
        groups=patients,
        n_resamples=50,
        seed=1,
    )
    assert list(table.columns) == [
        "column",
        "subgroup",
        "n",
        "accuracy",
        "accuracy_ci_low",
        "accuracy_ci_high",
        "accuracy_interval",
        "f1",
        "f1_ci_low",
        "f1_ci_high",
        "f1_interval",
        "auroc",
        "auroc_ci_low",
        "auroc_ci_high",
        "auroc_interval",
    ]
    assert table.iloc[0][["column", "subgroup", "n"]].tolist() == ["overall", "all", 150]
    assert set(table["column"]) == {"overall", "sex", "age", "site"}
    assert table.loc[table["column"] == "age", "subgroup"].tolist() == [
        "[20, 50)",
        "[50, 90]",
        "missing",
    ]
    assert "missing" in table.loc[table["column"] == "site", "subgroup"].tolist()
    predicted = probs.argmax(1)
    for row in table.itertuples():
        if row.column == "overall":
            rows = np.ones(150, dtype=bool)
        else:
            rows = (
                bin_column(columns[row.column], {"age": [20, 50, 90]}.get(row.column, 4))
                == row.subgroup
            ).to_numpy()
        assert row.n == rows.sum() > 0
        y, p = targets[rows], predicted[rows]
        assert row.accuracy == pytest.approx(accuracy_score(y, p), abs=1e-12)
        assert row.f1 == pytest.approx(f1_score(y, p, average="macro", zero_division=0), abs=1e-12)
        if len(set(y)) == 3:
            auroc = roc_auc_score(y, probs[rows], multi_class="ovr", average="macro")
            assert row.auroc == pytest.approx(auroc, abs=1e-12)
        interval = bootstrap_intervals(
            y,
            probs[rows],
            chosen[rows],
            "multiclass",
            NAMES,
            groups=patients[rows],
            n_resamples=50,
            seed=1,
        )["f1"]
        if len(set(patients[rows])) < MIN_UNITS:  # e.g. age missing: 2 images
            assert (
                row.f1_interval == "too small" and np.isnan([row.f1_ci_low, row.f1_ci_high]).all()
            )
        else:
            assert row.f1_interval == "bootstrap"
            assert (row.f1_ci_low, row.f1_ci_high) == pytest.approx(interval, abs=1e-12)
        assert row.accuracy_ci_low <= row.accuracy_ci_high
    assert (table["f1_interval"] == "bootstrap").sum() >= 6


def test_unknown_metric_names_the_key(study) -> None:
    targets, probs, chosen, _, columns = study
    with pytest.raises(ConfigError, match="metrics.*'aucroc'.*auroc"):
        subgroup_table(targets, probs, chosen, "multiclass", NAMES, columns, metrics=["aucroc"])


def test_bin_column_with_edges() -> None:
    age = pd.Series([25, 40, 41.5, 59.9, 60, 90, np.nan, 95, 10])
    binned = bin_column(age, [20, 40, 60, 90])
    assert binned.tolist() == [
        "[20, 40)",
        "[40, 60)",
        "[40, 60)",
        "[40, 60)",
        "[60, 90]",
        "[60, 90]",
        "missing",
        "> 90",
        "< 20",
    ]
    assert binned.cat.categories.tolist() == [
        "< 20",
        "[20, 40)",
        "[40, 60)",
        "[60, 90]",
        "> 90",
        "missing",
    ]


def test_bin_column_with_quantile_bins() -> None:
    values = pd.Series(np.arange(1, 101, dtype=float))
    binned = bin_column(values, 4)
    edges = pd.qcut(values, 4, retbins=True)[1]
    assert edges.tolist() == [1, 25.75, 50.5, 75.25, 100]
    assert binned.cat.categories.tolist() == [
        "[1, 25.75)",
        "[25.75, 50.5)",
        "[50.5, 75.25)",
        "[75.25, 100]",
    ]
    assert binned.value_counts().tolist() == [25, 25, 25, 25]
    constant = bin_column(pd.Series([3, 3, 3]), 4)  # repeated edges dropped: one bin
    assert constant.tolist() == ["[3, 3]"] * 3


def test_bin_column_keeps_text_and_marks_missing() -> None:
    sex = pd.Series(["F", "M", None, "F", np.nan])
    assert bin_column(sex, 4).tolist() == ["F", "M", "missing", "F", "missing"]
    assert bin_column(pd.Series([True, False]), 4).tolist() == ["True", "False"]


def test_forest_figure_has_a_row_per_subgroup(study, tmp_path: Path) -> None:
    targets, probs, chosen, patients, columns = study
    table = subgroup_table(
        targets, probs, chosen, "multiclass", NAMES, columns, groups=patients, n_resamples=30
    )
    fig = forest_figure(table, "f1")
    ax = fig.axes[0]
    subgroups = table[table["column"] != "overall"]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert len(ax.get_yticks()) == len(subgroups) == len(labels)
    first = subgroups.iloc[0]
    assert f"{first.column} = {first.subgroup} (n={first.n})" in labels
    overall = table.loc[0, "f1"]
    assert any(line.get_linestyle() == "--" and line.get_xdata()[0] == overall for line in ax.lines)
    save_figure(fig, tmp_path / "forest.png")
    assert (tmp_path / "forest.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ConfigError, match="precision"):
        forest_figure(table, "precision")
