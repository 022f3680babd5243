"""The out-of-distribution gate: energy and Mahalanobis scores against their formulas, both
separating another domain on generated features, a false-flag rate near 1 − quantile on
held-out in-distribution data, a plain storable state, the batch warning, and a tiny net
trained on 8 px digits telling digits from generated blobs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from audit_synthetic import single_blas_thread
from sklearn.metrics import roc_auc_score

from medclf.audit import ood
from medclf.errors import ConfigError, DataError

D, K = 16, 3

one_blas_thread = pytest.fixture(autouse=True, scope="module")(single_blas_thread)


@pytest.fixture(scope="module")
def domains():
    """Features of 3 classes (correlated Gaussians around class centres) — 4,000 for
    validation, 20,000 held out — 5,000 of another domain, and logits of a fixed linear head."""
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 3, (K, D))
    mixing = rng.normal(0, 1, (D, D)) / np.sqrt(D)

    def inside(n):
        labels = rng.integers(0, K, n)
        return centres[labels] + rng.normal(size=(n, D)) @ mixing.T, labels

    val, val_labels = inside(4000)
    held_out, _ = inside(20000)
    other = 1.5 * rng.normal(size=(5000, D)) @ mixing.T + rng.normal(0, 1, D)
    head = centres.T / 3
    return {
        "val": (val, val @ head, val_labels),
        "held_out": (held_out, held_out @ head),
        "other": (other, other @ head),
    }


@pytest.mark.parametrize("method", ood.METHODS)
def test_another_domain_is_told_apart_and_5_percent_of_in_distribution_flagged(
    domains, method: str
) -> None:
    features, logits, labels = domains["val"]
    state = ood.fit(logits, features, labels, method=method)
    inside = ood.score(state, *domains["held_out"][::-1])
    outside = ood.score(state, *domains["other"][::-1])
    truth = np.r_[np.zeros(len(inside)), np.ones(len(outside))]
    assert roc_auc_score(truth, np.r_[inside, outside]) >= 0.95
    assert 0.03 <= ood.flags(state, inside).mean() <= 0.07
    assert ood.flags(state, outside).mean() > 0.9


def test_the_quantile_sets_the_false_flag_rate(domains) -> None:
    features, logits, labels = domains["val"]
    state = ood.fit(logits, features, labels, quantile=0.8)
    assert state["quantile"] == 0.8
    assert ood.flags(state, ood.score(state, features=domains["held_out"][0])).mean() >= 0.17
    assert ood.flags(state, ood.score(state, features=domains["held_out"][0])).mean() <= 0.23


def test_energy_is_the_formula() -> None:
    from scipy.special import logsumexp

    rng = np.random.default_rng(1)
    logits = rng.normal(0, 3, (50, 4))
    np.testing.assert_allclose(ood.energy(logits), -logsumexp(logits, axis=1))
    np.testing.assert_allclose(
        ood.energy(logits, temperature=2.0), -2.0 * logsumexp(logits / 2.0, axis=1)
    )
    single = rng.normal(0, 3, 20)  # a binary head's one logit: [-l/2, l/2]
    np.testing.assert_allclose(ood.energy(single), -np.log(2 * np.cosh(single / 2)))
    np.testing.assert_allclose(ood.energy(-single), ood.energy(single))
    np.testing.assert_allclose(
        ood.energy(logits, task="multilabel"), -np.log1p(np.exp(logits)).sum(axis=1)
    )


def test_mahalanobis_is_ledoit_wolfs_distance() -> None:
    """One class and all dimensions kept: the projection is a rotation, and the Ledoit-Wolf
    estimate turns with it, so the score is scikit-learn's squared Mahalanobis distance."""
    from sklearn.covariance import LedoitWolf

    rng = np.random.default_rng(2)
    train = rng.normal(size=(300, 6)) @ rng.normal(size=(6, 6))
    test = rng.normal(size=(40, 6)) * 2
    state = ood.fit(features=train, method="mahalanobis")
    expected = LedoitWolf().fit(train).mahalanobis(test)
    np.testing.assert_allclose(ood.score(state, features=test), expected, rtol=1e-6)


def test_the_state_is_plain_and_small(domains) -> None:
    features, logits, labels = domains["val"]
    for method in ood.METHODS:
        state = ood.fit(logits, features, labels, method=method)
        restored = json.loads(json.dumps(state))
        np.testing.assert_array_equal(
            ood.score(restored, logits[:50], features[:50]),
            ood.score(state, logits[:50], features[:50]),
        )
    assert len(json.dumps(ood.fit(logits, method="energy"))) < 200
    wide = ood.fit(features=np.random.default_rng(0).normal(size=(300, 512)))
    assert np.shape(wide["components"]) == (ood.MAX_DIMS, 512)


