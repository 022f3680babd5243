"""Pruning in the Optuna search: a trial reports ``optimized_metric`` after every validation
and stops when the study's pruner says so.

The sweeper (medclf.search.study) gives each job ``search.storage``, ``search.study`` and
``search.trial`` (the trial number); :class:`TrialPruning` reaches the trial through them,
reports on DDP rank 0 and stops every rank together. The pipeline then skips the test pass,
ends the MLflow run KILLED with ``optuna_state=PRUNED`` and returns :class:`Pruned`, which
the sweeper records as PRUNED (Optuna keeps the last reported value as the trial's value).
"""

from __future__ import annotations

import difflib
import logging
import math
from dataclasses import dataclass
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from medclf.errors import ConfigError

log = logging.getLogger("medclf.search")

PRUNERS = {
    "median": "optuna.pruners.MedianPruner",
    "hyperband": "optuna.pruners.HyperbandPruner",
    "none": "optuna.pruners.NopPruner",
}


@dataclass(frozen=True)
class Pruned:
    """What the job of a pruned trial returns to the sweeper: the epoch after which it
    stopped and the best value of ``optimized_metric`` it reached."""

    epoch: int
    best: float | None


def make_pruner(spec: Any):
    """An Optuna pruner from ``hydra.sweeper.pruner``: a name (``median``, ``hyperband``,
    ``none``: Optuna's defaults), a config node with ``_target_`` (the
    ``hydra/sweeper/pruner`` group, whose keys are settable), a pruner, or None."""
    import optuna
    from hydra.utils import get_class, instantiate

    if spec is None:
        return optuna.pruners.NopPruner()
    if isinstance(spec, optuna.pruners.BasePruner):
        return spec
    if isinstance(spec, str):
        if spec not in PRUNERS:
            close = difflib.get_close_matches(spec, PRUNERS, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(
                f"hydra.sweeper.pruner={spec}: unknown pruner{hint}; use one of "
                f"{', '.join(PRUNERS)}, or hydra/sweeper/pruner=NAME to set its keys."
            )
        return get_class(PRUNERS[spec])()
    try:
        return instantiate(spec)
    except Exception as exc:
        raise ConfigError(f"hydra.sweeper.pruner: cannot build the pruner: {exc}") from None


def prunes(pruner: Any) -> bool:
    """Whether ``pruner`` ever stops a trial (anything but Optuna's NopPruner)."""
    import optuna

    return not isinstance(pruner, optuna.pruners.NopPruner)


class TrialPruning(Callback):
    """Report ``metric`` to Optuna trial ``number`` of ``study`` after each validation (step
    = epoch, 0-based) and stop training when the pruner says so. Only global rank 0 talks
    to the study; its decision is broadcast so that all ranks stop at the same epoch."""

    def __init__(
        self,
        storage: str,
        study: str,
        number: int,
        metric: str,
        pruner: Any,
        reconnect_timeout: float = 600.0,
    ) -> None:
        self.storage = storage
        self.reconnect_timeout = reconnect_timeout
        self.study_name = study
        self.number = int(number)
        self.metric = metric
        self.pruner_spec = pruner
        self.trial = None
        self.database = None
        self.pruned_epoch: int | None = None
        self.last_value: float | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or not trainer.is_global_zero or self.trial is not None:
            return
        import optuna

        from medclf.search.storage import StudyDatabase

        self.database = StudyDatabase(
            self.storage, reconnect_timeout=self.reconnect_timeout, wait=True
        )
        storage = self.database.storage
        study = optuna.load_study(
            study_name=self.study_name, storage=storage, pruner=make_pruner(self.pruner_spec)
        )
        study_id = storage.get_study_id_from_name(self.study_name)
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, self.number)
        self.trial = optuna.trial.Trial(study, trial_id)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """The trial is over: its connections go (a worker runs many trials in a process)."""
        if stage == "fit" and self.database is not None:
            self.database.close()
            self.database = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        prune = False
        if trainer.is_global_zero and self.trial is not None:
            value = trainer.callback_metrics.get(self.metric)
            if value is not None and math.isfinite(float(value)):
                self.last_value = float(value)
                self.trial.report(self.last_value, step=trainer.current_epoch)
                prune = self.trial.should_prune()
        prune = bool(trainer.strategy.broadcast(prune))
        if prune:
            self.pruned_epoch = trainer.current_epoch
            trainer.should_stop = True
            if trainer.is_global_zero:
                log.info(
                    "trial %d pruned after epoch %d: %s=%.4f",
                    self.number,
                    self.pruned_epoch,
                    self.metric,
                    self.last_value,
                )


def trial_pruning(search: Any, metric: str | None, folds: int = 0) -> TrialPruning | None:
    """The callback of a search trial whose sweeper has a pruner (``search.storage``,
    ``search.study``, ``search.trial`` given to the job), None otherwise and inside
    cross-validation. The pruner is the job's ``hydra.sweeper.pruner`` (None in a DDP rank
    > 0, which only follows rank 0's decisions); ``search.storage`` has its password hidden,
    the job takes the URL itself from ``hydra.sweeper.storage``."""
    if not search or search.get("trial") is None or (folds or 0) >= 2:
        return None
    from hydra.core.hydra_config import HydraConfig

    from medclf.search.storage import redact

    storage, pruner, timeout = search["storage"], None, 600.0
    if HydraConfig.initialized():
        sweeper = HydraConfig.get().get("sweeper") or {}
        pruner = sweeper.get("pruner")
        timeout = sweeper.get("reconnect_timeout", timeout)
        if sweeper.get("storage") and redact(sweeper["storage"]) == storage:
            storage = sweeper["storage"]
    return TrialPruning(storage, search["study"], search["trial"], metric, pruner, timeout)


def pruned_epoch(trainer: L.Trainer) -> int | None:
    """The epoch after which the trainer's TrialPruning stopped the trial, or None."""
    callback = next((c for c in trainer.callbacks if isinstance(c, TrialPruning)), None)
    return None if callback is None else callback.pruned_epoch
