"""Workers sharing one study on a database server: the same command started N times (on N
GPUs, N nodes, a SLURM job array, or ``hydra.sweeper.workers=N``).

Each worker takes the study's next trial until ``n_trials`` trials are finished (COMPLETE
plus PRUNED) over all workers, then exits. Trials are taken under the database's advisory
lock, counting those finished, running and queued, so no more than ``n_trials`` start.
While a trial runs its worker sends heartbeats; a trial whose worker died (SIGKILL, a lost
node, preemption) is failed by another worker after ``grace_period`` seconds and queued
again with the same parameters, and the next free worker runs it: its MLflow run is closed
KILLED with ``optuna_retried_as``, the retry's run carries ``optuna_retry_of``. A worker
stopped by Ctrl-C hands its trial back at once. While the last trials run elsewhere, an
idle worker waits, to take over any whose worker dies.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections import Counter
from collections.abc import Callable

import optuna
from optuna.trial import TrialState

from medclf.search.storage import StudyDatabase
from medclf.search.trials import SWEEP_DIR_ATTR, Trials, trial_overrides

log = logging.getLogger("medclf.search")

# Optuna's heartbeat API is "experimental" and meant for Study.optimize; ask-and-tell with
# our own heartbeat thread is what a sweeper of Hydra jobs needs.
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
warnings.filterwarnings(
    "ignore",
    message=".*(fail_stale_trials|RetryHeartbeatStaleTrialCallback|retry_history|heartbeat)",
    category=optuna.exceptions.ExperimentalWarning,
)


def state_counts(study: optuna.Study) -> Counter:
    """How many trials of the study are in each state."""
    return Counter(t.state for t in study.get_trials(deepcopy=False))


class SharedStudy:
    """One worker of a study that others share (see the module's docstring)."""

    def __init__(
        self,
        study: optuna.Study,
        trials: Trials,
        database: StudyDatabase,
        reseed: Callable[[optuna.Study], None],
    ) -> None:
        self.study = study
        self.trials = trials
        self.database = database
        self.storage = database.storage
        self.reseed = reseed
        self.study_id = self.storage.get_study_id_from_name(study.study_name)

    def _trial_id(self, number: int) -> int:
        return self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)

    def _take(self, space: dict, fixed: dict[str, str], n_trials: int, n_jobs: int):
        """Under the lock: fail trials with stale heartbeats (queueing their retries), then
        take up to ``n_jobs`` trials (queued retries first). None when the study is done."""
        with self.database.lock(self.study.study_name):
            if self.database.judges_heartbeats():
                optuna.storages.fail_stale_trials(self.study)
            states = state_counts(self.study)
            finished = states[TrialState.COMPLETE] + states[TrialState.PRUNED]
            if finished >= n_trials:
                return None, states
            queued = states[TrialState.WAITING]
            new = n_trials - finished - states[TrialState.RUNNING] - queued
            batch = []
            while len(batch) < n_jobs and (queued > 0 or new > 0):
                queued, new = (queued - 1, new) if queued else (queued, new - 1)
                self.reseed(self.study)
                trial = self.trials.ask(self.study, space, fixed, started=self._beat_once)
                batch.append(trial)
            return batch, states

    def _beat_once(self, trial: optuna.Trial) -> None:
        """A trial's first heartbeat, as soon as it exists: from then on a dead worker's
        trial goes stale and is retried."""
        self.storage.record_heartbeat(self._trial_id(trial.number))

    def _note_retry(self, number: int) -> None:
        """If trial ``number`` repeats one whose worker died: close that trial's MLflow run
        (KILLED, ``optuna_retried_as``) and remember it for this one's tags."""
        frozen = self.storage.get_trial(self._trial_id(number))
        history = optuna.storages.RetryHeartbeatStaleTrialCallback.retry_history(frozen)
        if not history:
            return
        previous = history[-1]
        dead = self.storage.get_trial(self._trial_id(previous))
        log.warning(
            "trial %d repeats trial %d (same parameters), whose worker %s stopped sending "
            "heartbeats",
            number,
            previous,
            dead.user_attrs.get("worker", "?"),
        )
        self.trials.retry_of[number] = previous
        self.trials.close_interrupted_runs(
            previous, dead.user_attrs.get(SWEEP_DIR_ATTR), retried_as=number
        )

    def _hand_back(self, numbers: list[int]) -> None:
        """Fail this worker's running trials and queue them again (Ctrl-C)."""
        retry = self.storage.get_heartbeat_stale_trial_callback()
        for number in numbers:
            trial_id = self._trial_id(number)
            if self.storage.get_trial(trial_id).state != TrialState.RUNNING:
                continue
            self.storage.set_trial_state_values(trial_id, state=TrialState.FAIL)
            if retry is not None:
                retry(self.study, self.storage.get_trial(trial_id))
                log.warning("trial %d handed back: queued again for another worker", number)

    def run(self, space: dict, fixed: dict[str, str], n_trials: int, n_jobs: int) -> None:
        """Take and run trials until the study holds ``n_trials`` finished ones."""
        poll = max(1, min(self.database.heartbeat_interval or 5, 10))
        ran = 0
        waiting = False
        while True:
            batch, states = self._take(space, fixed, n_trials, n_jobs)
            if batch is None:
                break
            if not batch:
                if not waiting:
                    log.info(
                        "%d trial(s) running on other workers: waiting, to take over any "
                        "whose worker dies",
                        states[TrialState.RUNNING],
                    )
                waiting = True
                time.sleep(poll)
                continue
            waiting = False
            numbers = [trial.number for trial in batch]
            for number in numbers:
                self._note_retry(number)
            try:
                with self.database.beating(self._trial_id(n) for n in numbers):
                    returns = self.trials.launch([(t.number, trial_overrides(t)) for t in batch])
            except (KeyboardInterrupt, SystemExit):
                self._hand_back(numbers)
                raise
            self.trials.tell(self.study, numbers, returns, shared=True)
            ran += len(numbers)
        states = state_counts(self.study)
        log.info(
            "study %r done: %d trial(s) finished (n_trials=%d), %d of them run by this worker",
            self.study.study_name,
            states[TrialState.COMPLETE] + states[TrialState.PRUNED],
            n_trials,
            ran,
        )
