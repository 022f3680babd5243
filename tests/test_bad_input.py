"""Bad input fails before training with one clear message; no MLflow run is left RUNNING."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from helpers import (
    FAST,
    TINY,
    run_config,
    run_train,
    search_runs,
    tiny_module,
    write_checkpoint,
)

pytestmark = pytest.mark.slow


def assert_fails_with(root: Path, message: str, *overrides: str) -> None:
    """``medclf-train`` (in this process): non-zero exit, the message on stderr, no
    traceback, no MLflow run left RUNNING."""
    result = run_train(root, *FAST, *overrides)
    _assert_failed(root, message, result.returncode, result.stdout, result.stderr)


def _assert_failed(root: Path, message: str, code, stdout: str, stderr: str) -> None:
    assert code not in (0, None), stdout[-2000:]
    assert message in stderr, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    runs = search_runs(root)
    assert runs.empty or "RUNNING" not in set(runs["status"])


@pytest.fixture
def fails_with():
    return assert_fails_with


def test_missing_data_dir(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    assert_fails_with(
        tmp_path,
        f"{missing}': no such directory",
        "datamodule=folder",
        f"datamodule.data_dir={missing}",
    )


def test_unset_data_dir(tmp_path: Path, fails_with) -> None:
    fails_with(tmp_path, "datamodule.data_dir", "datamodule=folder")


def test_empty_class_folder(tmp_path: Path, image_folder: Path, fails_with) -> None:
    (image_folder / "empty_class").mkdir()
    fails_with(
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


def test_csv_without_the_named_columns(tmp_path: Path, image_csv: Path, fails_with) -> None:
    fails_with(
        tmp_path,
        "no column 'label' (datamodule.label_column)",
        "datamodule=csv",
        f"datamodule.csv_path={image_csv}",
        "datamodule.image_column=file",
    )


def test_image_size_below_backbone_minimum(tmp_path: Path, fails_with) -> None:
    fails_with(
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
def test_unknown_names_list_the_closest(
    tmp_path: Path, override: str, suggestion: str, fails_with
) -> None:
    fails_with(tmp_path, f"Did you mean: {suggestion}", override)


def test_failure_during_training_marks_run_failed(tmp_path: Path, monkeypatch) -> None:
    """An exception after the MLflow run exists ends it FAILED, never RUNNING."""
    from medclf.models.module import ClassificationModule
    from medclf.pipeline.train import run

    def broken_step(self, batch, batch_idx):
        raise RuntimeError("simulated failure in training_step")

    monkeypatch.setattr(ClassificationModule, "training_step", broken_step)
    cfg = run_config(tmp_path, list(FAST), "failure-test")
    with pytest.raises(RuntimeError, match="simulated failure"):
        run(cfg)
    runs = search_runs(tmp_path)
    assert list(runs["status"]) == ["FAILED"]
    assert runs.iloc[0]["tags.mlflow.runName"] == "failure-test"


def test_nonfinite_loss_stops_and_fails_the_run(tmp_path: Path) -> None:
    """A learning rate that blows the weights up: exit 2 with the epoch and batch named, the
    MLflow run FAILED."""
    result = run_train(tmp_path, "optimizer.lr=1e30", *TINY, *FAST)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "the training loss became NaN or infinite at epoch 0, batch" in result.stderr
    assert "Traceback" not in result.stderr
    assert list(search_runs(tmp_path)["status"]) == ["FAILED"]


# --- the corpus: each bad input fails before training with one message naming it ---------


def _csv(tmp_path: Path, image_csv: Path, rows: list[str], header: str = "file,diagnosis"):
    """A CSV next to the fixture's images (``img/<class>_<i>.jpg``) with the given rows."""
    path = image_csv.parent / "bad.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def _rows(image_csv: Path) -> list[str]:
    return image_csv.read_text().splitlines()[1:]


def _csv_args(path: Path, *more: str) -> tuple[str, ...]:
    return (
        "datamodule=csv",
        f"datamodule.csv_path={path}",
        "datamodule.image_column=file",
        "datamodule.label_column=diagnosis",
        "datamodule.batch_size=8",
        *more,
    )


