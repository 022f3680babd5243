"""Optuna search as a Hydra sweeper that resumes: ``python train.py -m hparams_search=optuna``.

hydra-optuna-sweeper 1.3 cannot serve here: it pins optuna<3, whose SQLite storage fails with
the SQLAlchemy 2 that MLflow 3 needs, and each invocation runs ``n_trials`` more trials, so
a restarted study grows instead of finishing. This sweeper (``hydra/sweeper=medclf_optuna``)
keeps its config keys and search-space grammar, and:

* ``n_trials`` is the size of the finished study: trials finished by earlier sessions (kept
  in ``storage``) count, so the same command after Ctrl-C or a kill continues the study;
* in a SQLite file one session at a time drives a sweep directory (medclf.search.session: a
  trial left RUNNING by an interrupted session runs again with the same parameters under
  the same number, and the interrupted MLflow run is marked KILLED);
* on a database server (PostgreSQL, MySQL) any number of workers share the study
  (medclf.search.shared: heartbeats, dead workers' trials retried); ``workers=N|auto``
  starts N of them here, one per GPU group, and with ``hydra/launcher=slurm`` they are a
  SLURM job array (medclf.search.workers);
* the storage is checked before any trial (medclf.search.storage), and so is the search
  space of an existing study: a command whose space differs is refused;
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

import logging
import os
from pathlib import Path
from typing import Any

import optuna
from hydra.core.plugins import Plugins
from hydra.types import HydraContext, TaskFunction
from hydra.utils import get_method
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from medclf.errors import ConfigError
from medclf.search import minimizes
from medclf.search.pruning import make_pruner, prunes
from medclf.search.session import run_session, session_lock
from medclf.search.spaces import check_space, search_space
from medclf.search.storage import StudyDatabase, is_server, redact
from medclf.search.trials import SWEEP_DIR_ATTR, Trials, override_value, trial_overrides

log = logging.getLogger("medclf.search")


def default_direction(metric: str | None) -> str:
    """``minimize`` for a loss (``val/loss``), ``maximize`` for any other metric."""
    return "minimize" if metric and minimizes(metric) else "maximize"


class OptunaSearch:
    """The sweeper's work: check the storage, create or load the study, run the trials still
    to go (one session, or one of the workers sharing it), report."""

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
        workers: int | str = 1,
        heartbeat_interval: int = 30,
        grace_period: int = 120,
        max_retry: int | None = 3,
        reconnect_timeout: float = 600.0,
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
        if workers != "auto" and not (isinstance(workers, int) and workers >= 1):
            raise ConfigError(
                f"hydra.sweeper.workers={workers!r}: use a number of workers (1 or more) or "
                "auto (one per visible GPU, or per group of trainer.devices GPUs)."
            )
        if not (isinstance(heartbeat_interval, int) and heartbeat_interval >= 1):
            raise ConfigError(
                f"hydra.sweeper.heartbeat_interval={heartbeat_interval!r} must be a whole "
                "number of seconds, at least 1."
            )
        if not (isinstance(grace_period, int) and grace_period > heartbeat_interval):
            raise ConfigError(
                f"hydra.sweeper.grace_period={grace_period!r} must be a whole number of "
                f"seconds above hydra.sweeper.heartbeat_interval={heartbeat_interval} (a few "
                "missed heartbeats must not fail a live trial)."
            )
        if max_retry is not None and not (isinstance(max_retry, int) and max_retry >= 0):
            raise ConfigError(
                f"hydra.sweeper.max_retry={max_retry!r}: use 0 or more, or null (no limit)."
            )
        if reconnect_timeout < 0:
            raise ConfigError(
                f"hydra.sweeper.reconnect_timeout={reconnect_timeout} must be 0 or more seconds."
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
        self.workers = workers
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        self.max_retry = max_retry
        self.reconnect_timeout = reconnect_timeout
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
        from medclf.tracking.store import sqlite_path

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
        server = is_server(self.storage)
        if not server and self.workers != 1:
            raise ConfigError(
                f"hydra.sweeper.workers={self.workers} needs the study on a database server: "
                "hydra.sweeper.storage=postgresql+psycopg://USER:PASSWORD@HOST:PORT/DATABASE "
                "(medclf-server starts one and prints it); a SQLite study runs one session "
                "at a time."
            )
        if server and self.study_name is None:
            raise ConfigError(
                "hydra.sweeper.study_name=null: workers find their shared study by name; set "
                "hydra.sweeper.study_name=NAME."
            )
        if self.storage is None:
            log.warning("hydra.sweeper.storage is null: the study lives in memory only")
        elif self.study_name is None:
            log.warning("hydra.sweeper.study_name is null: Optuna picks a new name each time")
        database = self._database()
        if server:
            self._sweep_shared(database, space, fixed, direction, metric)
            return
        with session_lock(self.sweep_dir):
            study = self._open_study(database, space, direction, metric, fixed)
            trials = self._trials()
            try:
                run_session(study, trials, space, fixed, self.n_trials, self.n_jobs)
            except (KeyboardInterrupt, SystemExit):
                self._interrupted(study)
                raise
            self._report(study, metric, trials)

    def _database(self) -> StudyDatabase | None:
        """The storage, opened and checked (None: in memory); heartbeats on a server."""
        if self.storage is None:
            return None
        server = is_server(self.storage)
        return StudyDatabase(
            self.storage,
            heartbeat_interval=self.heartbeat_interval if server else None,
            grace_period=self.grace_period if server else None,
            max_retry=self.max_retry,
            reconnect_timeout=self.reconnect_timeout,
        )

    def _trials(self) -> Trials:
        return Trials(
            launcher=self.launcher,
            config=self.config,
            sweep_dir=self.sweep_dir,
            storage=self.storage,
            study_name=self.study_name,
            pruner=self.pruner,
            extend=self.extend,
            max_failure_rate=self.max_failure_rate,
        )

    def _reseed(self, study: optuna.Study) -> None:
        """A seeded sampler restarts from ``seed + trials so far``: a resumed session does
        not redraw trial 0, and workers sharing a study do not draw the same values."""
        seed = getattr(self.make_sampler, "keywords", {}).get("seed")
        if seed is not None:
            study.sampler = self.make_sampler(seed=seed + len(study.get_trials(deepcopy=False)))

    def _open_study(
        self,
        database: StudyDatabase | None,
        space: dict,
        direction: str,
        metric: str | None,
        fixed: dict[str, str],
    ) -> optuna.Study:
        """Create or load the study and check that this command's direction and search
        space are the study's."""
        study = optuna.create_study(
            study_name=self.study_name,
            storage=database.storage if database else None,
            sampler=self.make_sampler(),
            pruner=self.pruner,
            direction=direction,
            load_if_exists=True,
        )
        if study.get_trials(deepcopy=False):
            self._reseed(study)
        if study.direction.name.lower() != direction:
            raise ConfigError(
                f"study {study.study_name!r} in {redact(self.storage)} was created to "
                f"{study.direction.name.lower()}, not to {direction} {metric}; use another "
                "hydra.sweeper.study_name for a new study."
            )
        check_space(study, space, self.storage)
        log.info(
            "study %r (%s %s) in %s; search space: %s; fixed: %s; pruner: %s",
            study.study_name,
            direction,
            metric,
            redact(self.storage),
            ", ".join(space) or "(none)",
            fixed or "(none)",
            type(self.pruner).__name__,
        )
        self.study_name = study.study_name
        return study

    def _sweep_shared(
        self,
        database: StudyDatabase,
        space: dict,
        fixed: dict[str, str],
        direction: str,
        metric: str | None,
    ) -> None:
        """A study on a server: start the workers (``workers`` here or a SLURM array), or be
        one of them."""
        from medclf.search import workers

        with database.lock(self.study_name):
            study = self._open_study(database, space, direction, metric, fixed)
        trials = self._trials()
        start = workers.plan_workers(self.workers, self.config, self.n_trials)
        if start is not None:
            outcome = start.run()
            self._after_workers(study, outcome)
            self._report(study, metric, trials)
            return
        from medclf.search.shared import SharedStudy

        try:
            SharedStudy(study, trials, database, self._reseed).run(
                space, fixed, self.n_trials, self.n_jobs
            )
        except (KeyboardInterrupt, SystemExit):
            self._interrupted(study)
            raise
        if not os.environ.get(workers.WORKER_ENV):  # a worker started here: its parent reports
            self._report(study, metric, trials)

    def _after_workers(self, study: optuna.Study, failed: list[str]) -> None:
        """The workers have ended: a study that is done survives dead workers (their trials
        were retried); one that is not names them."""
        finished = sum(
            t.state in (TrialState.COMPLETE, TrialState.PRUNED)
            for t in study.get_trials(deepcopy=False)
        )
        for line in failed:
            log.warning("%s", line)
        if failed and finished < self.n_trials:
            raise RuntimeError(
                f"{len(failed)} worker(s) failed ({failed[0]}); the study holds {finished} of "
                f"{self.n_trials} finished trials: run the same command to continue it."
            )

    def _interrupted(self, study: optuna.Study) -> None:
        finished = sum(t.state.is_finished() for t in study.get_trials(deepcopy=False))
        log.warning(
            "interrupted with %d finished trial(s) kept in %s: run the same command to "
            "continue the study",
            finished,
            redact(self.storage),
        )

    def _report(self, study: optuna.Study, metric: str | None, trials: Trials) -> None:
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
        best_dir = best.user_attrs.get(SWEEP_DIR_ATTR, str(self.sweep_dir))
        run_id = trials.run_id(best.number, best_dir)
        results = {
            "name": "optuna",
            "study_name": study.study_name,
            "storage": redact(self.storage),
            "direction": study.direction.name.lower(),
            "optimized_metric": metric,
            "trials": counts,
            "best_trial": best.number,
            "best_value": best.value,
            "best_params": best.params,
            "best_mlflow_run_id": run_id,
            "best_overrides": " ".join(trial_overrides(best)),
        }
        path = self.sweep_dir / "optimization_results.yaml"
        partial = path.with_name(f".{path.name}.{os.getpid()}")
        OmegaConf.save(OmegaConf.create(results), partial)
        partial.replace(path)  # workers on a shared folder each write it whole
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
            path,
        )
        if run_id:
            trials.tag_best(run_id, best_dir)
