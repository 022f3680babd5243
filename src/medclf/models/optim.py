"""Optimizers and learning-rate schedulers by name (``optimizer.name``, ``scheduler.name``).

Every key of the ``optimizer`` group but ``name`` is an argument of the registered class;
the ``scheduler`` group likewise, plus ``monitor`` for schedulers that step on a metric and
``warmup_epochs``: a linear warm-up from lr/(K+1) over the first K epochs (epoch e < K runs
at lr·(e+1)/(K+1)), then the scheduler, whose cosine ``T_max`` is shortened by K so that it
still ends with the run. A new optimizer or scheduler is one ``register`` call plus its YAML.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from medclf.errors import ConfigError, did_you_mean
from medclf.models.registry import OPTIMIZERS, SCHEDULERS, Registry

OPTIMIZERS.register("adam", torch.optim.Adam)
OPTIMIZERS.register("adamw", torch.optim.AdamW)
OPTIMIZERS.register("sgd", torch.optim.SGD)
SCHEDULERS.register("none", None)  # a constant learning rate
SCHEDULERS.register("cosine", torch.optim.lr_scheduler.CosineAnnealingLR)
SCHEDULERS.register("plateau", torch.optim.lr_scheduler.ReduceLROnPlateau)

# scheduler keys that configure how Lightning steps it, not the scheduler itself
_STEPPING_KEYS = ("monitor", "warmup_epochs")


def create_optimizer(parameters: Any, config: dict[str, Any]) -> torch.optim.Optimizer:
    kwargs = {k: v for k, v in config.items() if k != "name"}
    return OPTIMIZERS[config["name"]](parameters, **kwargs)


def create_scheduler(optimizer: torch.optim.Optimizer, config: dict[str, Any] | None) -> Any:
    """Lightning's ``configure_optimizers`` answer: the optimizer alone (scheduler ``none``),
    or the optimizer with its scheduler (and the metric it monitors)."""
    from torch.optim.lr_scheduler import ConstantLR, LinearLR, SequentialLR

    config = dict(config or {"name": "none"})
    name = config.pop("name")
    target = SCHEDULERS[name]
    warmup = int(config.pop("warmup_epochs", 0) or 0)
    if target is None and not warmup:
        return optimizer
    monitor = config.pop("monitor", None)
    if warmup and "T_max" in config:
        config["T_max"] = max(1, int(config["T_max"]) - warmup)
    if target is None:
        main = ConstantLR(optimizer, factor=1.0, total_iters=0)
    else:
        main = target(optimizer, **config)
    if warmup:
        rise = LinearLR(optimizer, 1.0 / (warmup + 1), 1.0, total_iters=warmup)
        main = SequentialLR(optimizer, [rise, main], milestones=[warmup])
    scheduler = {"scheduler": main}
    if monitor:
        scheduler["monitor"] = monitor
    return {"optimizer": optimizer, "lr_scheduler": scheduler}


def check_arguments(group: str, node: dict[str, Any] | None) -> None:
    """The group's ``name`` is registered and every other key is an argument of its class."""
    registry: Registry = OPTIMIZERS if group == "optimizer" else SCHEDULERS
    node = dict(node or {"name": "none"})
    name = node.get("name")
    target = registry[name]
    if target is None:
        return
    allowed = set(inspect.signature(target).parameters) - {"params", "optimizer"}
    if group == "scheduler":
        allowed.update(_STEPPING_KEYS)
    for key in node:
        if key != "name" and key not in allowed:
            raise ConfigError(
                f"{group}.{key} is not an argument of {target.__module__}.{target.__name__} "
                f"({group}={name}).{did_you_mean(key, allowed)} "
                f"Arguments: {', '.join(sorted(allowed))}."
            )
