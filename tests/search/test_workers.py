"""Starting a shared study's workers (medclf.search.workers): GPU groups, CPU threads, the
worker's command, and the SLURM job array's parameters (run here as a submitit local
array)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from helpers import run_train
from medclf.config import CONF_DIR
from medclf.errors import ConfigError
from medclf.search.workers import (
    WORKER_ENV,
    ArrayWorkers,
    array_parameters,
    plan_workers,
    worker_command,
    worker_environments,
)


def _config(*overrides: str):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("train", ["hparams_search=optuna", *overrides], return_hydra_config=True)


def test_each_worker_gets_its_own_group_of_gpus() -> None:
    envs = worker_environments(2, ["0", "1", "4", "5"], per_worker=2, cores=16)
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["0,1", "4,5"]
    assert [e[WORKER_ENV] for e in envs] == ["0/2", "1/2"]
    with pytest.raises(ConfigError, match=r"hydra\.sweeper\.workers=3 with trainer\.devices=2 "):
        worker_environments(3, ["0", "1", "4", "5"], per_worker=2, cores=16)


def test_on_cpu_the_cores_are_shared_out(monkeypatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    envs = worker_environments(2, [], per_worker=1, cores=16)
    assert [e["OMP_NUM_THREADS"] for e in envs] == ["8", "8"]
    assert worker_environments(3, [], per_worker=1, cores=2)[0]["OMP_NUM_THREADS"] == "1"
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's choice stands
    assert "OMP_NUM_THREADS" not in worker_environments(2, [], per_worker=1, cores=16)[0]


def test_a_worker_runs_this_command_as_one_worker() -> None:
    argv = ["-m", "hparams_search=optuna", "hydra.sweeper.workers=4", "hydra/launcher=slurm"]
    argv += ["hydra.launcher.partition=gpu", "optimizer.lr=0.1"]
    local = worker_command(argv)
    assert local[:3] == [sys.executable, "-m", "medclf.cli.train"]
    assert local[3:] == [*argv[:2], *argv[3:], "hydra.sweeper.workers=1"]
    array = worker_command(argv, array=True)
    assert array[3:] == [
        "-m",
        "hparams_search=optuna",
        "optimizer.lr=0.1",
        "hydra.sweeper.workers=1",
        "hydra/launcher=basic",
    ]


def test_the_slurm_array_takes_the_launchers_keys_one_node_and_task_per_worker() -> None:
    cfg = _config(
        "hydra/launcher=slurm",
        "trainer.devices=2",
        "hydra.launcher.partition=gpu",
        "hydra.launcher.array_parallelism=4",
    )
    cluster, init, params = array_parameters(cfg.hydra.launcher)
    assert cluster == "slurm" and init["folder"].endswith("/.submitit/%j")
    assert params["slurm_array_parallelism"] == 4 and params["slurm_partition"] == "gpu"
    assert params["gpus_per_node"] == 2 and params["tasks_per_node"] == 1
    assert params["nodes"] == 1 and params["timeout_min"] == 240
    assert init["slurm_max_num_timeout"] == 0
    import submitit

    init["folder"] = "/tmp/unused-%j"  # submitit checks every key against its SLURM executor's
    submitit.AutoExecutor(cluster="debug", **init).update_parameters(**params)


def test_a_job_array_runs_every_worker(tmp_path: Path) -> None:
    """hydra/launcher=submitit_local: the same array code path, as local processes."""
    launcher = OmegaConf.create(
        {
            "_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher",
            "submitit_folder": str(tmp_path / "submitit"),
            "timeout_min": 5,
            "tasks_per_node": 4,
        }
    )
    script = (
        "import os, sys; "
        "open(sys.argv[1] + os.environ['MEDCLF_SWEEP_WORKER'].replace('/', '-'), 'w').close()"
    )
    command = [sys.executable, "-c", script, str(tmp_path / "worker")]
    assert ArrayWorkers(launcher, command, count=2).run() == []
    assert sorted(p.name for p in tmp_path.glob("worker*")) == ["worker0-2", "worker1-2"]
    failing = [sys.executable, "-c", "raise SystemExit(3)"]
    (failure,) = ArrayWorkers(launcher, failing, count=1).run()
    assert "worker 0" in failure and "status 3" in failure


def test_one_worker_without_an_array_launcher_is_this_process(monkeypatch) -> None:
    assert plan_workers(1, _config(), n_trials=5) is None
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # no GPU: auto is this one worker
    assert plan_workers("auto", _config(), n_trials=5) is None


def test_auto_starts_a_worker_per_group_of_visible_gpus(monkeypatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3,5")
    monkeypatch.setattr(sys, "argv", ["medclf-train", "-m", "hparams_search=optuna"])
    start = plan_workers("auto", _config("trainer=ddp", "trainer.devices=2"), n_trials=5)
    assert [env["CUDA_VISIBLE_DEVICES"] for env in start.envs] == ["0,1", "2,3"]
    assert start.command[-1] == "hydra.sweeper.workers=1"


def test_workers_need_a_database_server(tmp_path: Path) -> None:
    """A SQLite study keeps its one session; the message names the server option."""
    result = run_train(
        tmp_path, "-m", "hparams_search=optuna", "hydra.sweeper.workers=2", "logger=none"
    )
    assert result.returncode == 2
    assert "hydra.sweeper.workers=2 needs the study on a database server" in result.stderr
    assert "hydra.sweeper.storage=postgresql+psycopg://" in result.stderr
    assert not list(tmp_path.glob("logs/optuna/medclf/0"))
