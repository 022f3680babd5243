"""Resume: a run killed with SIGKILL continues from its last checkpoint, in its run
directory and MLflow run, and ends with the metrics of a run that was never interrupted."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import albumentations as A
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import REPO

from helpers import TINY_PROCESS, process_env, run_train, search_runs, train_command
from medclf.data.datamodule import DigitsDataModule
from medclf.data.sampling import EpochSampler
from medclf.data.transforms import build_transform
from medclf.errors import ConfigError
from medclf.pipeline.resume import find_last, newest_checkpoint

RUN = (
    "trainer.max_epochs=3",
    "trainer.limit_train_batches=8",
    "trainer.limit_val_batches=3",
    "logger.mlflow.save_model=false",
    "datamodule.num_workers=2",
    # the averaged weights and the mixing draws resume too (checkpoint: averaged and trained
    # weights; mixing: seeded by seed, epoch and batch)
    "model.ema_decay=0.9",
    "augment.mixup=0.2",
    *TINY_PROCESS,  # the killed run is a process of its own
)


def _test_metrics(root: Path) -> tuple[pd.DataFrame, dict[str, float]]:
    runs = search_runs(root)
    metrics = {c[8:]: runs.iloc[0][c] for c in runs.columns if c.startswith("metrics.test/")}
    return runs, metrics


@pytest.mark.slow
def test_sigkilled_run_resumes_to_the_metrics_of_an_uninterrupted_run(tmp_path: Path) -> None:
    """A run with its own directory (``hydra.run.dir``, as SLURM jobs name theirs) killed
    with SIGKILL; the same command plus ``ckpt_path=last`` continues it in that directory and
    MLflow run, and ends with the metrics of a run that was never interrupted."""
    clean = run_train(tmp_path / "clean", *RUN)
    assert clean.returncode == 0, clean.stderr[-3000:]

    root = tmp_path / "killed"
    job = root / "scratch" / "job42"
    command = train_command(root, *RUN, f"hydra.run.dir={job}")
    process = subprocess.Popen(
        command, cwd=REPO, env=process_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.time() + 300
    while not (job / "checkpoints" / "last.ckpt").exists() and time.time() < deadline:
        assert process.poll() is None, process.communicate()[1][-3000:]
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    killed_at = torch.load(job / "checkpoints" / "last.ckpt", weights_only=True, mmap=True)
    assert killed_at["epoch"] < 2, "the run finished before it was killed"
    state = killed_at["callbacks"]["ResumeState"]
    assert list(search_runs(root)["status"]) == ["RUNNING"]  # what SIGKILL leaves
    assert state["mlflow_run_id"] == search_runs(root).iloc[0]["run_id"]

    resumed = run_train(root, *RUN, f"hydra.run.dir={job}", "ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"in its run directory {job}" in resumed.stderr + resumed.stdout
    assert not (root / "logs" / "runs").exists()  # nothing but the named directory

    runs, metrics = _test_metrics(root)
    _, expected = _test_metrics(tmp_path / "clean")
    assert len(runs) == 1 and runs.iloc[0]["status"] == "FINISHED"  # the same MLflow run
    assert runs.iloc[0]["tags.resume_count"] == "1"
    assert set(metrics) == set(expected) and len(metrics) >= 4
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value, abs=1e-6), key
    history = pd.read_csv(job / "plots" / "history.csv")
    assert list(history["epoch"]) == [0, 1, 2]  # the curves span the interruption


def _write_run(log_dir: Path, name: str, overrides: list[str], age: float) -> Path:
    run = log_dir / "runs" / name
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (run / "checkpoints").mkdir()
    last = run / "checkpoints" / "last.ckpt"
    last.write_bytes(b"x")
    os.utime(last, (time.time() - age, time.time() - age))
    return last


def test_last_is_the_newest_run_with_the_same_overrides(tmp_path: Path) -> None:
    old = _write_run(tmp_path, "a", ["loss=focal", "paths.root_dir=/x"], age=100)
    new = _write_run(tmp_path, "b", ["loss=focal"], age=10)
    _write_run(tmp_path, "c", ["loss=ce"], age=1)  # newer, but another experiment
    assert find_last(tmp_path, ["loss=focal", "ckpt_path=last"]) == new
    new.unlink()
    assert find_last(tmp_path, ["ckpt_path=last", "loss=focal"]) == old
    with pytest.raises(ConfigError, match=r"no run under .* \[loss=dice\](.|\n)*loss=ce"):
        find_last(tmp_path, ["loss=dice", "ckpt_path=last"])


def test_last_looks_in_the_commands_own_run_directory_first(tmp_path: Path) -> None:
    """``hydra.run.dir=DIR ckpt_path=last``: DIR's checkpoint, whatever else is under logs/."""
    _write_run(tmp_path, "newer", ["loss=focal"], age=1)
    own = tmp_path / "scratch" / "job42"
    (own / "checkpoints").mkdir(parents=True)
    epoch = own / "checkpoints" / "epoch_000.ckpt"
    epoch.write_bytes(b"x")
    assert find_last(tmp_path / "logs", ["loss=focal"], own) == epoch
    empty = tmp_path / "fresh"
    assert find_last(tmp_path, ["loss=focal"], empty).parent.parent.name == "newer"
    with pytest.raises(ConfigError, match=r"fresh \(this command's run directory\) has no"):
        find_last(tmp_path, ["loss=dice"], empty)


def test_a_run_killed_before_last_ckpt_resumes_from_its_newest_epoch_checkpoint(
    tmp_path: Path,
) -> None:
    last = _write_run(tmp_path, "a", ["loss=focal"], age=100)
    last.unlink()  # killed after writing epoch_001.ckpt, before last.ckpt
    older = last.parent / "epoch_000.ckpt"
    newer = last.parent / "epoch_001.ckpt"
    for path, age in ((older, 50), (newer, 20)):
        path.write_bytes(b"x")
        os.utime(path, (time.time() - age, time.time() - age))
    assert newest_checkpoint(last.parent.parent) == newer
    assert find_last(tmp_path, ["loss=focal"]) == newer
    last.write_bytes(b"x")  # a later last.ckpt is the newest state
    assert find_last(tmp_path, ["loss=focal"]) == last


def test_epoch_sampler_depends_on_seed_and_epoch_only() -> None:
    data = list(range(50))
    first = EpochSampler(data, seed=3, epoch=2)
    later = EpochSampler(data, seed=3)
    for epoch in range(3):
        later.set_epoch(epoch)
        order = list(later)
    assert order == list(first) and {e for e, _ in order} == {2}
    assert sorted(i for _, i in order) == data
    later.set_epoch(3)
    assert [i for _, i in later] != [i for _, i in first]
    weights = torch.tensor([1.0] * 25 + [0.0] * 25, dtype=torch.double)
    drawn = [i for _, i in EpochSampler(data, seed=3, weights=weights)]
    assert len(drawn) == 50 and max(drawn) < 25


def test_train_batches_do_not_depend_on_loader_workers() -> None:
    """Order and augmentation of an epoch are the same with 0 or 2 workers (each sample's
    augmentation is seeded from (seed, epoch, index), not from a worker's state)."""
    batches = []
    for workers in (0, 2):
        dm = DigitsDataModule(image_size=16, batch_size=32, num_workers=workers, seed=7)
        dm.setup()
        train = dm.datasets["train"]
        train.transform = build_transform(16, A.Affine(rotate=(-30, 30), p=1.0), seed=7)
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(4)
        batches.append([b["image"] for b in loader][:3])
    for a, b in zip(*batches, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not np.allclose(batches[0][0].numpy(), batches[0][1].numpy())