def test_truncated_jpeg(tmp_path: Path, image_csv: Path, fails_with) -> None:
    jpeg = image_csv.parent / "img" / "benign_03.jpg"
    jpeg.write_bytes(jpeg.read_bytes()[: jpeg.stat().st_size // 2])
    fails_with(tmp_path, f"{jpeg}: cannot read this image", *_csv_args(image_csv))


def test_zero_byte_png(tmp_path: Path, image_folder: Path, fails_with) -> None:
    empty = image_folder / "normal" / "empty.png"
    empty.write_bytes(b"")
    folder = ("datamodule=folder", f"datamodule.data_dir={image_folder}")
    fails_with(tmp_path, f"{empty}: cannot read this image", *folder)


def test_image_with_zero_width(tmp_path: Path, image_folder: Path, fails_with) -> None:
    flat = image_folder / "normal" / "flat.npy"
    np.save(flat, np.zeros((24, 0), np.uint8))
    folder = ("datamodule=folder", f"datamodule.data_dir={image_folder}")
    fails_with(tmp_path, f"{flat}: the image has no pixels", *folder)


def test_label_seen_only_outside_train(tmp_path: Path, image_csv: Path, fails_with) -> None:
    rows = [f"{r},train" for r in _rows(image_csv)]
    rows[0] = rows[0].replace("benign,train", "cyst,test")
    rows[1] = rows[1].replace("train", "val")
    rows[-1] = rows[-1].replace("train", "test")
    path = _csv(tmp_path, image_csv, rows, "file,diagnosis,split")
    fails_with(
        tmp_path,
        "label(s) ['cyst'] occur only outside the train split",
        *_csv_args(path, "datamodule.split_column=split"),
    )


def test_empty_csv(tmp_path: Path, image_csv: Path, fails_with) -> None:
    path = _csv(tmp_path, image_csv, [])
    fails_with(tmp_path, f"{path}: the table has no rows", *_csv_args(path))


def test_duplicate_sample_ids(tmp_path: Path, image_csv: Path, fails_with) -> None:
    rows = _rows(image_csv)
    path = _csv(tmp_path, image_csv, [*rows, rows[4]])
    fails_with(
        tmp_path, f"are listed more than once, first '{rows[4].split(',')[0]}'", *_csv_args(path)
    )


def _meta_csv(image_csv: Path, ages: list[str]) -> Path:
    rows = [f"{r},{age}" for r, age in zip(_rows(image_csv), ages, strict=True)]
    return _csv(image_csv.parent, image_csv, rows, "file,diagnosis,age")


def test_metadata_column_missing(tmp_path: Path, image_csv: Path, fails_with) -> None:
    fails_with(
        tmp_path,
        "no column 'weight' (datamodule.meta_columns)",
        *_csv_args(image_csv, "datamodule.meta_columns=[weight]"),
    )


def test_word_in_numeric_metadata_column(tmp_path: Path, image_csv: Path, fails_with) -> None:
    ages = [str(30 + i) for i in range(36)]
    ages[7] = "unknown"
    path = _meta_csv(image_csv, ages)
    fails_with(
        tmp_path,
        "metadata column 'age' holds numbers but also 'unknown' (CSV line 9",
        *_csv_args(path, "datamodule.meta_columns=[age]"),
    )


def test_all_empty_metadata_column(tmp_path: Path, image_csv: Path, fails_with) -> None:
    path = _meta_csv(image_csv, [""] * 36)
    fails_with(
        tmp_path,
        "metadata column 'age' has no values in the train split (it is empty throughout)",
        *_csv_args(path, "datamodule.meta_columns=[age]"),
    )


def test_class_with_one_sample_cannot_be_stratified(
    tmp_path: Path, image_csv: Path, fails_with
) -> None:
    rows = _rows(image_csv)
    rows[0] = rows[0].split(",")[0] + ",rare"
    path = _csv(tmp_path, image_csv, rows)
    fails_with(tmp_path, "class 'rare' has 1 sample(s)", *_csv_args(path))


def test_fewer_train_samples_than_a_batch(tmp_path: Path, image_folder: Path, fails_with) -> None:
    fails_with(
        tmp_path,
        "fewer than datamodule.batch_size=64 with datamodule.drop_last=true",
        "datamodule=folder",
        f"datamodule.data_dir={image_folder}",
        "datamodule.batch_size=64",
    )


def test_mixed_2d_and_3d_files(tmp_path: Path, image_folder: Path, fails_with) -> None:
    np.save(image_folder / "benign" / "volume.npy", np.zeros((8, 24, 24), np.uint8))
    folder = ("datamodule=folder", f"datamodule.data_dir={image_folder}")
    fails_with(tmp_path, "the data mixes 2D images", *folder)


def test_dicom_without_pixel_data(tmp_path: Path, image_folder: Path, fails_with) -> None:
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # a structured report
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    report = pydicom.Dataset()
    report.file_meta = meta
    report.PatientName = "Test^Report"
    report.Modality = "SR"
    path = image_folder / "malignant" / "report.dcm"
    report.save_as(path, enforce_file_format=True)
    folder = ("datamodule=folder", f"datamodule.data_dir={image_folder}")
    fails_with(tmp_path, f"{path}: this DICOM has no pixel data", *folder)


def test_nifti_time_series_where_a_volume_is_expected(tmp_path: Path, fails_with) -> None:
    import nibabel as nib

    root = tmp_path / "volumes"
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for i in range(8):
            data = rng.random((12, 12, 12)).astype(np.float32)
            nib.save(nib.Nifti1Image(data, np.eye(4)), root / name / f"{i}.nii.gz")
    series = root / "a" / "series.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((12, 12, 12, 10), np.float32), np.eye(4)), series)
    fails_with(
        tmp_path,
        f"{series}: NIfTI of shape (12, 12, 12, 10) is 4D",
        "datamodule=folder",
        f"datamodule.data_dir={root}",
        "backbone=3d_resnet18",
    )


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("datamodule.batch_size=-4", "datamodule.batch_size=-4"),
        ("datamodule.image_size=0", "datamodule.image_size=0"),
        ("trainer.max_epochs=-5", "trainer.max_epochs=-5"),
        ("trainer.max_epoch=3", "trainer.max_epoch"),  # a typo: Hydra names the key
        ("backbone.name=resnet_999", "resnet_999"),
        ("ckpt_path=/nowhere/model.ckpt", "ckpt_path=/nowhere/model.ckpt: no such file"),
        ("threshold=youden", "threshold=youden"),  # digits: a softmax multi-class task
        ("threshold=sensitivity@1.2", "strictly between 0 and 1"),
        ("calibration=platt", "calibration='platt': use none or temperature"),
        ("eval.aggregate=mean", "eval.aggregate=mean pools each patient's images"),
        ("eval.subgroups=[sex]", "eval.subgroups=['sex']: subgroups are columns of a CSV"),
    ],
)
def test_bad_values(tmp_path: Path, override: str, message: str, fails_with) -> None:
    fails_with(tmp_path, message, override)


