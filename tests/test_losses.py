"""Losses against their published formulas, computed by hand with NumPy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medclf.models.losses import (
    CrossEntropyLoss,
    FocalLoss,
    KLDivergenceLoss,
    balanced_class_weights,
)

LOGITS = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0], [-0.5, 1.5, 0.0], [1.0, 1.0, 1.0]])
TARGET = torch.tensor([0, 2, 1, 1])
SOFT = torch.tensor([[0.7, 0.2, 0.1], [0.0, 0.1, 0.9], [0.25, 0.5, 0.25], [0.0, 1.0, 0.0]])
MULTI = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0]])


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def one_hot(t: torch.Tensor, n: int = 3) -> np.ndarray:
    return np.eye(n)[t.numpy()]


Q = softmax(LOGITS.double().numpy())
S = 1 / (1 + np.exp(-LOGITS.double().numpy()))


def test_cross_entropy_formula() -> None:
    expected = np.mean(-(one_hot(TARGET) * np.log(Q)).sum(axis=1))
    assert CrossEntropyLoss()(LOGITS, TARGET).item() == pytest.approx(expected, rel=1e-6)
    torch.testing.assert_close(
        CrossEntropyLoss()(LOGITS, TARGET), torch.nn.functional.cross_entropy(LOGITS, TARGET)
    )


def test_focal_formula_and_gamma_zero_is_cross_entropy() -> None:
    p = one_hot(TARGET)
    expected = np.mean(-(((1 - Q) ** 2) * p * np.log(Q)).sum(axis=1))
    assert FocalLoss(gamma=2.0)(LOGITS, TARGET).item() == pytest.approx(expected, rel=1e-6)
    torch.testing.assert_close(
        FocalLoss(gamma=0.0)(LOGITS, TARGET), CrossEntropyLoss()(LOGITS, TARGET)
    )
    assert FocalLoss(gamma=2.0)(LOGITS, TARGET) < CrossEntropyLoss()(LOGITS, TARGET)


def test_focal_alpha_weights_each_class() -> None:
    alpha = [0.25, 0.5, 2.0]
    p = one_hot(TARGET)
    expected = np.mean(-(np.array(alpha) * ((1 - Q) ** 2) * p * np.log(Q)).sum(axis=1))
    assert FocalLoss(alpha=alpha)(LOGITS, TARGET).item() == pytest.approx(expected, rel=1e-6)


def test_kl_formula_with_soft_targets() -> None:
    p = SOFT.double().numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(p > 0, p * np.log(p), 0.0)
    expected = np.mean((plogp - p * np.log(Q)).sum(axis=1))
    assert KLDivergenceLoss()(LOGITS, SOFT).item() == pytest.approx(expected, rel=1e-6)
    torch_kl = torch.nn.functional.kl_div(
        torch.log_softmax(LOGITS, dim=1), SOFT, reduction="batchmean"
    )
    torch.testing.assert_close(KLDivergenceLoss()(LOGITS, SOFT), torch_kl)


def test_kl_equals_cross_entropy_for_one_hot_targets() -> None:
    torch.testing.assert_close(
        KLDivergenceLoss()(LOGITS, TARGET), CrossEntropyLoss()(LOGITS, TARGET)
    )


def test_sigmoid_variants_formulas() -> None:
    p = MULTI.double().numpy()
    bce = -(p * np.log(S) + (1 - p) * np.log(1 - S))
    ce = CrossEntropyLoss(activation="sigmoid")(LOGITS, MULTI).item()
    assert ce == pytest.approx(bce.mean(), rel=1e-6)
    qt = np.where(p == 1, S, 1 - S)
    focal = (-((1 - qt) ** 2) * np.log(qt)).mean()
    assert FocalLoss("sigmoid", gamma=2.0)(LOGITS, MULTI).item() == pytest.approx(focal, rel=1e-6)
    soft = SOFT.double().numpy()
    kl = soft * np.log(np.where(soft > 0, soft, 1) / S) + (1 - soft) * np.log(
        np.where(soft < 1, 1 - soft, 1) / (1 - S)
    )
    kl_value = KLDivergenceLoss("sigmoid")(LOGITS, SOFT).item()
    assert kl_value == pytest.approx(kl.mean(), rel=1e-6)


def test_class_weights_multiply_per_sample_loss() -> None:
    weights = [1.0, 3.0, 0.5]
    per_sample = -(one_hot(TARGET) * np.log(Q)).sum(axis=1)
    expected = np.mean(np.array(weights)[TARGET.numpy()] * per_sample)
    loss = CrossEntropyLoss(class_weights=weights)(LOGITS, TARGET).item()
    assert loss == pytest.approx(expected, rel=1e-6)


def test_balanced_weights_equal_sklearn() -> None:
    from sklearn.utils.class_weight import compute_class_weight

    labels = np.array([0, 0, 0, 0, 1, 1, 2, 0, 1, 0])
    expected = compute_class_weight("balanced", classes=np.arange(3), y=labels)
    assert balanced_class_weights(labels, 3) == pytest.approx(expected.tolist())
    multi = np.array([[1, 0], [1, 1], [1, 0], [0, 0]])
    assert balanced_class_weights(multi, 2) == pytest.approx([4 / (2 * 3), 4 / (2 * 1)])


def test_losses_are_differentiable() -> None:
    for loss in (CrossEntropyLoss(), FocalLoss(), KLDivergenceLoss()):
        logits = LOGITS.clone().requires_grad_(True)
        loss(logits, TARGET).backward()
        assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_balanced_weights_are_plain_floats_for_safe_checkpoints() -> None:
    weights = balanced_class_weights(np.array([0, 1, 1]), 2)
    assert all(type(w) is float for w in weights)


def test_binary_single_output_weights_by_true_class() -> None:
    logits = torch.tensor([[0.3], [-1.2], [2.0]])
    target = torch.tensor([[1.0], [0.0], [1.0]])
    s = 1 / (1 + np.exp(-logits.double().numpy()[:, 0]))
    y = target.numpy()[:, 0]
    bce = -(y * np.log(s) + (1 - y) * np.log(1 - s))
    expected = np.mean(np.where(y == 1, 3.0, 0.5) * bce)
    loss = CrossEntropyLoss("sigmoid", class_weights=[0.5, 3.0])(logits, target)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


EPS = 0.1


def test_label_smoothing_of_cross_entropy_equals_torch_and_keras() -> None:
    """Softmax: torch's own label_smoothing (p(1 − ε) + ε/C); sigmoid: Keras's binary
    smoothing p(1 − ε) + ε/2, by hand."""
    loss = CrossEntropyLoss(label_smoothing=EPS)(LOGITS, TARGET)
    expected = torch.nn.functional.cross_entropy(LOGITS, TARGET, label_smoothing=EPS)
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)
    sigmoid = CrossEntropyLoss("sigmoid", label_smoothing=EPS)(LOGITS, MULTI)
    q = 1 / (1 + np.exp(-LOGITS.numpy()))
    y = MULTI.numpy() * (1 - EPS) + EPS / 2
    by_hand = -(y * np.log(q) + (1 - y) * np.log(1 - q)).mean(axis=1).mean()
    assert float(sigmoid) == pytest.approx(by_hand, rel=1e-5)


def test_label_smoothing_of_focal_and_kl_follows_their_formulas() -> None:
    p = one_hot(TARGET) * (1 - EPS) + EPS / 3
    q = softmax(LOGITS.numpy())
    focal = -(((1 - q) ** 2.0) * p * np.log(q)).sum(axis=1).mean()
    assert float(FocalLoss(gamma=2.0, label_smoothing=EPS)(LOGITS, TARGET)) == pytest.approx(
        focal, rel=1e-5
    )
    kl = (p * (np.log(p) - np.log(q))).sum(axis=1).mean()
    assert float(KLDivergenceLoss(label_smoothing=EPS)(LOGITS, TARGET)) == pytest.approx(
        kl, rel=1e-5
    )


def test_label_smoothing_outside_0_1_is_a_config_error() -> None:
    from helpers import check_config
    from medclf.errors import ConfigError

    with pytest.raises(ConfigError, match=r"loss.label_smoothing=1.0 must be at least 0"):
        check_config("loss=focal", "loss.label_smoothing=1.0")
