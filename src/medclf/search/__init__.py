"""Hyperparameter search: the resumable Optuna study behind the ``medclf_optuna`` Hydra
sweeper (``study``) and conditional search spaces (``spaces``)."""


def minimizes(metric: str) -> bool:
    """Whether a search optimising ``metric`` minimises it: a loss (``val/loss``); any other
    metric is maximised. (Here, not in a submodule: importing it imports no Optuna.)"""
    return "loss" in metric.rsplit("/", 1)[-1]
