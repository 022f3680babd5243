"""The resumable Optuna search (medclf.search, hydra/sweeper=medclf_optuna)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import mlflow
import optuna
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from helpers import (
    REPO,
    process_env,
    run_train,
    search_runs,
    tracking_uri,
    train_command,
)
from medclf.config import CONF_DIR
from medclf.errors import ConfigError
from medclf.search.spaces import focal_gamma
from medclf.search.study import default_direction, override_value, search_space, session_lock


def test_search_space_maps_the_sweep_grammar_to_optuna_distributions() -> None:
    space, fixed = search_space(
        [
            "optimizer.lr=tag(log, interval(1e-4, 1e-2))",
            "head.dropout=interval(0.1, 0.5)",
            "datamodule.batch_size=range(16, 129, 16)",
            "loss.gamma=range(0.5, 2.0, 0.5)",
            "backbone=choice(resnet18, mobilenetv2)",
            "head.fcl_dropout=choice(true, false)",
            "trainer.max_epochs=3",
        ]
    )
    assert space["optimizer.lr"] == FloatDistribution(1e-4, 1e-2, log=True)
    assert space["head.dropout"] == FloatDistribution(0.1, 0.5)
    # Hydra's range excludes its stop; Optuna's high is the last value Hydra would give.
    assert space["datamodule.batch_size"] == IntDistribution(16, 128, step=16)
    assert space["loss.gamma"] == FloatDistribution(0.5, 1.5, step=0.5)
    assert space["backbone"] == CategoricalDistribution(["resnet18", "mobilenetv2"])
    assert space["head.fcl_dropout"] == CategoricalDistribution([True, False])
    assert fixed == {"trainer.max_epochs": "3"}


def test_a_later_override_replaces_the_configured_one() -> None:
    space, fixed = search_space(["backbone=choice(resnet18, mobilenetv2)", "backbone=resnet18"])
    assert "backbone" not in space and fixed == {"backbone": "resnet18"}
    space, fixed = search_space(["loss=ce", "loss=choice(ce, focal)"])
    assert "loss" in space and not fixed


def test_values_are_written_back_in_hydra_grammar() -> None:
    assert [override_value(v) for v in (True, False, None, 0.5, "focal")] == [
        "true",
        "false",
        "null",
        "0.5",
        "focal",
    ]


def test_direction_follows_the_metric() -> None:
    assert default_direction("val/f1") == "maximize"
    assert default_direction("val/auroc") == "maximize"
    assert default_direction("val/loss") == "minimize"


@pytest.mark.parametrize(
    ("searched_loss", "fixed_loss", "default_loss", "searched"),
    [
        ("focal", None, "ce", True),
        ("ce", None, "ce", False),
        (None, "focal", "ce", True),  # loss=focal given on the command line
        (None, None, "focal", True),  # the composed config's loss
        (None, None, "ce", False),
    ],
)
def test_focal_gamma_is_searched_only_with_the_focal_loss(
    searched_loss: str | None, fixed_loss: str | None, default_loss: str, searched: bool
) -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    space = {"loss": CategoricalDistribution([searched_loss])} if searched_loss else {}
    trial = study.ask(space)
    trial.set_user_attr("fixed_params", {"loss": fixed_loss} if fixed_loss else {})
    focal_gamma(OmegaConf.create({"loss": {"name": default_loss}}), trial)
    assert ("loss.gamma" in trial.params) is searched
    if searched:
        assert 0.5 <= trial.params["loss.gamma"] <= 5.0


def test_a_second_session_on_the_same_sweep_is_refused(tmp_path: Path) -> None:
    # a SQLite study keeps one session; several workers need a server, which it names
    refused = pytest.raises(
        ConfigError, match=r"another sweep \(pid \d+\).*hydra\.sweeper\.storage=postgresql"
    )
    with session_lock(tmp_path), refused, session_lock(tmp_path):
        pass
    with session_lock(tmp_path):  # released: the next session may start
        pass


def test_the_preset_keeps_the_study_in_the_sweep_directory(tmp_path: Path) -> None:
    overrides = ["hparams_search=optuna", f"paths.root_dir={tmp_path}"]
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides, return_hydra_config=True)
        named = compose("train", [*overrides, "hydra.sweeper.study_name=cells"], True)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("medclf_optuna_sweeper.optuna_sweeper.OptunaSweeper")
    assert cfg.hydra.mode.name == "MULTIRUN"  # -m is optional
    # One directory per study name, the same for every invocation: the command resumes.
    assert cfg.hydra.sweep.dir == f"{tmp_path}/logs/optuna/medclf"
    assert sweeper.storage == f"sqlite:///{tmp_path}/logs/optuna/medclf/optuna.db"
    assert named.hydra.sweeper.storage == f"sqlite:///{tmp_path}/logs/optuna/cells/optuna.db"
    assert sweeper.direction is None
    assert cfg.optimized_metric == "val/f1"
    assert set(sweeper.params) == {
        "optimizer.lr",
        "optimizer.weight_decay",
        "backbone",
        "loss",
        "head.fcl_dropout",
        "datamodule.batch_size",
    }
    assert sweeper.custom_search_space == "medclf.search.spaces.focal_gamma"


def search(image_folder: Path) -> tuple[str, ...]:
    """6 trials on the 36 generated images, 2 epochs each, pruned by the median rule: half
    the space is hopeless (a learning rate of 10 sends the val/loss of a network without
    batch norm far up in one epoch)."""
    return (
        "-m",
        "hparams_search=optuna",
        "hydra.sweeper.study_name=resume",
        "hydra.sweeper.n_trials=6",
        "hydra/sweeper/pruner=median",
        "hydra.sweeper.pruner.n_startup_trials=1",
        "hydra.sweeper.custom_search_space=null",
        "optimized_metric=val/loss",
        "optimizer.lr=choice(0.01,10.0)",
        "backbone=resnet18",
        "loss=ce",
        "head.fcl_dropout=false",
        "optimizer.weight_decay=0",
        "datamodule=folder",
        f"datamodule.data_dir={image_folder}",
        "datamodule.image_size=32",
        "datamodule.batch_size=4",
        "augment=none",
        "trainer.max_epochs=2",
        "callbacks.early_stopping=null",
        "logger.mlflow.save_model=false",
        "backbone.name=tiny_plain",  # no batch norm: re-estimated statistics rescue lr=10
        "imports=[tiny_backbone]",
    )


def _wait_for_run_of_job(root: Path, job: str, process: subprocess.Popen) -> None:
    """Wait until job ``job`` has its MLflow run: its ``mlflow_run.json`` is written once the
    run is made and tagged. A file, polled often: reading the store takes seconds on a
    loaded machine, time in which a 2-epoch trial can finish and the next one start."""
    marker = root / "logs/optuna/resume" / job / "mlflow_run.json"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert process.poll() is None, "the search ended before it could be interrupted"
        if marker.exists():
            return
        time.sleep(0.1)
    raise AssertionError(f"job {job} never started")


@pytest.mark.slow
def test_a_pruned_search_killed_and_resumed_ends_with_n_trials(
    tmp_path: Path, image_folder: Path
) -> None:
    """Pruning: hopeless trials stop before their last epoch (PRUNED in the study, KILLED +
    optuna_state=PRUNED in MLflow), the best trial is a complete one. A SIGKILL in the
    middle and the same command again: finished trials (complete and pruned) are kept, the
    interrupted one runs again with its parameters, 6 trials in all, not more."""
    storage = f"sqlite:///{tmp_path}/logs/optuna/resume/optuna.db"
    first = subprocess.Popen(
        train_command(tmp_path, *search(image_folder)),
        cwd=REPO,
        env=process_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        _wait_for_run_of_job(tmp_path, "4", first)  # trials 0-3 are done, 4 is training
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
    before = optuna.load_study(study_name="resume", storage=storage).trials
    assert [t.state.name for t in before][-1] == "RUNNING"
    assert all(t.state.is_finished() for t in before[:-1]) and len(before) == 5

    second = run_train(tmp_path, *search(image_folder))  # the same command, in this process
    assert second.returncode == 0, second.stderr[-3000:]
    output = second.stderr + second.stdout
    assert "4 finished trial(s) kept, 1 interrupted to run again, 1 new (n_trials=6)" in output

    study = optuna.load_study(study_name="resume", storage=storage)
    assert len(study.trials) == 6  # not 4 + 6
    states = [t.state.name for t in study.trials]
    assert set(states) == {"COMPLETE", "PRUNED"}, states
    for old, new in zip(before, study.trials, strict=False):
        assert new.params == old.params  # kept, and trial 4 rerun with its own parameters
    pruned = [t for t in study.trials if t.state.name == "PRUNED"]
    assert all(t.params["optimizer.lr"] == 10.0 for t in pruned)
    assert all(t.last_step < 1 for t in pruned)  # stopped before the last epoch (step 1)
    assert study.best_trial.state.name == "COMPLETE"
    assert study.best_trial.params["optimizer.lr"] == 0.01

    runs = search_runs(tmp_path)
    killed = runs[runs["status"] == "KILLED"]
    interrupted = killed[killed["tags.optuna_state"].isna()]
    assert list(interrupted["tags.sweep_job"]) == ["4"]  # the interrupted attempt, closed
    by_trial = killed[killed["tags.optuna_state"] == "PRUNED"]
    assert sorted(by_trial["tags.optuna_trial"]) == sorted(str(t.number) for t in pruned)
    for trial in pruned:
        run = by_trial[by_trial["tags.optuna_trial"] == str(trial.number)].iloc[0]
        assert run["tags.optuna_pruned_epoch"] == str(trial.last_step)
        assert "metrics.test/f1" not in run or run["metrics.test/f1"] != run["metrics.test/f1"]
    finished = runs[runs["status"] == "FINISHED"]
    complete = sorted(str(t.number) for t in study.trials if t.state.name == "COMPLETE")
    assert sorted(finished["tags.optuna_trial"]) == complete
    assert set(finished["tags.optuna_state"]) == {"COMPLETE"}
    best = finished[finished["tags.optuna_best"] == "true"]
    assert list(best["tags.optuna_trial"]) == [str(study.best_trial.number)]
    client = mlflow.MlflowClient(tracking_uri(tmp_path))
    history = client.get_metric_history(best["run_id"].iloc[0], "val/loss")
    assert min(m.value for m in history) == pytest.approx(study.best_value, rel=1e-5)
    # the run names say what ran: backbone·loss·data and the searched value
    names = set(runs["tags.mlflow.runName"])
    assert names == {f"tiny_plain·ce·folder:images optimizer.lr={lr}" for lr in ("0.01", "10.0")}

    results = OmegaConf.load(tmp_path / "logs/optuna/resume/optimization_results.yaml")
    assert results.trials.complete == len(complete) and results.trials.pruned == len(pruned)
    assert results.best_trial == study.best_trial.number
    assert results.best_mlflow_run_id == best["run_id"].iloc[0]
