"""A team's searches against a real PostgreSQL 15 and a real MLflow server (issue 26):
three workers sharing one study through a SIGKILLed worker and a database restart,
``medclf-server`` itself, and the bad input a shared study can get.

One session fixture starts ``medclf-server`` (PostgreSQL in a folder the ``postgres`` user
can reach, MLflow on it, free ports); every test here shares it (one xdist group)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from omegaconf import OmegaConf
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from helpers import FAST, REPO, process_env, run_train, train_command
from medclf.search.spaces import check_space
from medclf.search.storage import DatabaseUnavailable, StudyDatabase
from medclf.tracking.postgres import Cluster
from medclf.tracking.server import free_port
from medclf.tracking.team import database_on

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("team_server")]
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def _postgres_folder() -> Path:
    """A folder the ``postgres`` user can enter (pytest's own are private to root)."""
    folder = Path(tempfile.mkdtemp(prefix="medclf-team-", dir="/tmp"))
    folder.chmod(0o711)
    return folder


def _start_server(log: Path, *overrides: str) -> tuple[subprocess.Popen, dict[str, str]]:
    """``medclf-server OVERRIDES``, its output in ``log``; returns it with the two printed
    overrides (``tracking``, ``storage``) once it prints them. It starts with SIGINT ignored,
    as a script's background job does (and a test run started as one): SIGINT must still
    stop it."""
    with open(log, "w") as handle:  # a file, not a pipe: the servers log every request
        process = subprocess.Popen(
            [sys.executable, "-m", "medclf.cli.server", *overrides],
            cwd=REPO,
            env=process_env(PYTHONUNBUFFERED="1"),
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
        )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        text = log.read_text()
        tracking = re.search(r"^  logger\.mlflow\.tracking_uri=(\S+)$", text, re.M)
        storage = re.search(r"^  hydra\.sweeper\.storage=(\S+)$", text, re.M)
        if tracking and storage:
            return process, {"tracking": tracking.group(1), "storage": storage.group(1)}
        time.sleep(0.2)
    process.kill()
    raise AssertionError(f"medclf-server did not print its URIs:\n{log.read_text()[-3000:]}")


def _stop(process: subprocess.Popen) -> int:
    process.send_signal(signal.SIGINT)
    return process.wait(timeout=60)


class Team:
    """``medclf-server`` on a folder the ``postgres`` user can reach, on free ports."""

    def __init__(self) -> None:
        self.folder = _postgres_folder()
        self.port, self.db_port = free_port(), free_port()
        self.starts = 0
        self.process: subprocess.Popen | None = None
        self.uris: dict[str, str] = {}

    @property
    def cluster(self) -> Cluster:
        return Cluster(self.folder / "server", "127.0.0.1", self.db_port)

    def start(self) -> dict[str, str]:
        self.starts += 1
        self.process, self.uris = _start_server(
            self.folder / f"server-{self.starts}.log",
            f"dir={self.folder / 'server'}",
            f"port={self.port}",
            f"db_port={self.db_port}",
            "mlflow_workers=1",
            f"paths.root_dir={self.folder}",
        )
        return self.uris

    def stop(self) -> int:
        code, self.process = _stop(self.process), None
        return code

    def __getitem__(self, key: str) -> str:
        return self.uris[key]


@pytest.fixture(scope="session")
def team():
    """The team's back end for every test here: medclf-server (PostgreSQL in a folder, MLflow
    on it), started once (its own test stops and restarts it)."""
    team = Team()
    try:
        team.start()
        yield team
    finally:
        if team.process is not None:
            team.stop()
        team.cluster.stop()  # in case the server did not
        shutil.rmtree(team.folder, ignore_errors=True)


def search(team: Team, image_folder: Path, study: str, *extra: str) -> tuple[str, ...]:
    """Short trials of a tiny network on the 36 generated images, pruned by the median
    rule (a learning rate near 10 sends val/loss far up), on the team's study and MLflow."""
    return (
        "-m",
        "hparams_search=optuna",
        f"hydra.sweeper.study_name={study}",
        f"hydra.sweeper.storage={team['storage']}",
        "hydra.sweeper.heartbeat_interval=1",
        "hydra.sweeper.grace_period=4",
        "hydra/sweeper/pruner=median",
        "hydra.sweeper.pruner.n_startup_trials=2",
        "hydra.sweeper.custom_search_space=null",
        "optimized_metric=val/loss",
        "optimizer.lr=tag(log, interval(0.001, 10.0))",
        "backbone=resnet18",
        "loss=ce",
        "head.fcl_dropout=false",
        "optimizer.weight_decay=0",
        "datamodule=folder",
        f"datamodule.data_dir={image_folder}",
        "datamodule.image_size=24",
        "datamodule.batch_size=4",
        "augment=none",
        *FAST,
        "trainer.limit_test_batches=1",
        "callbacks.early_stopping=null",
        "callbacks.test_report=null",
        "callbacks.training_curves=null",
        "eval.bootstrap=0",
        f"logger.mlflow.tracking_uri={team['tracking']}",
        "logger.mlflow.save_model=false",
        "backbone.name=tiny_plain",
        "imports=[tiny_backbone]",
        *extra,
    )


def _training(study: optuna.Study, jobs: Path, process, skip: set[int]) -> optuna.trial.FrozenTrial:
    """A RUNNING trial (not in ``skip``) whose job has created its MLflow run (and written
    its ``mlflow_run.json``)."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert process.poll() is None, "the search ended too early"
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if trial.number not in skip and (jobs / str(trial.number) / "mlflow_run.json").exists():
                return trial
        time.sleep(0.1)
    raise AssertionError("no trial started training")


def test_three_workers_share_one_study_through_a_kill_and_a_database_restart(
    team, tmp_path: Path, image_folder: Path
) -> None:
    """``hydra.sweeper.workers=3``: three processes run one 9-trial study. One is SIGKILLed
    during a trial: another worker runs its parameters again, its MLflow run ends KILLED.
    PostgreSQL is then stopped for 2.5 s during training: the workers reconnect and the
    search finishes. 9 finished trials, each parameter set once, every run in one
    experiment, FINISHED or KILLED for pruned trials."""
    log = tmp_path / "search.log"
    with open(log, "w") as handle:
        parent = subprocess.Popen(
            train_command(tmp_path, *search(team, image_folder, "team"), *_workers(9, 3)),
            cwd=REPO,
            env=process_env(MLFLOW_HTTP_REQUEST_MAX_RETRIES="5"),
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    database = StudyDatabase(team["storage"], reconnect_timeout=60)
    jobs = tmp_path / "logs/optuna/team"
    try:
        study = _load(database, "team")
        victim = _training(study, jobs, parent, set())
        victim_pid = int(victim.user_attrs["worker"].rsplit(":", 1)[1])
        os.kill(victim_pid, signal.SIGKILL)
        started = max(t.number for t in study.get_trials(deepcopy=False))
        _training(study, jobs, parent, set(range(started + 1)))
        impatient = StudyDatabase(team["storage"], reconnect_timeout=1)
        impatient.rdb.engine.dispose()
        team.cluster.stop()
        with pytest.raises(DatabaseUnavailable, match=r"reconnect_timeout=1\): start it again"):
            impatient.storage.get_all_studies()  # a database away too long: a clear error
        time.sleep(1.5)
        team.cluster.start()
        assert parent.wait(timeout=400) == 0, log.read_text()[-5000:]
    finally:
        if parent.poll() is None:
            os.killpg(parent.pid, signal.SIGKILL)
    output = log.read_text()
    assert "lost the connection to the study's database" in output
    assert re.search(r"reconnected to the study's database \S+ after \d", output)
    assert "ended with signal SIGKILL" in output  # the parent names the dead worker

    trials = _load(database, "team").get_trials(deepcopy=False)
    finished = [t for t in trials if t.state in FINISHED]
    assert len(finished) == 9 and len({t.number for t in finished}) == 9
    assert len({t.params["optimizer.lr"] for t in finished}) == 9  # each set ran once
    states = [(t.number, t.state.name, t.system_attrs.get("failed_trial")) for t in trials]
    assert len(trials) == 10, (states, output[-4000:])  # and the killed one, nothing else
    (dead,) = [t for t in trials if t.state == TrialState.FAIL]
    assert dead.number == victim.number
    (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == victim.number]
    assert retry.state in FINISHED and retry.params == victim.params
    assert int(retry.user_attrs["worker"].rsplit(":", 1)[1]) != victim_pid
    assert {t.state for t in finished} == set(FINISHED)  # the median rule pruned some

    import mlflow

    mlflow.set_tracking_uri(team["tracking"])
    runs = mlflow.search_runs(
        experiment_names=["medclf"], filter_string=f"tags.sweep_dir = '{jobs.resolve()}'"
    )
    assert runs["experiment_id"].nunique() == 1 and len(runs) == 10
    for trial in finished:
        run = _one(runs, "tags.optuna_trial", trial.number)
        assert run["status"] == ("FINISHED" if trial.state == TrialState.COMPLETE else "KILLED")
        assert run["tags.optuna_state"] == trial.state.name
    killed = _one(runs, "tags.sweep_job", victim.number)
    assert killed["status"] == "KILLED" and killed["tags.optuna_retried_as"] == str(retry.number)
    assert _one(runs, "tags.sweep_job", retry.number)["tags.optuna_retry_of"] == str(victim.number)
    password = team["storage"].split("@")[0].rsplit(":", 1)[1]
    assert password not in output  # the workers' log lines hide it
    recorded = [str(v) for v in runs.filter(regex=r"^(params|tags)\.").to_numpy().ravel()]
    assert "search.storage" in " ".join(runs.columns)  # the pruning jobs got the URL...
    assert not any(password in value for value in recorded)  # ...without the password
    results = OmegaConf.load(jobs / "optimization_results.yaml")
    assert results.trials.complete + results.trials.pruned == 9
    assert "***" in results.storage and team["storage"].split("@")[0] not in results.storage


def _one(runs, column: str, value: int):
    """The one run whose ``column`` is ``value``."""
    found = runs[runs[column] == str(value)]
    assert len(found) == 1, found[[column, "status"]]
    return found.iloc[0]


def _workers(n_trials: int, workers: int) -> tuple[str, str]:
    return f"hydra.sweeper.n_trials={n_trials}", f"hydra.sweeper.workers={workers}"


def _load(database: StudyDatabase, name: str) -> optuna.Study:
    deadline = time.monotonic() + 120
    while True:
        try:
            return optuna.load_study(study_name=name, storage=database.storage)
        except KeyError:  # the search has not created it yet
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_medclf_server_serves_stops_on_sigint_and_restarts_with_its_data(
    team: Team, tmp_path: Path
) -> None:
    """It prints both URIs; a run (with an artifact, proxied to the server's folder) logs to
    it; SIGINT stops MLflow and PostgreSQL; a second start on the same folder has the same
    password and the earlier run."""
    from mlflow import MlflowClient

    password = (team.folder / "server" / "password").read_text().strip()
    assert (team.folder / "server" / "password").stat().st_mode & 0o777 == 0o600
    uris = {
        "tracking": f"http://127.0.0.1:{team.port}",
        "storage": f"postgresql+psycopg://medclf:{password}@127.0.0.1:{team.db_port}/optuna",
    }
    assert team.uris == uris
    StudyDatabase(uris["storage"])  # the study's database answers
    client = MlflowClient(uris["tracking"])
    run = client.create_run(client.get_experiment_by_name("medclf").experiment_id)
    client.log_metric(run.info.run_id, "val/f1", 0.75)
    (tmp_path / "note.txt").write_text("proxied")
    client.log_artifact(run.info.run_id, str(tmp_path / "note.txt"))
    client.set_terminated(run.info.run_id)
    assert list((team.folder / "server" / "artifacts").rglob("note.txt"))

    assert team.stop() == 0
    assert not team.cluster.running()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{uris['tracking']}/health", timeout=5)

    assert team.start() == uris  # the same data, the same password
    earlier = MlflowClient(uris["tracking"]).get_run(run.info.run_id)
    assert earlier.info.status == "FINISHED" and earlier.data.metrics["val/f1"] == 0.75


def test_an_existing_database_server_gets_the_study_database_beside_mlflows(team) -> None:
    """``medclf-server database=URL`` (an existing server): Optuna's database is created
    beside MLflow's, and its URL is what gets printed."""
    url = database_on(team.cluster.url("mlflow"), "optuna_lab")
    assert url == team.cluster.url("optuna_lab")
    StudyDatabase(url)  # it exists and answers
    assert database_on(team.cluster.url("mlflow"), "optuna_lab") == url  # kept, not remade


def _refused(root: Path, *overrides: str) -> str:
    """Run a search that must stop before any trial; return what it printed."""
    result = run_train(root, *overrides)
    assert result.returncode == 2, result.stderr[-3000:]
    assert not list(root.glob("logs/optuna/*/0")), "a trial ran"
    return result.stderr


def _bad_search(team: Team, storage: str, *extra: str, study: str = "bad") -> tuple[str, ...]:
    return (
        "-m",
        "hparams_search=optuna",
        f"hydra.sweeper.study_name={study}",
        f"hydra.sweeper.storage={storage}",
        f"logger.mlflow.tracking_uri={team['tracking']}",
        *extra,
    )


def test_a_storage_that_cannot_be_reached_is_named(team, tmp_path: Path) -> None:
    url = f"postgresql+psycopg://medclf:secret@127.0.0.1:{free_port()}/optuna"
    message = _refused(tmp_path, *_bad_search(team, url))
    assert "hydra.sweeper.storage=postgresql+psycopg://medclf:***@127.0.0.1:" in message
    assert "cannot reach the database server" in message and "medclf-server" in message
    assert "secret" not in message


def test_a_wrong_password_is_named(team, tmp_path: Path) -> None:
    url = re.sub(r":[^:@/]+@", ":not-the-password@", team["storage"])
    message = _refused(tmp_path, *_bad_search(team, url))
    assert "the server refused user 'medclf'" in message and "password" in message
    assert "not-the-password" not in message


def test_a_missing_database_driver_is_named(team, tmp_path: Path) -> None:
    message = _refused(tmp_path, *_bad_search(team, "mysql+pymysql://me:pw@db.lab/optuna"))
    assert "hydra.sweeper.storage=mysql+pymysql://me:***@db.lab/optuna" in message
    assert "driver is missing (pymysql)" in message and "pip install pymysql" in message


def test_a_search_space_that_differs_from_the_study_is_refused(team, tmp_path: Path) -> None:
    """The study records its space when created; a command searching another is refused,
    naming the parameter in both."""
    database = StudyDatabase(team["storage"])
    study = optuna.create_study(study_name="space", storage=database.storage, direction="maximize")
    check_space(study, {"optimizer.lr": FloatDistribution(1e-4, 1e-2, log=True)}, "db")
    fixed = ("backbone=resnet18", "loss=ce", "head.fcl_dropout=false", "optimizer.weight_decay=0")
    message = _refused(
        tmp_path,
        *_bad_search(
            team, team["storage"], "optimizer.lr=interval(0.1, 0.5)", *fixed, study="space"
        ),
        "datamodule.batch_size=32",
    )
    assert "hydra.sweeper.params: the search space differs from that of study 'space'" in message
    assert "optimizer.lr is FloatDistribution(high=0.5, log=False, low=0.1" in message
    assert "FloatDistribution(high=0.01, log=True, low=0.0001" in message
    assert "hydra.sweeper.study_name=NAME" in message


def test_the_benchmark_times_the_sweepers_loop_on_both_storages(team, tmp_path, monkeypatch):
    """benchmarks/workers.py (b): the workers' loop on PostgreSQL and the one-session loop
    on SQLite, with instant jobs, each finishing its trials."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import workers

    for storage, server in ((team["storage"], True), (f"sqlite:///{tmp_path}/o.db", False)):
        seconds = workers.sweeper_seconds_per_trial(storage, 3, server=server)
        assert 0 < seconds < 30
    finished = optuna.get_all_study_summaries(f"sqlite:///{tmp_path}/o.db")
    assert [s.n_trials for s in finished] == [3]
