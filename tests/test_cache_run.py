"""Training with the decoded cache (in this process): the same test metrics as without it,
what it did in startup.json and the summary, the data wait logged, a full disk stopping the
run before training, and ``on_device`` training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import medclf.data.cachefill as cachefill
from helpers import FAST, TINY, run_train, search_runs

CHEAP = ("eval.bootstrap=0", "ood.method=null", "callbacks.training_curves=null")
RUN = (
    *FAST,
    *TINY,
    *CHEAP,
    "datamodule=folder",
    "datamodule.batch_size=4",
    "datamodule.num_workers=0",
)
METRICS = ("test/loss", "test/accuracy", "test/f1", "test/auroc", "val/loss")


def _run(root: Path, image_folder: Path, *overrides: str):
    result = run_train(root, *RUN, f"datamodule.data_dir={image_folder}", *overrides)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (run,) = search_runs(root).to_dict("records")
    return run, result


def test_the_cache_changes_no_test_metric(tmp_path: Path, image_folder: Path) -> None:
    """The same seed with and without the cache: the same test metrics to 1e-6 (the decoded
    arrays are the same bytes); the run records what the cache did and how long it waited."""
    plain, _ = _run(tmp_path / "none", image_folder, "datamodule.cache=none")
    cached, result = _run(tmp_path / "disk", image_folder, "datamodule.cache=disk")
    for key in METRICS:
        assert cached[f"metrics.{key}"] == pytest.approx(plain[f"metrics.{key}"], abs=1e-6), key
    assert cached["metrics.time/data_wait_fraction"] >= 0.0
    (run_dir,) = (tmp_path / "disk").glob("logs/runs/*")
    startup = json.loads((run_dir / "startup.json").read_text())["decoded_cache"]
    assert startup["mode"] == "disk" and startup["decoded"] == 36 and startup["images_per_s"] > 0
    assert startup["folder"].startswith(str(tmp_path / "disk" / ".cache" / "decoded"))
    assert cached["metrics.startup/cache_images_per_s"] == pytest.approx(startup["images_per_s"])
    out = result.stdout + result.stderr
    assert "decoded cache (disk in" in out and "36 decoded in" in out and "images/s)" in out
    assert "data wait (time/data_wait_fraction)" in out


def test_a_full_disk_stops_the_run_before_training(
    tmp_path: Path, image_folder: Path, monkeypatch
) -> None:
    monkeypatch.setattr(cachefill, "disk_free", lambda folder: (1000, 10**12))
    result = run_train(
        tmp_path, *RUN, f"datamodule.data_dir={image_folder}", "datamodule.cache=disk"
    )
    assert result.returncode != 0
    err = result.stdout + result.stderr
    assert "not enough disk space for the decoded cache" in err
    assert str(tmp_path / ".cache" / "decoded") in err and "datamodule.cache=none" in err
    assert not list(tmp_path.glob("logs/runs/*/checkpoints/*.ckpt"))
    assert search_runs(tmp_path).empty  # no MLflow run was started


def test_on_device_trains_with_the_set_on_the_device(tmp_path: Path) -> None:
    result = run_train(
        tmp_path, *FAST, *TINY, *CHEAP, "datamodule.cache=memory", "datamodule.on_device=true"
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (run,) = search_runs(tmp_path).to_dict("records")
    assert 0 <= run["metrics.test/accuracy"] <= 1
    assert "decoded cache (memory)" in result.stdout + result.stderr
