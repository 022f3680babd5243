"""Hyperparameter search: the resumable Optuna study behind the ``medclf_optuna`` Hydra
sweeper (``study``) and conditional search spaces (``spaces``)."""
