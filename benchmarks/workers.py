"""Workers sharing one Optuna study on PostgreSQL (issue 26), on this machine:

(a) trials finished per hour by one search with 1 worker and with ``hydra.sweeper.workers=2``
    (torch threads = cores ÷ workers), short trials of resnet18 on the bundled digits, the
    study on a PostgreSQL cluster started here; the rate counts from the first trial's start
    to the last one's end (worker start-up excluded); the two alternate for ``--rounds``
    rounds, since a shared machine's load drifts (printed beside each);
(b) the time per trial the server storage adds compared with SQLite: the sweeper's own work
    per trial (take a trial under the lock, heartbeats, tell; a pruning job's connection and
    reports) with instant jobs, on PostgreSQL (workers' loop) and on SQLite (one session).

    python benchmarks/workers.py [--trials 4] [--rounds 2] [--loop-trials 40]

Prints Markdown tables; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
TRIAL = (
    "hydra.sweeper.custom_search_space=null",
    "optimizer.lr=tag(log, interval(0.0001, 0.01))",
    "backbone=resnet18",
    "loss=ce",
    "head.fcl_dropout=false",
    "optimizer.weight_decay=0",
    "datamodule.batch_size=32",
    "datamodule.image_size=32",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=6",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=1",
    "callbacks.test_report=null",
    "callbacks.training_curves=null",
    "eval.bootstrap=0",
    "logger=none",
)


def search(
    root: Path, study: str, storage: str, n_trials: int, workers: int, threads: int | None = None
) -> float:
    """Run one search in a process (``threads``: torch's, else cores ÷ workers); returns its
    rate in finished trials per hour."""
    import optuna

    command = [sys.executable, "-m", "medclf.cli.train", "-m", "hparams_search=optuna"]
    command += [f"paths.root_dir={root}", f"hydra.sweeper.study_name={study}"]
    command += [f"hydra.sweeper.storage={storage}", f"hydra.sweeper.n_trials={n_trials}"]
    command += [f"hydra.sweeper.workers={workers}", *TRIAL]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    if threads is not None:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])
    trials = optuna.load_study(study_name=study, storage=storage).get_trials()
    start = min(t.datetime_start for t in trials)
    end = max(t.datetime_complete for t in trials)
    return len(trials) / (end - start).total_seconds() * 3600


class InstantLauncher:
    """A Hydra launcher whose jobs return at once (with a pruning job's storage work)."""

    def __init__(self, storage: str, study: str) -> None:
        self.storage, self.study = storage, study

    def launch(self, jobs, initial_job_idx):
        import optuna
        from hydra.core.utils import JobReturn, JobStatus

        from medclf.search.storage import StudyDatabase

        returns = []
        for number, _ in enumerate(jobs, start=initial_job_idx):
            database = StudyDatabase(self.storage, wait=True)  # as TrialPruning opens it
            storage = database.storage
            study = optuna.load_study(study_name=self.study, storage=storage)
            study_id = storage.get_study_id_from_name(self.study)
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)
            trial = optuna.trial.Trial(study, trial_id)
            trial.report(0.5, step=0)
            trial.should_prune()
            database.close()
            job = JobReturn()
            job.status, job.return_value = JobStatus.COMPLETED, 0.5
            returns.append(job)
        return returns


def sweeper_seconds_per_trial(storage: str, n_trials: int, server: bool) -> float:
    """The sweeper's own time per trial (instant jobs): the workers' loop on a server, the
    one-session loop on SQLite."""
    import optuna
    from omegaconf import OmegaConf
    from optuna.distributions import FloatDistribution

    from medclf.search.session import run_session
    from medclf.search.shared import SharedStudy
    from medclf.search.storage import StudyDatabase
    from medclf.search.trials import Trials

    name = f"loop-{time.time_ns()}"
    database = StudyDatabase(
        storage,
        heartbeat_interval=30 if server else None,
        grace_period=120 if server else None,
        max_retry=3,
    )
    study = optuna.create_study(study_name=name, storage=database.storage)
    space = {"optimizer.lr": FloatDistribution(1e-4, 1e-2, log=True)}
    trials = Trials(
        launcher=InstantLauncher(storage, name),
        config=OmegaConf.create({"optimized_metric": "val/loss"}),
        sweep_dir=Path(tempfile.gettempdir()),
        storage=storage,
        study_name=name,
        pruner=None,
    )
    start = time.perf_counter()
    if server:
        SharedStudy(study, trials, database, lambda s: None).run(space, {}, n_trials, 1)
    else:
        run_session(study, trials, space, {}, n_trials, 1)
    return (time.perf_counter() - start) / n_trials


def postgres() -> tuple[object, Path]:
    from medclf.tracking.postgres import Cluster
    from medclf.tracking.server import free_port

    folder = Path(tempfile.mkdtemp(prefix="medclf-bench-", dir="/tmp"))
    folder.chmod(0o711)  # reachable by the postgres user when run as root
    cluster = Cluster(folder / "pg", "127.0.0.1", free_port())
    cluster.start()
    return cluster, folder


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4, help="trials of each search in (a)")
    parser.add_argument("--rounds", type=int, default=2, help="1-worker/2-worker pairs in (a)")
    parser.add_argument("--loop-trials", type=int, default=40, help="instant trials in (b)")
    args = parser.parse_args(argv)
    import logging
    import statistics

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("medclf.search").setLevel(logging.WARNING)
    cluster, folder = postgres()
    cores, version = len(os.sched_getaffinity(0)), cluster.version
    rows = []
    try:
        root = folder / "runs"
        server = cluster.url("optuna")
        loop_pg = sweeper_seconds_per_trial(server, args.loop_trials, server=True)
        loop_sqlite = sweeper_seconds_per_trial(f"sqlite:///{folder}/o.db", args.loop_trials, False)
        for index in range(args.rounds):  # alternated: the machine's load drifts
            row = []
            for workers, threads in ((1, None), (2, None), (1, 1)):
                name = f"w{workers}t{threads}-{index}"
                rate = search(root, name, server, args.trials, workers, threads)
                row.append((rate, os.getloadavg()[0]))
            rows.append(row)
    finally:
        cluster.stop()
        shutil.rmtree(folder, ignore_errors=True)
    print(f"\n{cores} cores, PostgreSQL {version}; {args.trials} trials per search\n")
    print(
        f"| (a) round | 1 worker ({cores} threads) | 2 workers ({max(1, cores // 2)} each) "
        "| speed-up | 1 worker, 1 thread | load average |"
    )
    print("|---|---|---|---|---|---|")
    for index, ((one, l1), (two, l2), (single, l3)) in enumerate(rows):
        print(
            f"| {index + 1} | {one:.0f}/h | {two:.0f}/h | {two / one:.2f}× | {single:.0f}/h "
            f"| {l1:.1f}, {l2:.1f}, {l3:.1f} |"
        )
    median = statistics.median(row[1][0] / row[0][0] for row in rows)
    print(f"\nmedian speed-up of 2 workers over 1: {median:.2f}×")
    print("\n| (b) storage | the sweeper's seconds per trial (instant jobs) |")
    print("|---|---|")
    print(f"| SQLite, one session | {loop_sqlite:.3f} |")
    print(f"| PostgreSQL, workers' loop | {loop_pg:.3f} |")
    print(f"| the server adds | {loop_pg - loop_sqlite:+.3f} |")


if __name__ == "__main__":
    main()
