"""Optuna search as a Hydra sweeper that resumes: ``python train.py -m hparams_search=optuna``.

hydra-optuna-sweeper 1.3 cannot serve here: it pins optuna<3, whose SQLite storage fails with
the SQLAlchemy 2 that MLflow 3 needs, and each invocation runs ``n_trials`` more trials, so
a restarted study grows instead of finishing. This sweeper (``hydra/sweeper=medclf_optuna``)
keeps its config keys and search-space grammar, and:

* ``n_trials`` is the size of the finished study: trials finished by earlier sessions (kept
  in ``storage``) count, so the same command after Ctrl-C or a kill continues the study;
* a trial left RUNNING by an interrupted session runs again with the same parameters under
  the same number (its job directory and ``sweep_job`` tag are the trial number), and the
  interrupted MLflow run is marked KILLED;
* one session at a time drives a sweep directory (a lock file there refuses a second);
* with a ``pruner`` (``median``, ``hyperband``), each job gets ``search.storage``,
  ``search.study`` and ``search.trial``, reports ``optimized_metric`` after each validation
  and stops when the pruner says so (medclf.search.pruning); a pruned trial counts as
  finished, so the kill-and-continue above does not run it again;
* the best trial (number, value, parameters, MLflow run) is logged, written to
  ``optimization_results.yaml`` in the sweep directory and tagged ``optuna_best=true`` on
  its MLflow run; every trial's run carries ``optuna_study``, ``optuna_trial`` and
  ``optuna_state`` (COMPLETE, PRUNED or FAIL) tags.
"""

from __future__ import annotations

import fcntl
import logging
import math
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, Transformer
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn
from hydra.types import HydraContext, TaskFunction
from hydra.utils import get_method
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import FrozenTrial, TrialState

from medclf.errors import ConfigError
from medclf.search import minimizes
from medclf.search.pruning import Pruned, make_pruner, prunes
from medclf.search.spaces import FIXED_ATTR

log = logging.getLogger("medclf.search")

SWEEP_DIR_ATTR = "sweep_dir"  # the trial's user attribute naming its sweep directory


def distribution(override: Override) -> BaseDistribution | str:
    """The Optuna distribution of a sweep override (``choice(...)``, ``range(...)``,
    ``interval(lo, hi)``, ``tag(log, interval(lo, hi))``), or a plain override's value."""
    if not override.is_sweep_override():
        return override.get_value_element_as_str()
    if override.is_interval_sweep():
        value = override.value()
        return FloatDistribution(value.start, value.end, log="log" in value.tags)
    values = list(override.sweep_iterator(transformer=Transformer.encode))
    if override.is_range_sweep() and not override.value().shuffle:
        step = override.value().step
        if all(isinstance(v, int) for v in (*values, step)):
            return IntDistribution(values[0], values[-1], step=step)
        return FloatDistribution(values[0], values[-1], step=step)
    return CategoricalDistribution(values)


def search_space(arguments: Sequence[str]) -> tuple[dict[str, BaseDistribution], dict[str, str]]:
    """Split overrides into the searched distributions and the fixed values; a later
    override of the same key (the command line after ``params``) wins."""
    space: dict[str, BaseDistribution] = {}
    fixed: dict[str, str] = {}
    for override in OverridesParser.create().parse_overrides(list(arguments)):
        name = override.get_key_element()
        value = distribution(override)
        space.pop(name, None)
        fixed.pop(name, None)
        if isinstance(value, BaseDistribution):
            space[name] = value
        else:
            fixed[name] = value
    return space, fixed


def default_direction(metric: str | None) -> str:
    """``minimize`` for a loss (``val/loss``), ``maximize`` for any other metric."""
    return "minimize" if metric and minimizes(metric) else "maximize"


