"""Metric collections: the unchecked train-step variant computes what the checked one does."""

from __future__ import annotations

import pytest
import torch

from medclf.metrics import SUMMARY, summary_metrics


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
