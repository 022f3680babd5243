"""Hydra sweeper ``hydra/sweeper=medclf_optuna``: an Optuna study that resumes
(see medclf.search.study).

Hydra imports every module under ``hydra_plugins`` at start-up, so nothing here imports
Optuna: ``python train.py --help`` stays fast.
"""
