"""One session drives a study kept in a SQLite file (or in memory): a lock file in the
sweep directory refuses a second, so a trial left RUNNING there is an orphan of an
interrupted session and runs again under its own number. Several workers on one study
need a database server (medclf.search.shared)."""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import optuna
from optuna.trial import TrialState

from medclf.errors import ConfigError
from medclf.search.trials import SWEEP_DIR_ATTR, Trials, trial_overrides

log = logging.getLogger("medclf.search")


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
                "wait for it, or give this one its own hydra.sweeper.study_name. Several "
                "workers on one study need a database server: "
                "hydra.sweeper.storage=postgresql+psycopg://... (medclf-server starts one)."
            ) from None
        handle.truncate(0)
        handle.write(str(os.getpid()))
        handle.flush()
        yield


def run_session(
    study: optuna.Study,
    trials: Trials,
    space: dict,
    fixed: dict[str, str],
    n_trials: int,
    n_jobs: int,
) -> None:
    """Rerun this directory's orphans, then ask and run batches of ``n_jobs`` trials until
    the study holds ``n_trials`` finished ones."""
    orphans = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if t.user_attrs.get(SWEEP_DIR_ATTR) == str(trials.sweep_dir)
    ]
    reruns = []
    for trial in orphans:
        trials.close_interrupted_runs(trial.number)
        if set(space) <= set(trial.params):
            reruns.append((trial.number, trial_overrides(trial)))
        else:
            log.warning("trial %d was interrupted under another search space", trial.number)
            study.tell(trial.number, state=TrialState.FAIL)
    finished = sum(t.state.is_finished() for t in study.get_trials(deepcopy=False))
    to_ask = max(0, n_trials - finished - len(reruns))
    log.info(
        "%d finished trial(s) kept, %d interrupted to run again, %d new (n_trials=%d)",
        finished,
        len(reruns),
        to_ask,
        n_trials,
    )
    while reruns or to_ask:
        batch, reruns = reruns[:n_jobs], reruns[n_jobs:]
        while len(batch) < n_jobs and to_ask:
            trial = trials.ask(study, space, fixed)
            batch.append((trial.number, trial_overrides(trial)))
            to_ask -= 1
        trials.tell(study, [n for n, _ in batch], trials.launch(batch))
