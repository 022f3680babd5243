"""The test report: per-sample predictions and the per-class table."""

from __future__ import annotations

import numpy as np


def test_per_class_report_equals_sklearn() -> None:
    from sklearn.metrics import precision_recall_fscore_support

    from medclf.reporting import per_class_report, predictions_frame

    rng = np.random.default_rng(0)
    target = rng.integers(0, 3, 40)
    probs = rng.dirichlet(np.ones(3), 40)
    frame = predictions_frame(np.arange(40), target, probs, ["a", "b", "c"])
    table = per_class_report(frame, ["a", "b", "c"])
    p, r, f, support = precision_recall_fscore_support(target, probs.argmax(1), labels=[0, 1, 2])
    np.testing.assert_allclose(table.loc[["a", "b", "c"], "precision"], p)
    np.testing.assert_allclose(table.loc[["a", "b", "c"], "recall"], r)
    np.testing.assert_allclose(table.loc[["a", "b", "c"], "f1"], f)
    assert table.loc[["a", "b", "c"], "support"].tolist() == support.tolist()
    assert list(table.index) == ["a", "b", "c", "macro avg", "weighted avg"]
