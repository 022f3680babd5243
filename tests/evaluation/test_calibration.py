"""Calibration: ECE and Brier against torchmetrics and scikit-learn, temperature scaling on
a deliberately over-confident model, and the reliability diagram."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, brier_score_loss, log_loss, roc_auc_score
from torchmetrics.classification import BinaryCalibrationError, MulticlassCalibrationError

from medclf.errors import DataError
from medclf.evaluation.calibration import (
    brier_score,
    expected_calibration_error,
    fit_temperature,
    reliability_diagram,
    scaled_probs,
)
from medclf.evaluation.plots import save_figure


def random_probs(task: str, n: int = 500, k: int = 4, seed: int = 0):
    """Random (probs, targets) of a task, with some probabilities exactly 0 and 1."""
    rng = np.random.default_rng(seed)
    if task == "multiclass":
        probs = rng.dirichlet(np.full(k, 0.5), size=n)
        probs[:5] = np.eye(k)[rng.integers(0, k, 5)]
        targets = rng.integers(0, k, n)
    elif task == "binary":
        positive = rng.random(n)
        positive[:3], positive[3:6] = 0.0, 1.0
        probs = np.stack([1 - positive, positive], axis=1)
        targets = rng.integers(0, 2, n)
    else:
        probs = rng.random((n, k))
        probs[:3, 0], probs[3:6, 1] = 1.0, 0.0
        targets = rng.integers(0, 2, (n, k))
    return probs, targets


def test_ece_equals_torchmetrics_calibration_error() -> None:
    probs, targets = random_probs("multiclass", k=5)
    expected = MulticlassCalibrationError(num_classes=5, n_bins=15, norm="l1")(
        torch.from_numpy(probs), torch.from_numpy(targets)
    )
    assert expected_calibration_error(probs, targets, "multiclass") == pytest.approx(
        float(expected), abs=1e-6
    )

    probs, targets = random_probs("binary", seed=1)
    expected = BinaryCalibrationError(n_bins=15, norm="l1")(
        torch.from_numpy(probs[:, 1]), torch.from_numpy(targets)
    )
    assert expected_calibration_error(probs, targets, "binary") == pytest.approx(
        float(expected), abs=1e-6
    )

    probs, targets = random_probs("multilabel", seed=2)
    per_label = expected_calibration_error(probs, targets, "multilabel")
    metric = BinaryCalibrationError(n_bins=15, norm="l1")
    expected = []
    for p, t in zip(probs.T, targets.T, strict=True):
        metric.reset()
        expected.append(float(metric(torch.from_numpy(p), torch.from_numpy(t))))
    assert list(per_label) == [0, 1, 2, 3]
    np.testing.assert_allclose(list(per_label.values()), expected, atol=1e-6)
    mean = expected_calibration_error(probs, targets, "multilabel", average="macro")
    assert mean == pytest.approx(np.mean(expected), abs=1e-6)


def test_ece_bins_and_a_hand_computed_value() -> None:
    """Two bins: confidences 0.2, 0.4 (right 1 of 2) and 0.8 (right) → (2/3)·0.2 + (1/3)·0.2."""
    probs = np.array([[0.8, 0.2], [0.6, 0.4], [0.2, 0.8]])
    assert expected_calibration_error(probs, [1, 0, 1], "binary", bins=2) == pytest.approx(0.2)


def test_brier_score_matches_sklearn_and_the_formula() -> None:
    probs, targets = random_probs("binary")
    assert brier_score(probs, targets, "binary") == pytest.approx(
        brier_score_loss(targets, probs[:, 1]), abs=1e-12
    )
    # two classes as multiclass: Σ over both columns, twice the binary value
    assert brier_score(probs, targets, "multiclass") == pytest.approx(
        2 * brier_score_loss(targets, probs[:, 1]), abs=1e-12
    )

    probs, targets = random_probs("multiclass", k=5)
    by_hand = np.mean(
        [sum((p[k] - (k == y)) ** 2 for k in range(5)) for p, y in zip(probs, targets, strict=True)]
    )
    assert brier_score(probs, targets, "multiclass") == pytest.approx(by_hand, abs=1e-9)

    probs, targets = random_probs("multilabel")
    per_label = brier_score(probs, targets, "multilabel")
    expected = [brier_score_loss(t, p) for p, t in zip(probs.T, targets.T, strict=True)]
    np.testing.assert_allclose(list(per_label.values()), expected, atol=1e-9)
    assert brier_score(probs, targets, "multilabel", average="macro") == pytest.approx(
        np.mean(expected)
    )


DELTAS = np.array([-0.02, 0.0, 0.02])


def calibrated_logits(task: str, n: int = 4000, k: int = 3, seed: int = 0):
    """Logits z of a calibrated model and labels drawn from its own probabilities."""
    rng = np.random.default_rng(seed)
    if task == "multiclass":
        z = rng.normal(0.0, 1.5, (n, k)) + 1.5 * np.eye(k)[rng.integers(0, k, n)]
        probs = scaled_probs(z, 1.0, task)
        targets = (probs.cumsum(axis=1) < rng.random((n, 1))).sum(axis=1)
    else:
        width = 1 if task == "binary" else k
        z = rng.normal(0.0, 2.0, (n, width))
        targets = (rng.random((n, width)) < 1 / (1 + np.exp(-z))).astype(int)
        if task == "binary":
            targets = targets[:, 0]
    return z, targets


def test_temperature_undoes_multiclass_overconfidence() -> None:
    z, targets = calibrated_logits("multiclass")
    logits = torch.from_numpy(3 * z).float()
    temperature = fit_temperature(logits, torch.from_numpy(targets), "multiclass")
    assert temperature == pytest.approx(3.0, rel=0.1)

    # a minimum of the NLL that scikit-learn computes
    nll = [log_loss(targets, scaled_probs(3 * z, t, "multiclass")) for t in temperature + DELTAS]
    assert nll[1] <= min(nll[0], nll[2])

    before = scaled_probs(3 * z, 1.0, "multiclass")
    after = scaled_probs(3 * z, temperature, "multiclass")
    assert expected_calibration_error(after, targets, "multiclass") < 0.5 * (
        expected_calibration_error(before, targets, "multiclass")
    )
    assert brier_score(after, targets, "multiclass") < brier_score(before, targets, "multiclass")
    assert accuracy_score(targets, after.argmax(1)) == accuracy_score(targets, before.argmax(1))
    # one-vs-rest scores rank samples by softmax_k, which a temperature may reorder slightly
    # for K > 2 (it is exact for one sigmoid): the AUROC barely moves
    auroc = [roc_auc_score(targets, p, multi_class="ovr", average="macro") for p in (before, after)]
    assert auroc[1] == pytest.approx(auroc[0], abs=2e-3)


def test_temperature_undoes_binary_overconfidence() -> None:
    z, targets = calibrated_logits("binary")
    assert z.shape == (4000, 1)
    temperature = fit_temperature(3 * z, targets, "binary")
    assert temperature == pytest.approx(3.0, rel=0.1)

    before = scaled_probs(3 * z, 1.0, "binary")
    after = scaled_probs(3 * z, temperature, "binary")
    assert after.shape == (4000, 2)
    np.testing.assert_allclose(after.sum(axis=1), 1.0)
    assert expected_calibration_error(after, targets, "binary") < 0.5 * (
        expected_calibration_error(before, targets, "binary")
    )
    assert accuracy_score(targets, after.argmax(1)) == accuracy_score(targets, before.argmax(1))
    assert roc_auc_score(targets, after[:, 1]) == roc_auc_score(targets, before[:, 1])


def test_multilabel_temperature_is_shared_and_calibrated_logits_keep_one() -> None:
    z, targets = calibrated_logits("multilabel", n=3000)
    assert fit_temperature(2 * z, targets, "multilabel") == pytest.approx(2.0, rel=0.1)
    assert fit_temperature(z, targets, "multilabel") == pytest.approx(1.0, rel=0.1)


def test_temperature_under_inference_mode_and_without_samples() -> None:
    z, targets = calibrated_logits("binary", n=500)
    with torch.inference_mode():
        logits = torch.from_numpy(2 * z)
        assert fit_temperature(logits, targets, "binary") > 1.0
    with pytest.raises(DataError, match="no"):
        fit_temperature(np.zeros((0, 3)), np.zeros(0, dtype=int), "multiclass")
    with pytest.raises(DataError, match=r"\(N, 1\)"):
        fit_temperature(np.zeros((4, 2)), np.zeros(4, dtype=int), "binary")


@pytest.mark.parametrize(
    ("task", "names", "axes"),
    [
        ("multiclass", ("a", "b", "c", "d"), 1),
        ("binary", ("benign", "malignant"), 1),
        ("multilabel", ("a", "b", "c"), 3),
    ],
)
def test_reliability_diagram(task: str, names: tuple[str, ...], axes: int, tmp_path) -> None:
    probs, targets = random_probs(task, k=len(names) if task != "binary" else 2)
    after = probs**1.5 if task != "multiclass" else probs
    fig = reliability_diagram(probs, targets, task, names, after=after)
    assert len(fig.axes) == axes
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert labels[0] == "perfectly calibrated"
    assert labels[1].startswith("before (ECE") and labels[2].startswith("after (ECE")
    ece = expected_calibration_error(probs, targets, task)
    first = ece[0] if task == "multilabel" else ece
    assert f"{first:.3f}" in fig.axes[0].get_title()
    save_figure(fig, tmp_path / "reliability.png")
    assert (tmp_path / "reliability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    single = reliability_diagram(probs, targets, task, names)
    assert len(single.axes) == axes
    assert [line.get_label() for line in single.axes[0].get_lines()][1].startswith("ECE")
    plt.close(single)
