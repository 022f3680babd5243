"""The test report: per-sample predictions and the per-class table."""

from __future__ import annotations

import numpy as np


def test_per_class_report_equals_sklearn() -> None:
    from sklearn.metrics import precision_recall_fscore_support

    from medclf.evaluation.report import per_class_report
    from medclf.inference.table import predictions_frame

    rng = np.random.default_rng(0)
    target = rng.integers(0, 3, 40)
    probs = rng.dirichlet(np.ones(3), 40)
    frame = predictions_frame(np.arange(40), probs, ["a", "b", "c"], "multiclass", 0.5, target)
    table = per_class_report(frame, ["a", "b", "c"])
    p, r, f, support = precision_recall_fscore_support(target, probs.argmax(1), labels=[0, 1, 2])
    np.testing.assert_allclose(table.loc[["a", "b", "c"], "precision"], p)
    np.testing.assert_allclose(table.loc[["a", "b", "c"], "recall"], r)
    np.testing.assert_allclose(table.loc[["a", "b", "c"], "f1"], f)
    assert table.loc[["a", "b", "c"], "support"].tolist() == support.tolist()
    assert list(table.index) == ["a", "b", "c", "macro avg", "weighted avg"]
    # sensitivity and specificity, one-vs-rest, from scikit-learn's confusion matrix
    from sklearn.metrics import multilabel_confusion_matrix

    matrices = multilabel_confusion_matrix(target, probs.argmax(1), labels=[0, 1, 2])
    tn, fp, fn, tp = (matrices.reshape(3, 4).T).astype(float)
    np.testing.assert_allclose(table.loc[["a", "b", "c"], "sensitivity"], tp / (tp + fn))
    np.testing.assert_allclose(table.loc[["a", "b", "c"], "specificity"], tn / (tn + fp))


def test_per_class_figure_has_a_bar_per_class_and_kind() -> None:
    import pandas as pd

    from medclf.evaluation.plots import per_class_figure

    report = pd.DataFrame(
        {"precision": [1, 0.5], "sensitivity": [0.2, 0.4], "specificity": [0.9, 1], "f1": [0.3, 0]},
        index=["a", "b"],
    )
    ax = per_class_figure(report).axes[0]
    assert len(ax.patches) == 8
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b"]


def test_confusion_figures_show_row_rates_and_counts() -> None:
    from medclf.evaluation.plots import confusion_matrix_figure, multilabel_confusion_figure

    counts = np.array([[3, 1], [0, 0]])
    texts = [t.get_text() for t in confusion_matrix_figure(counts, ["a", "b"]).axes[0].texts]
    assert texts == ["0.75\n(3)", "0.25\n(1)", "0.00\n(0)", "0.00\n(0)"]
    grid = multilabel_confusion_figure(np.array([[[5, 0], [1, 1]]] * 5), list("vwxyz"))
    visible = [ax for ax in grid.axes if ax.get_visible() and ax.axison]
    assert [ax.get_title() for ax in visible] == list("vwxyz")
    assert visible[0].texts[2].get_text() == "0.50\n(1)"


def test_roc_pr_figures_one_curve_per_present_class() -> None:
    from medclf.evaluation.plots import roc_pr_figures

    rng = np.random.default_rng(1)
    target = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    probs = rng.dirichlet(np.ones(3), len(target))
    roc, pr = roc_pr_figures(target, probs, ["a", "b", "c"])
    assert len(roc.axes[0].get_lines()) == 4  # 3 classes + the chance diagonal
    assert len(pr.axes[0].get_lines()) == 3
    roc_b, _ = roc_pr_figures(target % 2, np.c_[1 - probs[:, 0], probs[:, 0]], ["n", "p"], "binary")
    assert [t.get_text() for t in roc_b.axes[0].get_legend().get_texts()][0].startswith("p (AUC")


def test_training_curves_mark_the_unfreezing() -> None:
    from medclf.evaluation.plots import training_curves_figure

    history = [{"epoch": e, "train/loss": 1.0 / (e + 1), "val/f1": 0.1 * e} for e in range(4)]
    plain = training_curves_figure(history)
    marked = training_curves_figure(history, unfrozen_at=2)
    for ax in marked.axes:
        lines = [line for line in ax.get_lines() if line.get_label() == "backbone unfrozen"]
        assert len(lines) == 1 and lines[0].get_xdata()[0] == 1.5
    assert not any(line.get_label() == "backbone unfrozen" for line in plain.axes[0].get_lines())
