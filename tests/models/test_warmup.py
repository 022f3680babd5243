"""scheduler.warmup_epochs: the learning rates Lightning sees equal the schedule."""

from __future__ import annotations

import math

import pytest
import torch

from medclf.errors import ConfigError
from medclf.models.optim import create_scheduler


def _rates(config: dict, epochs: int, lr: float = 0.1) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    scheduler = create_scheduler(optimizer, config)["lr_scheduler"]["scheduler"]
    rates = []
    for _ in range(epochs):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()  # once per epoch, as Lightning steps it
    return rates


def test_linear_warm_up_then_cosine_over_the_rest_of_the_run() -> None:
    rates = _rates({"name": "cosine", "T_max": 10, "eta_min": 0.0, "warmup_epochs": 3}, 10)
    assert rates[:3] == pytest.approx([0.1 * (e + 1) / 4 for e in range(3)])
    cosine = [0.05 * (1 + math.cos(math.pi * t / 7)) for t in range(7)]  # T_max 10 - 3
    assert rates[3:] == pytest.approx(cosine)


def test_warm_up_before_a_constant_rate_and_none_without() -> None:
    assert _rates({"name": "none", "warmup_epochs": 2}, 5) == pytest.approx(
        [0.1 / 3, 0.2 / 3, 0.1, 0.1, 0.1]
    )
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    assert create_scheduler(optimizer, {"name": "none", "warmup_epochs": 0}) is optimizer


def test_warm_up_before_plateau_is_a_config_error() -> None:
    from helpers import check_config

    with pytest.raises(ConfigError, match="scheduler.warmup_epochs=2 cannot precede"):
        check_config("scheduler=plateau", "+scheduler.warmup_epochs=2")
