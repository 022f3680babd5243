"""Calibration intercept and slope equal statsmodels' logistic GLMs (offset for the
intercept, the logit as covariate for the slope), are (0, 1) after logistic recalibration,
and NaN where the fit cannot exist."""

from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm

from medclf.evaluation.calibration import LOGIT_CLIP, calibration_intercept_slope


def glm_reference(confidence: np.ndarray, outcome: np.ndarray) -> tuple[float, float]:
    p = np.clip(confidence, LOGIT_CLIP, 1 - LOGIT_CLIP)
    logit = np.log(p / (1 - p))
    family = sm.families.Binomial()
    ones = np.ones_like(logit)
    intercept = sm.GLM(outcome, ones, family=family, offset=logit).fit().params[0]
    slope = sm.GLM(outcome, np.column_stack([ones, logit]), family=family).fit().params[1]
    return float(intercept), float(slope)


def miscalibrated(n: int, rng: np.random.Generator, shape=()) -> tuple[np.ndarray, np.ndarray]:
    """Predicted probabilities too extreme and too high: the truth is
    logit P(y=1) = −0.4 + 0.6 · logit(p)."""
    logit = rng.normal(0, 2, (n, *shape))
    truth = rng.random((n, *shape)) < 1 / (1 + np.exp(-(-0.4 + 0.6 * logit)))
    return 1 / (1 + np.exp(-logit)), truth.astype(int)


def test_binary_equals_statsmodels_and_sees_the_miscalibration() -> None:
    rng = np.random.default_rng(0)
    p, y = miscalibrated(3000, rng)
    p[:3] = [0.0, 1.0, 1.0]  # clipped before the logit, as in the reference
    result = calibration_intercept_slope(np.stack([1 - p, p], 1), y, "binary")
    assert tuple(result) == pytest.approx(glm_reference(p, y), abs=1e-6)
    assert result.slope == pytest.approx(0.6, abs=0.1)
    assert result.intercept < -0.1


def test_multiclass_uses_the_top_label_and_multilabel_each_label() -> None:
    rng = np.random.default_rng(1)
    targets = rng.integers(0, 4, 800)
    logits = rng.normal(size=(800, 4)) * 2 + 1.0 * np.eye(4)[targets]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    result = calibration_intercept_slope(probs, targets, "multiclass")
    right = (probs.argmax(1) == targets).astype(int)
    assert tuple(result) == pytest.approx(glm_reference(probs.max(1), right), abs=1e-6)

    p, y = miscalibrated(600, rng, (3,))
    per_label = calibration_intercept_slope(p, y, "multilabel")
    assert set(per_label) == {0, 1, 2}
    for k in range(3):
        assert tuple(per_label[k]) == pytest.approx(glm_reference(p[:, k], y[:, k]), abs=1e-6)
    macro = calibration_intercept_slope(p, y, "multilabel", average="macro")
    assert tuple(macro) == pytest.approx(np.mean([tuple(v) for v in per_label.values()], 0))


def test_recalibrated_probabilities_have_intercept_0_and_slope_1() -> None:
    rng = np.random.default_rng(2)
    p, y = miscalibrated(2000, rng)
    a, b = calibration_intercept_slope(np.stack([1 - p, p], 1), y, "binary")
    assert b != pytest.approx(1, abs=0.1)
    slope_fit = sm.GLM(y, sm.add_constant(np.log(p / (1 - p))), family=sm.families.Binomial())
    c, d = slope_fit.fit().params
    q = 1 / (1 + np.exp(-(c + d * np.log(p / (1 - p)))))
    assert tuple(calibration_intercept_slope(np.stack([1 - q, q], 1), y, "binary")) == (
        pytest.approx(0.0, abs=1e-6),
        pytest.approx(1.0, abs=1e-6),
    )


def test_one_kind_of_outcome_gives_nan() -> None:
    p = np.linspace(0.1, 0.9, 20)
    result = calibration_intercept_slope(np.stack([1 - p, p], 1), np.zeros(20, int), "binary")
    assert np.isnan(result.intercept) and np.isnan(result.slope)
