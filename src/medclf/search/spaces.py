"""Conditional search spaces for ``hydra.sweeper.custom_search_space``: functions
``(cfg, trial) -> None`` that suggest parameters depending on others."""

from __future__ import annotations

import optuna
from omegaconf import DictConfig, OmegaConf

FIXED_ATTR = "fixed_params"  # trial user attribute: the sweep's fixed overrides


def focal_gamma(cfg: DictConfig, trial: optuna.Trial) -> None:
    """Conditional space of conf/hparams_search/optuna.yaml: the focal loss's gamma, searched
    only in trials that use ``loss=focal`` (cross-entropy has no gamma)."""
    fixed = trial.user_attrs.get(FIXED_ATTR, {})
    loss = trial.params.get("loss") or fixed.get("loss") or OmegaConf.select(cfg, "loss.name")
    if loss == "focal" and "loss.gamma" not in fixed:
        trial.suggest_float("loss.gamma", 0.5, 5.0)
