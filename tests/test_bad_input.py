"""Bad input fails before training with one clear message; no MLflow run is left RUNNING."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

from helpers import FAST, run_train, search_runs
from medclf.config import CONF_DIR

pytestmark = pytest.mark.slow


def assert_fails_with(root: Path, message: str, *overrides: str) -> None:
    result = run_train(root, *overrides, *FAST, timeout=300)
    assert result.returncode != 0, result.stdout[-2000:]
    assert message in result.stderr, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    runs = search_runs(root)
    assert runs.empty or "RUNNING" not in set(runs["status"])


def test_missing_data_dir(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    assert_fails_with(
        tmp_path,
        f"{missing}': no such directory",
        "datamodule=folder",
        f"datamodule.data_dir={missing}",
    )


def test_unset_data_dir(tmp_path: Path) -> None:
    assert_fails_with(tmp_path, "datamodule.data_dir", "datamodule=folder")


def test_empty_class_folder(tmp_path: Path, image_folder: Path) -> None:
    (image_folder / "empty_class").mkdir()
    assert_fails_with(
        tmp_path,
        f"{image_folder / 'empty_class'}: class folder holds no images",
        "datamodule=folder",
        f"datamodule.data_dir={image_folder}",
    )


def test_corrupt_image_is_named(tmp_path: Path, image_folder: Path) -> None:
    bad = image_folder / "benign" / "broken.png"
    bad.write_bytes(b"this is not a png")
    assert_fails_with(
        tmp_path,
        str(bad),
        "datamodule=folder",
        f"datamodule.data_dir={image_folder}",
        "datamodule.batch_size=8",
    )


def test_csv_without_the_named_columns(tmp_path: Path, image_csv: Path) -> None:
    assert_fails_with(
        tmp_path,
        "no column 'label' (datamodule.label_column)",
        "datamodule=csv",
        f"datamodule.csv_path={image_csv}",
        "datamodule.image_column=file",
    )


def test_image_size_below_backbone_minimum(tmp_path: Path) -> None:
    assert_fails_with(
        tmp_path,
        "needs inputs of at least 75 px",
        "backbone=inceptionv3",
        "datamodule.image_size=32",
    )


@pytest.mark.parametrize(
    ("override", "suggestion"),
    [
        ("backbone=densenet12", "densenet121"),
        ("loss=focl", "focal"),
        ("datamodule=digit", "digits"),
    ],
)
def test_unknown_names_list_the_closest(tmp_path: Path, override: str, suggestion: str) -> None:
    assert_fails_with(tmp_path, f"Did you mean: {suggestion}", override)


def test_failure_during_training_marks_run_failed(tmp_path: Path, monkeypatch) -> None:
    """An exception after the MLflow run exists ends it FAILED, never RUNNING."""
    from medclf.models.module import ClassificationModule
    from medclf.train import run

    def broken_step(self, batch, batch_idx):
        raise RuntimeError("simulated failure in training_step")

    monkeypatch.setattr(ClassificationModule, "training_step", broken_step)
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "train", overrides=[f"paths.root_dir={tmp_path}", *FAST], return_hydra_config=True
        )
    OmegaConf.set_readonly(cfg.hydra, False)
    cfg.hydra.runtime.output_dir = str(tmp_path / "run")
    cfg.hydra.job.override_dirname = "failure-test"
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    with pytest.raises(RuntimeError, match="simulated failure"):
        run(cfg)
    runs = search_runs(tmp_path)
    assert list(runs["status"]) == ["FAILED"]
    assert runs.iloc[0]["tags.mlflow.runName"] == "failure-test"


def test_nonfinite_loss_stops_and_fails_the_run(tmp_path: Path) -> None:
    """A learning rate that blows the weights up: exit 2 with the epoch and batch named, the
    MLflow run FAILED."""
    result = run_train(tmp_path, "optimizer.lr=1e30", "logger.mlflow.save_model=false", *FAST)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "the training loss became NaN or infinite at epoch 0, batch" in result.stderr
    assert "Traceback" not in result.stderr
    assert list(search_runs(tmp_path)["status"]) == ["FAILED"]