def test_meta_variables_disagree_with_meta_columns(
    tmp_path: Path, image_csv: Path, fails_with
) -> None:
    path = _meta_csv(image_csv, [str(30 + i) for i in range(36)])
    fails_with(
        tmp_path,
        "head.meta_variables=5 disagrees with datamodule.meta_columns",
        *_csv_args(path, "datamodule.meta_columns=[age]", "head.meta_variables=5"),
    )


def test_softmax_with_multilabel_data(tmp_path: Path, image_csv: Path, fails_with) -> None:
    rows = _rows(image_csv)
    rows = [r + ";normal" if i % 3 == 0 else r for i, r in enumerate(rows)]
    path = _csv(tmp_path, image_csv, rows)
    fails_with(
        tmp_path,
        "head.activation=softmax cannot be used with a multi-label datamodule",
        *_csv_args(path, "head.activation=softmax"),
    )


def test_checkpoint_of_another_task(tmp_path: Path, fails_with) -> None:
    """A 3-class checkpoint given to a 10-class (digits) run: named, before any training."""
    path = write_checkpoint(tiny_module(), tmp_path / "other.ckpt")
    fails_with(
        tmp_path, f"ckpt_path={path} was trained with classes ['a', 'b', 'c']", f"ckpt_path={path}"
    )


def test_check_only_reports_every_problem_at_once(tmp_path: Path, image_csv: Path) -> None:
    """check_only=true: no training, no MLflow run; all the table's problems in one report."""
    rows = _rows(image_csv)
    broken = image_csv.parent / rows[2].split(",")[0]
    original = broken.read_bytes()
    broken.write_bytes(b"not a jpeg")
    rows = [*rows, rows[5], "img/missing.jpg,normal"]
    path = _csv(tmp_path, image_csv, rows)
    bad = ("trainer.max_epochs=-5", "model.ema_decay=2")
    result = run_train(tmp_path, "check_only=true", *_csv_args(path, *bad))
    assert result.returncode == 2, result.stderr[-3000:]
    report = result.stdout
    for message in (
        "trainer.max_epochs=-5",
        "model.ema_decay=2",
        "listed more than once",
        "not found",
        f"{broken}: cannot read this image",
    ):
        assert message in report, report
    assert "check_only: 5 problem(s)" in report
    assert not (tmp_path / "mlruns" / "mlflow.db").exists()

    broken.write_bytes(original)
    result = run_train(tmp_path, "+check_only=true", *_csv_args(image_csv))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "no problems found" in result.stdout + result.stderr
    assert not (tmp_path / "mlruns" / "mlflow.db").exists()
    assert not list(tmp_path.glob("logs/runs/*/checkpoints"))
