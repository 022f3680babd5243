"""DDP on CPU processes (gloo): equal to one process, correct inside sweeps, torchrun, SLURM."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from helpers import (
    FAST,
    REPO,
    TINY_PROCESS,
    check_config,
    process_env,
    run_train,
    search_runs,
    train_process,
)
from medclf.config import CONF_DIR
from medclf.data.sampling import EvalSampler
from medclf.errors import ConfigError
from medclf.pipeline.ddp import config_hash


@pytest.mark.parametrize(("n", "world"), [(7, 2), (9, 3), (2, 4)])
def test_eval_sampler_gives_each_sample_to_exactly_one_rank(n: int, world: int) -> None:
    shares = [list(EvalSampler(range(n), world, rank)) for rank in range(world)]
    assert sorted(sum(shares, [])) == list(range(n))  # no padding, no repeats
    assert [len(EvalSampler(range(n), world, r)) for r in range(world)] == list(map(len, shares))


def _compose(*overrides: str, hydra: bool = False):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("train", list(overrides), return_hydra_config=hydra)


def test_config_hash_ignores_the_run_directory_only() -> None:
    cfg = _compose("paths.output_dir=/runs/one")
    assert config_hash(cfg) == config_hash(_compose("paths.output_dir=/runs/two"))
    other = _compose("paths.output_dir=/runs/one", "optimizer.lr=0.1")
    assert config_hash(cfg) != config_hash(other)


def test_ddp_preset_and_cpu_sync_batchnorm() -> None:
    cfg = _compose("trainer=ddp", "paths.output_dir=/x")
    assert (cfg.trainer.strategy, cfg.trainer.devices, cfg.trainer.num_nodes) == ("ddp", 2, 1)
    cfg.trainer.accelerator = "cpu"
    cfg.trainer.sync_batchnorm = True
    with pytest.raises(ConfigError, match="trainer.sync_batchnorm=true needs GPUs"):
        check_config(config=cfg)


def test_slurm_launcher_takes_nodes_and_tasks_from_the_trainer() -> None:
    cfg = _compose(
        "hydra/launcher=slurm",
        "trainer=ddp",
        "trainer.devices=4",
        "trainer.num_nodes=2",
        "hydra.launcher.partition=gpu",
        hydra=True,
    )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (2, 4, 4)
    assert (launcher.partition, launcher.timeout_min) == ("gpu", 240)


def test_slurm_launcher_writes_its_job_script(tmp_path: Path, monkeypatch) -> None:
    """No cluster here: a stand-in ``sbatch`` keeps the script submitit hands it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(
        '#!/bin/bash\ncp "$1" "$CAPTURE"\necho no cluster >&2\nexit 1\n'
    )
    (bin_dir / "srun").write_text("#!/bin/bash\nexit 0\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("CAPTURE", str(tmp_path / "job.sh"))
    result = run_train(
        tmp_path,
        "-m",
        "hydra/launcher=slurm",
        "trainer=ddp",
        "trainer.devices=4",
        "trainer.num_nodes=2",
        "hydra.launcher.partition=gpu",
        "hydra.launcher.timeout_min=90",
    )
    assert result.returncode != 0 and "no cluster" in result.stderr
    script = (tmp_path / "job.sh").read_text()
    for line in (
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=4",
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --partition=gpu",
        "#SBATCH --time=90",
    ):
        assert line in script
    assert "srun" in script and "submitit.core._submit" in script


def _finished(root: Path) -> pd.Series:
    runs = search_runs(root)
    assert list(runs["status"]) == ["FINISHED"]
    return runs.iloc[0]


def _rank_hashes(run_dir: Path) -> dict[int, str]:
    records = [json.loads(p.read_text()) for p in (run_dir / "ranks").glob("rank*.json")]
    return {r["rank"]: r["config_sha256"] for r in records}


def _predictions(root: Path) -> pd.DataFrame:
    (csv,) = root.glob("logs/runs/*/test/test_predictions.csv")
    return pd.read_csv(csv)


# No dropout, no augmentation, no BatchNorm (tests/tiny_backbone.py's tiny_plain, registered
# as a user's plugin): nothing random or batch-dependent, so 2 processes x 8 and 1 process x
# 16 see the same global batches (DistributedSampler's order for both) and must reach the
# same weights, up to float rounding of the gradient average.
EXACT = (
    "trainer=ddp",
    "backbone.name=tiny_plain",
    "imports=[tiny_backbone]",
    "head.fcl_dropout=false",
    "augment=none",
    "callbacks.early_stopping=null",
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=8",
    "optimizer=sgd",  # Adam divides by sqrt(v): it magnifies rounding in tiny gradients
    "trainer.limit_val_batches=3",
    "trainer.num_sanity_val_steps=0",
    "model.ema_decay=0.9",  # each rank keeps the same average (validation and test use it)
)


@pytest.mark.slow
def test_two_processes_equal_one_with_the_same_global_batch(tmp_path: Path) -> None:
    # DDP ranks are processes: Lightning starts the second by re-running the command line
    two = train_process(tmp_path / "two", *EXACT, "trainer.devices=2", "datamodule.batch_size=8")
    assert two.returncode == 0, two.stderr[-3000:]
    one = run_train(tmp_path / "one", *EXACT, "trainer.devices=1", "datamodule.batch_size=16")
    assert one.returncode == 0, one.stderr[-3000:]
    runs = {name: _finished(tmp_path / name) for name in ("one", "two")}  # one run per job
    keys = ["val/loss", "val/f1", "test/loss", "test/accuracy", "test/f1"]
    for key in keys:
        assert runs["two"][f"metrics.{key}"] == pytest.approx(
            runs["one"][f"metrics.{key}"], abs=1e-4
        ), key
    # AUROC ranks near-tied probabilities after 16 steps: rounding can swap a few pairs.
    assert runs["two"]["metrics.test/auroc"] == pytest.approx(
        runs["one"]["metrics.test/auroc"], abs=2e-2
    )
    two_frame, one_frame = _predictions(tmp_path / "two"), _predictions(tmp_path / "one")
    assert len(two_frame) == len(one_frame) == two_frame["sample"].nunique()  # all, once
    probs = [c for c in one_frame if c.startswith("prob_")]
    np.testing.assert_allclose(two_frame[probs], one_frame[probs], atol=1e-4)
    (run_dir,) = (tmp_path / "two").glob("logs/runs/*")
    hashes = _rank_hashes(run_dir)
    assert sorted(hashes) == [0, 1] and len(set(hashes.values())) == 1
    checkpoints = list(run_dir.glob("checkpoints/epoch_*.ckpt"))
    assert checkpoints
    for ckpt in checkpoints:  # the averaged weights, updated every step on every rank
        saved = torch.load(ckpt, map_location="cpu", weights_only=True)
        assert int(saved["averaging_state"]["n_averaged"]) == 8 * (saved["epoch"] + 1)
        assert "current_model_state" in saved


@pytest.mark.slow
def test_a_sweep_of_ddp_jobs_runs_each_job_once_with_its_own_config(tmp_path: Path) -> None:
    """2 Optuna trials x 2 processes: the children of a trial train the trial's parameters
    (not a sweep of their own): same hash on both ranks, one MLflow run and one Optuna
    trial per job."""
    result = train_process(
        tmp_path,
        "-m",
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.study_name=ddp",
        "backbone=resnet18",
        "datamodule.batch_size=16",
        "trainer=ddp",
        "trainer.devices=2",
        *FAST,
        *TINY_PROCESS,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = tmp_path / "logs/optuna/ddp"
    study = optuna.load_study(study_name="ddp", storage=f"sqlite:///{sweep}/optuna.db")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    hashes = [_rank_hashes(sweep / str(job)) for job in (0, 1)]
    for job in hashes:
        assert sorted(job) == [0, 1] and len(set(job.values())) == 1
    assert hashes[0][0] != hashes[1][0]
    runs = search_runs(tmp_path)
    assert sorted(runs["status"]) == ["FINISHED", "FINISHED"]
    for trial in study.trials:
        run = runs[runs["tags.sweep_job"] == str(trial.number)].iloc[0]
        saved = OmegaConf.load(sweep / str(trial.number) / "config.yaml")
        assert float(run["params.optimizer.lr"]) == pytest.approx(trial.params["optimizer.lr"])
        assert saved.optimizer.lr == pytest.approx(trial.params["optimizer.lr"])


@pytest.mark.slow
def test_torchrun_starts_the_ranks_and_lightning_does_not_relaunch(
    tmp_path: Path, image_folder: Path
) -> None:
    """Two ranks on one node: one MLflow run, the same config, no relaunch, every test image
    once, and only rank 0 decodes images, for the check and the decoded cache (rank 1 waits
    for them and reads them)."""
    env = process_env()
    cache = tmp_path / "image_check.sqlite"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(REPO / "train.py"),
        f"paths.root_dir={tmp_path}",
        "trainer=ddp",
        "trainer.devices=2",
        "datamodule=folder",
        f"datamodule.data_dir={image_folder}",
        f"datamodule.check_cache={cache}",
        "datamodule.batch_size=4",
        *FAST,
        *TINY_PROCESS,
    ]
    # bounded as train_process is: a hung rank fails the test instead of the whole suite
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    run = _finished(tmp_path)
    assert run["params.trainer.devices"] == "2"
    run_dirs = [d for d in (tmp_path / "logs/runs").iterdir() if (d / "ranks").is_dir()]
    assert len(run_dirs) == 1  # rank 0's directory holds every rank's record
    hashes = _rank_hashes(run_dirs[0])
    assert sorted(hashes) == [0, 1] and len(set(hashes.values())) == 1
    records = {
        r["rank"]: r
        for r in map(json.loads, map(Path.read_text, (run_dirs[0] / "ranks").glob("*.json")))
    }
    assert records[0]["image_check"] == {"images": 36, "known": 0, "decoded": 36}
    assert records[1]["image_check"] == {"images": 36, "known": 36, "decoded": 0}
    # the decoded cache (datamodule.cache=auto: on disk): rank 0 builds it, rank 1 reads it
    assert records[0]["decoded_cache"] == {"mode": "disk", "images": 36, "known": 0, "decoded": 36}
    assert records[1]["decoded_cache"] == {"mode": "disk", "images": 36, "known": 36, "decoded": 0}
    assert not list(tmp_path.glob("logs/runs/*/train_ddp_process_*.log"))  # no relaunch
    frame = _predictions(tmp_path)
    assert len(frame) == frame["sample"].nunique() == int(run["params.data.test.samples"])
