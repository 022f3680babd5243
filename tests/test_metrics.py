"""Metric collections: the unchecked train-step variant computes what the checked one does."""

from __future__ import annotations

import pytest
import torch

from medclf.models.metrics import SUMMARY, summary_metrics


@pytest.mark.parametrize("task", ["multiclass", "multilabel", "binary"])
def test_validate_args_off_changes_no_value(task: str) -> None:
    generator = torch.Generator().manual_seed(0)
    n = 4
    if task == "multiclass":
        probs = torch.rand(64, n, generator=generator).softmax(dim=1)
        target = torch.randint(0, n, (64,), generator=generator)
    elif task == "multilabel":
        probs = torch.rand(64, n, generator=generator)
        target = torch.randint(0, 2, (64, n), generator=generator)
    else:
        probs = torch.rand(64, generator=generator)
        target = torch.randint(0, 2, (64,), generator=generator)
    checked = summary_metrics(task, n, SUMMARY)
    unchecked = summary_metrics(task, n, SUMMARY, validate_args=False)
    for half in (slice(0, 32), slice(32, 64)):
        checked.update(probs[half], target[half])
        unchecked.update(probs[half], target[half])
    expected = checked.compute()
    assert all(not m.validate_args for m in unchecked.values())
    torch.testing.assert_close(unchecked.compute(), expected, rtol=0, atol=0)


def test_train_metrics_count_without_bincount_and_match_sklearn(monkeypatch) -> None:
    """The train-step multiclass metrics never call torch.bincount (on a GPU it reads the
    labels' min and max back: a synchronisation per step) and still equal scikit-learn's
    macro scores, a class that is never predicted nor present included."""
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

    generator = torch.Generator().manual_seed(1)
    n = 5
    probs = torch.rand(90, n, generator=generator)
    probs[:, 4] = -1.0  # class 4: never predicted
    target = torch.randint(0, 4, (90,), generator=generator)  # ... and never present
    names = ("accuracy", "precision", "recall", "f1")
    unchecked = summary_metrics("multiclass", n, names, validate_args=False)

    def no_bincount(*args, **kwargs):
        raise AssertionError("torch.bincount called in a train-step metric update")

    monkeypatch.setattr(torch, "bincount", no_bincount)
    for part in (slice(0, 30), slice(30, 60), slice(60, 90)):
        unchecked.update(probs[part], target[part])
    values = {k: float(v) for k, v in unchecked.compute().items()}
    predicted, actual = probs.argmax(1).numpy(), target.numpy()
    # a class absent from both targets and predictions is left out of the macro average,
    # by torchmetrics and by scikit-learn (which averages over the labels it sees)
    macro = {"average": "macro", "zero_division": 0}
    expected = {
        "accuracy": accuracy_score(actual, predicted),
        "precision": precision_score(actual, predicted, **macro),
        "recall": recall_score(actual, predicted, **macro),
        "f1": f1_score(actual, predicted, **macro),
    }
    assert values == pytest.approx(expected, abs=1e-6)
    monkeypatch.undo()
    checked = summary_metrics("multiclass", n, names)
    checked.update(probs, target)
    assert {k: float(v) for k, v in checked.compute().items()} == pytest.approx(values, abs=1e-6)
