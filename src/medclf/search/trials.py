"""A search's trials as Hydra jobs: ask one, launch a batch (each job numbered as its
trial), tell the study what came back and tag each trial's MLflow run. Shared by the
one-session loop (medclf.search.session) and the workers of a shared study
(medclf.search.shared)."""

from __future__ import annotations

import logging
import math
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from hydra.core.utils import JobReturn
from omegaconf import DictConfig, OmegaConf
from optuna.trial import FrozenTrial, TrialState

from medclf.errors import ConfigError
from medclf.search.pruning import Pruned, prunes
from medclf.search.spaces import FIXED_ATTR
from medclf.search.storage import redact

log = logging.getLogger("medclf.search")

SWEEP_DIR_ATTR = "sweep_dir"  # the trial's user attribute naming its sweep directory
WORKER_ATTR = "worker"  # the trial's user attribute naming its worker (host:pid)


def override_value(value: Any) -> str:
    """A parameter value as Hydra's override grammar reads it back."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def trial_overrides(trial: optuna.Trial | FrozenTrial) -> list[str]:
    """The overrides that run ``trial``: its parameters and the sweep's fixed values."""
    values = {**trial.params, **trial.user_attrs.get(FIXED_ATTR, {})}
    return [f"{name}={override_value(value)}" for name, value in values.items()]


def worker_name() -> str:
    """This worker as a trial records it: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


@contextmanager
def _bookkeeping(what: str) -> Iterator[None]:
    """The sweeper's MLflow bookkeeping: a tracking server that does not answer costs a
    warning, not the search (the study is the record)."""
    try:
        yield
    except Exception as exc:
        log.warning("MLflow: could not %s: %s", what, exc)


def suggest(trial: optuna.Trial, name: str, distribution) -> Any:
    """``trial``'s value of ``name`` from ``distribution`` through the public suggest API
    (what ``study.ask(fixed_distributions=...)`` does per parameter; a queued retry's fixed
    value is returned as it is)."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    if isinstance(distribution, FloatDistribution):
        return trial.suggest_float(
            name, distribution.low, distribution.high, step=distribution.step, log=distribution.log
        )
    if isinstance(distribution, IntDistribution):
        return trial.suggest_int(
            name, distribution.low, distribution.high, step=distribution.step, log=distribution.log
        )
    if isinstance(distribution, CategoricalDistribution):
        return trial.suggest_categorical(name, distribution.choices)
    raise TypeError(f"{name}: no suggest method for {type(distribution).__name__}")


