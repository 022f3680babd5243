"""Decision curves: net benefit equals its formula counted with scikit-learn's confusion
matrix and a hand-worked example; treat-all and treat-none; one curve per label."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix

from medclf.errors import ConfigError
from medclf.evaluation.decision import decision_curve, decision_curve_figure, net_benefit
from medclf.evaluation.plots import save_figure


def reference_net_benefit(truth, scores, pt: float) -> float:
    """TP/n − FP/n · pt/(1 − pt) with the counts of scikit-learn's confusion matrix for the
    decision "treat when the score is at least pt"."""
    _, fp, _, tp = confusion_matrix(truth, scores >= pt, labels=[0, 1]).ravel()
    n = len(truth)
    return tp / n - fp / n * pt / (1 - pt)


def test_net_benefit_by_hand() -> None:
    """10 patients, 4 with the disease. At pt = 0.3 (odds 3/7) the scores ≥ 0.3 are treated:
    3 true positives (0.9, 0.8, 0.3) and 2 false positives (0.6, 0.3), so NB = 3/10 −
    2/10 · 3/7 = 0.3 − 0.0857142… = 0.2142857…; at pt = 0.5 (odds 1): TP 2, FP 1, NB 0.1;
    at pt = 0: everyone treated, NB = prevalence = 0.4. Treat-all at 0.3: 0.4 − 0.6 · 3/7."""
    truth = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    scores = np.array([0.9, 0.8, 0.3, 0.1, 0.6, 0.3, 0.2, 0.1, 0.05, 0.0])
    got = net_benefit(truth, scores, [0.0, 0.3, 0.5])
    assert got == pytest.approx([0.4, 0.3 - 0.2 * 3 / 7, 0.1], abs=1e-12)
    table = decision_curve(truth, np.stack([1 - scores, scores], 1), "binary", ["no", "yes"])
    row = table[np.isclose(table["threshold"], 0.3)].iloc[0]
    assert row["label"] == "yes" and row["treat_none"] == 0.0
    assert row["treat_all"] == pytest.approx(0.4 - 0.6 * 3 / 7, abs=1e-12)
    assert row["model"] == pytest.approx(0.3 - 0.2 * 3 / 7, abs=1e-12)


@pytest.mark.parametrize("rounded", [False, True])
def test_net_benefit_equals_the_formula(rounded: bool) -> None:
    rng = np.random.default_rng(0)
    truth = (rng.random(400) < 0.3).astype(int)
    scores = np.clip(0.25 + 0.4 * truth + rng.normal(0, 0.2, 400), 0, 1)
    if rounded:  # scores equal to thresholds: treated, as models.outputs.decide decides
        scores = np.round(scores, 2)
    thresholds = np.round(np.arange(0.0, 1.0, 0.01), 2)
    got = net_benefit(truth, scores, thresholds)
    expected = [reference_net_benefit(truth, scores, pt) for pt in thresholds]
    assert got == pytest.approx(expected, abs=1e-12)


def test_multilabel_has_a_curve_per_label_and_multiclass_is_refused(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    targets = (rng.random((200, 3)) < [0.1, 0.3, 0.5]).astype(int)
    probs = np.clip(0.2 + 0.5 * targets + rng.normal(0, 0.2, (200, 3)), 0, 1)
    names = ["effusion", "nodule", "edema"]
    thresholds = [0.05, 0.2, 0.6]
    table = decision_curve(targets, probs, "multilabel", names, thresholds, model="densenet")
    assert list(table.columns) == ["threshold", "label", "densenet", "treat_all", "treat_none"]
    assert len(table) == 9 and list(table["label"].unique()) == names
    for k, name in enumerate(names):
        part = table[table["label"] == name]
        expected = [reference_net_benefit(targets[:, k], probs[:, k], pt) for pt in thresholds]
        assert part["densenet"].to_numpy() == pytest.approx(expected, abs=1e-12)
        prevalence = targets[:, k].mean()
        pt = np.array(thresholds)
        assert part["treat_all"].to_numpy() == pytest.approx(
            prevalence - (1 - prevalence) * pt / (1 - pt), abs=1e-12
        )
    with pytest.raises(ConfigError, match="binary or multi-label"):
        decision_curve(rng.integers(0, 3, 20), rng.dirichlet(np.ones(3), 20), "multiclass", names)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        net_benefit([0, 1], [0.2, 0.7], [1.0])

    other = decision_curve(targets, probs**2, "multilabel", names, thresholds, model="resnet")
    merged = table.merge(other[["threshold", "label", "resnet"]], on=["threshold", "label"])
    fig = decision_curve_figure(merged)
    assert len(fig.axes) == 3
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend == ["densenet", "resnet", "treat all", "treat none"]
    assert fig.axes[1].get_title() == "nodule"
    save_figure(fig, tmp_path / "decision.png")
    assert (tmp_path / "decision.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_net_benefit_equals_dcurves() -> None:
    """dcurves' ``dca`` (the decision-curve package of Vickers' group) on the same data:
    the model's, treat-all's and treat-none's net benefit equal ours to 1e-9. dcurves is a
    test-only oracle installed without its dependencies (``make setup``): its ``lifelines``
    pins pandas < 3 and serves only its survival analysis, so it is stubbed here."""
    import sys
    import types

    import pandas as pd

    sys.modules.setdefault("lifelines", types.ModuleType("lifelines"))
    from dcurves import dca

    rng = np.random.default_rng(5)
    truth = rng.integers(0, 2, 300)
    scores = np.clip(0.35 * truth + 0.65 * rng.random(300), 0, 1).round(3)  # ties included
    thresholds = np.round(np.arange(0.01, 0.99, 0.01), 2)
    theirs = dca(
        data=pd.DataFrame({"y": truth, "p": scores}),
        outcome="y",
        modelnames=["p"],
        thresholds=thresholds,
    )
    ours = decision_curve(
        truth, np.stack([1 - scores, scores], 1), "binary", ["no", "yes"], thresholds
    )
    for model, column in (("p", "model"), ("all", "treat_all"), ("none", "treat_none")):
        expected = theirs[theirs["model"] == model].sort_values("threshold")
        np.testing.assert_allclose(ours[column], expected["net_benefit"], atol=1e-9)