def test_a_mostly_unusual_batch_gets_a_warning(domains) -> None:
    features, logits, labels = domains["val"]
    state = ood.fit(logits, features, labels)
    mixed = np.r_[domains["other"][0][:70], domains["held_out"][0][:30]]
    summary = ood.batch_summary(state, ood.score(state, features=mixed))
    assert summary["images"] == 100 and 68 <= summary["flagged"] <= 75
    assert f"{summary['flagged']} of 100 images ({summary['share']:.0%})" in summary["warning"]
    calm = ood.batch_summary(state, ood.score(state, features=domains["held_out"][0][:100]))
    assert calm["warning"] is None and calm["share"] < 0.5
    strict = ood.batch_summary(state, ood.score(state, features=mixed), max_share=0.9)
    assert strict["warning"] is None


def test_wrong_inputs_are_named(domains) -> None:
    features, logits, labels = domains["val"]
    state = ood.fit(logits, features, labels)
    with pytest.raises(ConfigError, match="method=mahalanobis and needs the features"):
        ood.score(state, logits=logits)
    with pytest.raises(DataError, match="fitted on 16"):
        ood.score(state, features=np.zeros((2, 8)))
    with pytest.raises(ConfigError, match="lacks threshold"):
        ood.score({k: v for k, v in state.items() if k != "threshold"}, features=features)
    with pytest.raises(ConfigError, match="method='knn'"):
        ood.fit(logits, method="knn")
    with pytest.raises(ConfigError, match="quantile=1.5"):
        ood.fit(logits, method="energy", quantile=1.5)
    with pytest.raises(DataError, match="NaN"):
        ood.fit(np.array([[np.nan, 1.0]]), method="energy")


def _blobs(n: int, rng: np.random.Generator) -> np.ndarray:
    """8 × 8 images of 1-3 soft bright blobs, the digits' size and range."""
    yy, xx = np.mgrid[0:8, 0:8]
    images = np.zeros((n, 8, 8), np.float32)
    for image in images:
        for _ in range(rng.integers(1, 4)):
            cy, cx = rng.uniform(0, 8, 2)
            spread = rng.uniform(0.8, 2.0)
            image += rng.uniform(0.5, 1.0) * np.exp(
                -((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * spread**2)
            )
    return np.clip(images, 0, 1)


def test_a_digits_model_tells_digits_from_blobs() -> None:
    """A small conv net trained for a few seconds on sklearn's 8 px digits: its pooled
    features' Mahalanobis score separates held-out digits from generated blobs."""
    import torch
    from sklearn.datasets import load_digits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny net: threads only add overhead
    try:
        _train_and_check(load_digits())
    finally:
        torch.set_num_threads(threads)


def _train_and_check(digits) -> None:
    import torch

    images, targets = (digits.images / 16.0).astype(np.float32), digits.target
    rng = np.random.default_rng(0)
    order = rng.permutation(len(images))
    train, val, test = order[:1200], order[1200:1500], order[1500:]
    torch.manual_seed(0)
    body = torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(16, 32, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(2),
        torch.nn.Flatten(),
    )
    head = torch.nn.Linear(128, 10)
    optimiser = torch.optim.Adam([*body.parameters(), *head.parameters()], lr=3e-3)
    x, y = torch.from_numpy(images[train][:, None]), torch.from_numpy(targets[train])
    for _ in range(8):
        for batch in torch.randperm(len(x)).split(64):
            loss = torch.nn.functional.cross_entropy(head(body(x[batch])), y[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()

    def run(array):
        with torch.no_grad():
            pooled = body(torch.from_numpy(array[:, None]))
            return pooled.numpy(), head(pooled).numpy()

    val_features, val_logits = run(images[val])
    test_features, test_logits = run(images[test])
    blob_features, blob_logits = run(_blobs(300, rng))
    assert (test_logits.argmax(axis=1) == targets[test]).mean() > 0.8  # it learnt digits
    state = ood.fit(val_logits, val_features, targets[val])
    inside, outside = (
        ood.score(state, features=test_features),
        ood.score(state, features=blob_features),
    )
    truth = np.r_[np.zeros(len(inside)), np.ones(len(outside))]
    assert roc_auc_score(truth, np.r_[inside, outside]) >= 0.95