@dataclass
class Trials:
    """What running a trial needs: the launcher, the composed config (MLflow), the sweep
    directory, the storage and study the jobs report to (pruning), the conditional space
    and the failure policy."""

    launcher: Any
    config: DictConfig
    sweep_dir: Path
    storage: str | None
    study_name: str | None
    pruner: Any
    extend: Any = None
    max_failure_rate: float = 0.0
    retry_of: dict[int, int] = field(default_factory=dict)  # retry number → trial repeated

    def ask(
        self, study: optuna.Study, space: dict, fixed: dict[str, str], started=None
    ) -> optuna.Trial:
        """The study's next trial (a queued retry first), recorded as this sweep's;
        ``started(trial)`` runs first of all (its first heartbeat), before the sampler draws
        the parameters: a worker killed while the sampler runs leaves a trial with a
        heartbeat, which goes stale and is retried (``study.ask(fixed_distributions=...)``
        would draw them before returning the trial)."""
        trial = study.ask()
        if started is not None:
            started(trial)
        for name, distribution in space.items():
            suggest(trial, name, distribution)
        trial.set_user_attr(SWEEP_DIR_ATTR, str(self.sweep_dir))
        trial.set_user_attr(WORKER_ATTR, worker_name())
        trial.set_user_attr(FIXED_ATTR, fixed)
        if self.extend is not None:
            self.extend(self.config, trial)
        overlap = set(trial.params) & set(fixed)
        if overlap:
            study.tell(trial, state=TrialState.FAIL)
            raise ConfigError(
                f"{', '.join(sorted(overlap))} both searched and fixed: drop it from "
                "hydra.sweeper.params or from the command line."
            )
        return trial

    def reach(self, number: int) -> list[str]:
        """With a pruner: the overrides by which job ``number`` reaches its trial (the
        storage's password stays out of the job's config: it reads it from the sweeper's)."""
        if not prunes(self.pruner):
            return []
        return [
            f"++search.storage={redact(self.storage)}",
            f"++search.study={self.study_name}",
            f"++search.trial={number}",
        ]

    def launch(self, batch: list[tuple[int, list[str]]]) -> list[JobReturn]:
        """Launch the batch with each job numbered as its trial (consecutive runs at once)."""
        returns: list[JobReturn] = []
        start = 0
        for end in range(1, len(batch) + 1):
            if end == len(batch) or batch[end][0] != batch[end - 1][0] + 1:
                jobs = [overrides + self.reach(n) for n, overrides in batch[start:end]]
                returns += self.launcher.launch(jobs, initial_job_idx=batch[start][0])
                start = end
        return returns

    def tell(
        self, study: optuna.Study, numbers: list[int], returns: list[JobReturn], shared=False
    ) -> None:
        """Record each job's outcome (COMPLETE, PRUNED or FAIL) in the study and on its run;
        too many failures stop the sweep. ``shared``: a trial another worker failed in the
        meantime (its heartbeats stopped too long) is left as it is."""
        errors = []
        metric = self.config.get("optimized_metric")
        for number, job in zip(numbers, returns, strict=True):
            try:
                value = job.return_value  # raises the job's own exception if it failed
                if isinstance(value, Pruned):
                    state, told = TrialState.PRUNED, None
                    log.info(
                        "trial %d: pruned after epoch %d (best %s=%s)",
                        number,
                        value.epoch,
                        metric,
                        value.best,
                    )
                elif value is None or not math.isfinite(float(value)):
                    raise ValueError(f"trial {number} returned {value!r} for {metric}")
                else:
                    state, told = TrialState.COMPLETE, float(value)
                    log.info("trial %d: %s=%.4f", number, metric, told)
            except Exception as exc:
                state, told = TrialState.FAIL, None
                log.warning("trial %d failed: %s", number, exc)
                errors.append(exc)
            recorded = study.tell(number, told, state=state, skip_if_finished=shared)
            if recorded.state != state:
                log.warning(
                    "trial %d was marked %s meanwhile (its heartbeats stopped for longer than "
                    "hydra.sweeper.grace_period): its retry counts instead",
                    number,
                    recorded.state.name,
                )
            self.tag_run(study.study_name, number, state)
        if errors and len(errors) / len(returns) > self.max_failure_rate:
            raise RuntimeError(
                f"{len(errors)} of {len(returns)} trial(s) failed, more than "
                f"hydra.sweeper.max_failure_rate={self.max_failure_rate}: {errors[0]}"
            ) from errors[0]

    def mlflow(self) -> tuple[str, str] | None:
        """(tracking URI, experiment name) of the MLflow logger, None without one."""
        node = OmegaConf.select(self.config, "logger.mlflow")
        if not node or "tracking_uri" not in node:
            return None
        return str(node.tracking_uri), str(node.experiment_name)

    def close_interrupted_runs(
        self, number: int, sweep_dir: str | None = None, retried_as: int | None = None
    ) -> None:
        """Mark the RUNNING MLflow runs of trial ``number`` KILLED (tagged with the trial
        that repeats it, if any)."""
        from medclf.tracking.sweeps import close_interrupted_runs

        tracking = self.mlflow()
        if tracking is not None:
            where = sweep_dir or str(self.sweep_dir)
            with _bookkeeping(f"close the interrupted run of trial {number}"):
                close_interrupted_runs(*tracking, where, number, retried_as=retried_as)

    def run_id(self, number: int, sweep_dir: str | None = None) -> str | None:
        """The id of the MLflow run of trial ``number`` (None without MLflow)."""
        from medclf.tracking.sweeps import trial_run_id

        tracking = self.mlflow()
        if not tracking:
            return None
        with _bookkeeping(f"find the run of trial {number}"):
            return trial_run_id(*tracking, sweep_dir or str(self.sweep_dir), number)
        return None

    def tag_run(self, study_name: str, number: int, state: TrialState) -> None:
        from medclf.tracking.sweeps import tag_trial

        run_id = self.run_id(number)
        if run_id:
            retry_of = self.retry_of.get(number)
            with _bookkeeping(f"tag the run of trial {number}"):
                tag_trial(self.mlflow()[0], run_id, study_name, number, state.name, retry_of)

    def tag_best(self, run_id: str, sweep_dir: str) -> None:
        from medclf.tracking.sweeps import tag_best

        with _bookkeeping("tag the best trial's run"):
            tag_best(*self.mlflow(), sweep_dir, run_id)