def override_value(value: Any) -> str:
    """A parameter value as Hydra's override grammar reads it back."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


@contextmanager
def session_lock(directory: Path) -> Iterator[None]:
    """Hold ``directory/optuna.lock`` for the session; the OS frees it when the process dies
    (even by SIGKILL), so a RUNNING trial recorded for this directory is an orphan."""
    path = directory / "optuna.lock"
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            raise ConfigError(
                f"another sweep (pid {handle.read().strip() or '?'}) is running in {directory}; "
                "wait for it, or give this one its own hydra.sweeper.study_name."
            ) from None
        handle.truncate(0)
        handle.write(str(os.getpid()))
        handle.flush()
        yield


class OptunaSearch:
    """The sweeper's work: create or load the study, run the trials still to go, report."""

    def __init__(
        self,
        sampler: Any,
        direction: str | None = None,
        storage: str | None = None,
        study_name: str | None = None,
        n_trials: int = 20,
        n_jobs: int = 1,
        max_failure_rate: float = 0.0,
        params: dict[str, str] | None = None,
        custom_search_space: str | None = None,
        pruner: Any = None,
    ) -> None:
        if n_trials < 1 or n_jobs < 1:
            raise ConfigError(
                f"hydra.sweeper.n_trials={n_trials} and hydra.sweeper.n_jobs={n_jobs} must be "
                "at least 1."
            )
        if not 0.0 <= max_failure_rate <= 1.0:
            raise ConfigError(
                f"hydra.sweeper.max_failure_rate={max_failure_rate} must be between 0 and 1."
            )
        if direction not in (None, "maximize", "minimize"):
            raise ConfigError(
                f"hydra.sweeper.direction={direction!r}: use maximize, minimize or null "
                "(from optimized_metric)."
            )
        self.make_sampler = sampler if callable(sampler) else (lambda **_: sampler)
        self.pruner = make_pruner(pruner)
        self.direction = direction
        self.storage = storage
        self.study_name = study_name
        self.n_trials = n_trials
        self.n_jobs = n_jobs
        self.max_failure_rate = max_failure_rate
        self.params = dict(params or {})
        self.extend = None
        if custom_search_space:
            try:
                self.extend = get_method(custom_search_space)
            except Exception as exc:
                raise ConfigError(
                    f"hydra.sweeper.custom_search_space={custom_search_space!r} is not an "
                    f"importable function (cfg, trial) -> None: {exc}"
                ) from None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )
        self.sweep_dir = Path(config.hydra.sweep.dir).resolve()

    def sweep(self, arguments: list[str]) -> None:
        from medclf.tracking.logger import sqlite_path

        space, fixed = search_space([f"{k}={v}" for k, v in self.params.items()] + arguments)
        metric = self.config.get("optimized_metric")
        direction = self.direction or default_direction(metric)
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        database = sqlite_path(self.storage or "")
        if database is not None:
            database.parent.mkdir(parents=True, exist_ok=True)
        if self.storage is None and prunes(self.pruner):
            raise ConfigError(
                "hydra.sweeper.pruner needs hydra.sweeper.storage (a database URL such as "
                "sqlite:///PATH.db): the trials reach their study through it."
            )
        if self.storage is None:
            log.warning("hydra.sweeper.storage is null: the study lives in memory only")
        elif self.study_name is None:
            log.warning("hydra.sweeper.study_name is null: Optuna picks a new name each time")
        with session_lock(self.sweep_dir):
            study = optuna.create_study(
                study_name=self.study_name,
                storage=self.storage,
                sampler=self.make_sampler(),
                pruner=self.pruner,
                direction=direction,
                load_if_exists=True,
            )
            seed = getattr(self.make_sampler, "keywords", {}).get("seed")
            if seed is not None and study.trials:  # a resumed session must not redraw trial 0
                study.sampler = self.make_sampler(seed=seed + len(study.trials))
            if study.direction.name.lower() != direction:
                raise ConfigError(
                    f"study {study.study_name!r} in {self.storage} was created to "
                    f"{study.direction.name.lower()}, not to {direction} {metric}; use another "
                    "hydra.sweeper.study_name for a new study."
                )
            log.info(
                "study %r (%s %s) in %s; search space: %s; fixed: %s; pruner: %s",
                study.study_name,
                direction,
                metric,
                self.storage,
                ", ".join(space) or "(none)",
                fixed or "(none)",
                type(self.pruner).__name__,
            )
            self.study_name = study.study_name
            try:
                self._optimize(study, space, fixed)
            except (KeyboardInterrupt, SystemExit):
                finished = sum(t.state.is_finished() for t in study.trials)
                log.warning(
                    "interrupted with %d finished trial(s) kept in %s: run the same command "
                    "to continue the study",
                    finished,
                    self.storage,
                )
                raise
            self._report(study, metric)

    def _optimize(self, study: optuna.Study, space: dict, fixed: dict[str, str]) -> None:
        orphans = [
            t
            for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if t.user_attrs.get(SWEEP_DIR_ATTR) == str(self.sweep_dir)
        ]
        reruns = []
        for trial in orphans:
            self._close_interrupted_runs(trial.number)
            if set(space) <= set(trial.params):
                reruns.append((trial.number, self._overrides(trial)))
            else:
                log.warning("trial %d was interrupted under another search space", trial.number)
                study.tell(trial.number, state=TrialState.FAIL)
        finished = sum(t.state.is_finished() for t in study.get_trials(deepcopy=False))
        to_ask = max(0, self.n_trials - finished - len(reruns))
        log.info(
            "%d finished trial(s) kept, %d interrupted to run again, %d new (n_trials=%d)",
            finished,
            len(reruns),
            to_ask,
            self.n_trials,
        )
        while reruns or to_ask:
            batch, reruns = reruns[: self.n_jobs], reruns[self.n_jobs :]
            while len(batch) < self.n_jobs and to_ask:
                batch.append(self._ask(study, space, fixed))
                to_ask -= 1
            self._tell(study, [n for n, _ in batch], self._launch(batch))

    def _ask(self, study: optuna.Study, space: dict, fixed: dict[str, str]) -> tuple[int, list]:
        trial = study.ask(fixed_distributions=space)
        trial.set_user_attr(SWEEP_DIR_ATTR, str(self.sweep_dir))
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
        return trial.number, self._overrides(trial)

    @staticmethod
    def _overrides(trial: optuna.Trial | FrozenTrial) -> list[str]:
        values = {**trial.params, **trial.user_attrs.get(FIXED_ATTR, {})}
        return [f"{name}={override_value(value)}" for name, value in values.items()]

    def _reach(self, number: int) -> list[str]:
        """With a pruner: the overrides by which job ``number`` reaches its trial."""
        if not prunes(self.pruner):
            return []
        return [
            f"++search.storage={self.storage}",
            f"++search.study={self.study_name}",
            f"++search.trial={number}",
        ]

    def _launch(self, batch: list[tuple[int, list[str]]]) -> list[JobReturn]:
        """Launch the batch with each job numbered as its trial (consecutive runs at once)."""
        returns: list[JobReturn] = []
        start = 0
        for end in range(1, len(batch) + 1):
            if end == len(batch) or batch[end][0] != batch[end - 1][0] + 1:
                jobs = [overrides + self._reach(n) for n, overrides in batch[start:end]]
                returns += self.launcher.launch(jobs, initial_job_idx=batch[start][0])
                start = end
        return returns

    def _tell(self, study: optuna.Study, numbers: list[int], returns: list[JobReturn]) -> None:
        errors = []
        metric = self.config.get("optimized_metric")
        for number, job in zip(numbers, returns, strict=True):
            try:
                value = job.return_value  # raises the job's own exception if it failed
                if isinstance(value, Pruned):
                    state = TrialState.PRUNED
                    study.tell(number, state=state)  # its value: the last one it reported
                    log.info(
                        "trial %d: pruned after epoch %d (best %s=%s)",
                        number,
                        value.epoch,
                        metric,
                        value.best,
                    )
                    self._tag_run(study, number, state)
                    continue
                if value is None or not math.isfinite(float(value)):
                    raise ValueError(f"trial {number} returned {value!r} for {metric}")
            except Exception as exc:
                state = TrialState.FAIL
                log.warning("trial %d failed: %s", number, exc)
                study.tell(number, state=state)
                errors.append(exc)
            else:
                state = TrialState.COMPLETE
                study.tell(number, float(value))
                log.info("trial %d: %s=%.4f", number, metric, float(value))
            self._tag_run(study, number, state)
        if errors and len(errors) / len(returns) > self.max_failure_rate:
            raise RuntimeError(
                f"{len(errors)} of {len(returns)} trial(s) failed, more than "
                f"hydra.sweeper.max_failure_rate={self.max_failure_rate}: {errors[0]}"
            ) from errors[0]

    def _mlflow(self) -> tuple[str, str] | None:
        """(tracking URI, experiment name) of the MLflow logger, None without one."""
        node = OmegaConf.select(self.config, "logger.mlflow")
        if not node or "tracking_uri" not in node:
            return None
        return str(node.tracking_uri), str(node.experiment_name)

    def _close_interrupted_runs(self, number: int) -> None:
        from medclf.tracking.sweeps import close_interrupted_runs

        tracking = self._mlflow()
        if tracking is not None:
            close_interrupted_runs(*tracking, str(self.sweep_dir), number)

    def _trial_run(self, number: int) -> str | None:
        """The id of the MLflow run of trial ``number`` (None without MLflow)."""
        from medclf.tracking.sweeps import trial_run_id

        tracking = self._mlflow()
        return trial_run_id(*tracking, str(self.sweep_dir), number) if tracking else None

    def _tag_run(self, study: optuna.Study, number: int, state: TrialState) -> None:
        from medclf.tracking.sweeps import tag_trial

        run_id = self._trial_run(number)
        if run_id:
            tag_trial(self._mlflow()[0], run_id, study.study_name, number, state.name)

    def _report(self, study: optuna.Study, metric: str | None) -> None:
        """Log the best trial, write optimization_results.yaml, tag the best MLflow run."""
        states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)
        counts = {
            state.name.lower(): len(study.get_trials(deepcopy=False, states=(state,)))
            for state in states
        }
        if not counts["complete"]:
            log.warning("no trial of study %r completed", study.study_name)
            return
        best = study.best_trial
        run_id = self._trial_run(best.number)
        results = {
            "name": "optuna",
            "study_name": study.study_name,
            "storage": self.storage,
            "direction": study.direction.name.lower(),
            "optimized_metric": metric,
            "trials": counts,
            "best_trial": best.number,
            "best_value": best.value,
            "best_params": best.params,
            "best_mlflow_run_id": run_id,
            "best_overrides": " ".join(self._overrides(best)),
        }
        OmegaConf.save(OmegaConf.create(results), self.sweep_dir / "optimization_results.yaml")
        log.info(
            "trials: %d complete, %d pruned, %d failed; best trial %d: %s=%.4f with %s "
            "(MLflow run %s); written to %s",
            counts["complete"],
            counts["pruned"],
            counts["fail"],
            best.number,
            metric,
            best.value,
            " ".join(f"{k}={override_value(v)}" for k, v in best.params.items()),
            run_id,
            self.sweep_dir / "optimization_results.yaml",
        )
        if run_id:
            self._tag_best(study, run_id)

    def _tag_best(self, study: optuna.Study, run_id: str) -> None:
        from medclf.tracking.sweeps import tag_best

        tag_best(*self._mlflow(), str(self.sweep_dir), run_id)
