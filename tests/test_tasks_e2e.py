"""End to end for every task and data kind: multi-label, binary, metadata, npz 2D/3D and
medical file formats, each through ``python train.py`` and checked against scikit-learn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import class_image
from PIL import Image

from helpers import FAST, TINY, run_train, search_runs

pytestmark = pytest.mark.slow
LABELS = ("effusion", "nodule", "mass")


def finished(root: Path, result) -> pd.Series:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    runs = search_runs(root)
    assert list(runs["status"]) == ["FINISHED"]
    return runs.iloc[0]


def predictions(run: pd.Series) -> pd.DataFrame:
    import mlflow

    local = mlflow.MlflowClient().download_artifacts(run["run_id"], "test/test_predictions.csv")
    return pd.read_csv(local, dtype={"label": str, "prediction": str}, keep_default_na=False)


def multilabel_images(root: Path, n: int = 60) -> pd.DataFrame:
    """Grey PNGs whose bright quadrants encode up to three labels; a 0/1 table of them."""
    rng = np.random.default_rng(3)
    (root / "img").mkdir(parents=True)
    rows = []
    for i in range(n):
        present = rng.random(3) < 0.45
        image = rng.integers(0, 60, (24, 24), dtype=np.uint8)
        for k in np.flatnonzero(present):
            rows_, cols = divmod(int(k), 2)
            image[rows_ * 12 : (rows_ + 1) * 12, cols * 12 : (cols + 1) * 12] += 150
        Image.fromarray(image).save(root / "img" / f"{i:03d}.png")
        rows.append(
            {"file": f"img/{i:03d}.png", **dict(zip(LABELS, present.astype(int), strict=True))}
        )
    return pd.DataFrame(rows)


def test_multilabel_csv_with_label_columns(tmp_path: Path) -> None:
    from sklearn import metrics

    table = multilabel_images(tmp_path / "data")
    table.to_csv(tmp_path / "data" / "labels.csv", index=False)
    result = run_train(
        tmp_path,
        "datamodule=csv",
        f"datamodule.csv_path={tmp_path / 'data' / 'labels.csv'}",
        "datamodule.image_column=file",
        f"datamodule.label_columns=[{','.join(LABELS)}]",
        "datamodule.image_size=32",
        "datamodule.batch_size=8",
        "datamodule.num_workers=0",
        "loss=focal",
        "loss.class_weights=balanced",
        *FAST,
        *TINY,
    )
    run = finished(tmp_path, result)
    frame = predictions(run)
    assert [c for c in frame.columns if c.startswith("prob_")] == [f"prob_{c}" for c in LABELS]
    y = np.array([[int(c in v.split(";")) for c in LABELS] for v in frame["label"]])
    probs = frame[[f"prob_{c}" for c in LABELS]].to_numpy()
    pred = (probs >= 0.5).astype(int)  # medclf.models.outputs.decide
    assert (
        np.array([[int(c in v.split(";")) for c in LABELS] for v in frame["prediction"]]) == pred
    ).all()
    expected = {
        "accuracy": metrics.accuracy_score(y.ravel(), pred.ravel()),
        "precision": metrics.precision_score(y, pred, average="macro", zero_division=0),
        "recall": metrics.recall_score(y, pred, average="macro", zero_division=0),
        "f1": metrics.f1_score(y, pred, average="macro", zero_division=0),
        "auroc": metrics.roc_auc_score(y, probs, average="macro"),
    }
    for name, value in expected.items():
        assert run[f"metrics.test/{name}"] == pytest.approx(value, abs=1e-6), name
    assert run["params.head.activation"] == "auto"


def metadata_table(root: Path, n: int = 200) -> Path:
    """Each sample one of four noise images, drawn independently of the label, so only the
    metadata can tell the classes apart: the label is age > 50. Numeric, categorical and
    missing values. (Not one image shared by all: batch norm then divides rounding errors
    by a variance of zero, and eval-mode features depend on them; not one image per sample:
    the network memorises some of them.)"""
    rng = np.random.default_rng(7)
    (root / "img").mkdir(parents=True)
    age = rng.uniform(20, 80, n).round(1)
    bmi = rng.normal(25, 4, n).round(1).astype(object)
    bmi[rng.random(n) < 0.15] = ""
    sex = rng.choice(["F", "M", ""], n, p=[0.45, 0.45, 0.10])
    site = rng.choice(["berlin", "lyon", "oslo"], n)
    pool = rng.integers(0, 255, (4, 16, 16), dtype=np.uint8)
    for i, k in enumerate(rng.integers(0, len(pool), n)):
        Image.fromarray(pool[k]).save(root / "img" / f"{i:03d}.png")
    table = pd.DataFrame(
        {
            "file": [f"img/{i:03d}.png" for i in range(n)],
            "age": age,
            "bmi": bmi,
            "sex": sex,
            "site": site,
            "label": np.where(age > 50, "old", "young"),
        }
    )
    table.to_csv(root / "meta.csv", index=False)
    return root / "meta.csv"


def test_metadata_drives_the_prediction(tmp_path: Path) -> None:
    """Label depends on metadata only: >= 0.9 test accuracy with meta_columns, chance without.

    The images give the backbone nothing to learn (the tiny test network suffices); without
    the optional Dense-512 layer (head.fcl_dropout=false) the pooled features go straight
    into the metadata block, which learns the rule."""
    csv = metadata_table(tmp_path / "data")
    common = [
        "datamodule=csv",
        f"datamodule.csv_path={csv}",
        "datamodule.image_column=file",
        "datamodule.image_size=32",
        "datamodule.batch_size=16",
        "datamodule.num_workers=0",
        "augment=none",
        "optimizer.lr=0.003",
        "callbacks.early_stopping=null",
        "datamodule.test_fraction=0.25",
        "trainer.num_sanity_val_steps=0",
        "head.fcl_dropout=false",
        *TINY,
    ]
    with_meta = run_train(
        tmp_path / "meta",
        *common,
        "trainer.max_epochs=20",
        "datamodule.meta_columns=[age,bmi,sex,site]",
        "logger.mlflow.save_model=true",  # the logged metadata model is checked below
    )
    run = finished(tmp_path / "meta", with_meta)
    # logged as float32: 0.9 → 0.8999999
    assert round(run["metrics.test/accuracy"], 6) >= 0.9, with_meta.stdout[-6000:]
    frame = predictions(run)
    from sklearn.metrics import accuracy_score

    assert run["metrics.test/accuracy"] == pytest.approx(
        accuracy_score(frame["label"], frame["prediction"]), abs=1e-6
    )
    assert "8 metadata variables" in with_meta.stdout  # age, bmi, bmi_missing, sex x2, site x3
    assert_pyfunc_equals_checkpoint(run)
    without = run_train(tmp_path / "plain", *common, "trainer.max_epochs=3")
    plain = finished(tmp_path / "plain", without)
    assert plain["metrics.test/accuracy"] <= 0.75


def assert_pyfunc_equals_checkpoint(run: pd.Series) -> None:
    """The logged metadata model (a pyfunc taking {"image", "metadata"}) gives the logged
    checkpoint's probabilities on the same inputs, shaped as its signature says."""
    import mlflow
    import torch

    from medclf.models.module import ClassificationModule

    model = mlflow.pyfunc.load_model(run["tags.model_uri"])
    shapes = {spec.name: spec.shape for spec in model.metadata.signature.inputs.inputs}
    assert set(shapes) == {"image", "metadata"} and shapes["metadata"][1:] == (8,)
    rng = np.random.default_rng(0)
    inputs = {k: rng.random((5, *shape[1:])).astype(np.float32) for k, shape in shapes.items()}
    client = mlflow.MlflowClient()
    (checkpoint,) = client.list_artifacts(run["run_id"], "checkpoints")
    path = client.download_artifacts(run["run_id"], checkpoint.path)
    module = ClassificationModule.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    with torch.no_grad():
        logits = module.eval()(
            torch.from_numpy(inputs["image"]), torch.from_numpy(inputs["metadata"])
        )
        expected = module.head.activate(logits).numpy()
    np.testing.assert_allclose(model.predict(inputs), expected, atol=1e-5)


def test_binary_single_sigmoid_output(tmp_path: Path, image_folder: Path) -> None:
    """head.n_outputs=1 on two classes: one sigmoid output, binary metrics = sklearn's."""
    import shutil

    from sklearn import metrics

    shutil.rmtree(image_folder / "normal")
    result = run_train(
        tmp_path,
        "datamodule=folder",
        f"datamodule.data_dir={image_folder}",
        "datamodule.image_size=32",
        "datamodule.batch_size=4",
        "datamodule.num_workers=0",
        "head.n_outputs=1",
        *FAST,
        *TINY,
    )
    run = finished(tmp_path, result)
    frame = predictions(run)
    p = frame["prob_malignant"].to_numpy()
    assert np.allclose(frame["prob_benign"] + p, 1.0, atol=1e-6)
    y = (frame["label"] == "malignant").astype(int)
    pred = (p >= 0.5).astype(int)  # medclf.models.outputs.decide
    assert ((frame["prediction"] == "malignant").astype(int) == pred).all()
    expected = {
        "accuracy": metrics.accuracy_score(y, pred),
        "precision": metrics.precision_score(y, pred, zero_division=0),
        "recall": metrics.recall_score(y, pred, zero_division=0),
        "f1": metrics.f1_score(y, pred, zero_division=0),
        "auroc": metrics.roc_auc_score(y, p),
    }
    for name, value in expected.items():
        assert run[f"metrics.test/{name}"] == pytest.approx(value, abs=1e-6), name


def assert_multiclass_metrics(run: pd.Series) -> pd.DataFrame:
    from sklearn import metrics

    frame = predictions(run)
    classes = [c[len("prob_") :] for c in frame.columns if c.startswith("prob_")]
    y, p = frame["label"], frame["prediction"]
    assert run["metrics.test/accuracy"] == pytest.approx(metrics.accuracy_score(y, p), abs=1e-6)
    f1 = metrics.f1_score(y, p, average="macro", labels=classes, zero_division=0)
    assert run["metrics.test/f1"] == pytest.approx(f1, abs=1e-6)
    return frame


def write_npz(path: Path, shape: tuple[int, ...], n_classes: int = 3) -> Path:
    """A MedMNIST-layout file whose class sets the mean brightness of each image or volume."""
    rng = np.random.default_rng(11)
    arrays = {}
    for split, n in (("train", 48), ("val", 12), ("test", 12)):
        labels = np.arange(n) % n_classes
        images = rng.integers(0, 80, (n, *shape)).astype(np.uint8)
        images += (labels * 80).astype(np.uint8).reshape((n,) + (1,) * len(shape))
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels[:, None]
    np.savez(path, **arrays)
    return path


def test_npz_2d(tmp_path: Path) -> None:
    npz = write_npz(tmp_path / "organ.npz", (28, 28))
    result = run_train(
        tmp_path,
        "datamodule=npz",
        f"datamodule.path={npz}",
        "datamodule.image_size=32",
        "datamodule.batch_size=8",
        "datamodule.class_names=[liver,kidney,spleen]",
        *FAST,
        *TINY,
    )
    frame = assert_multiclass_metrics(finished(tmp_path, result))
    assert len(frame) == 12 and set(frame["label"]) == {"liver", "kidney", "spleen"}


def test_npz_3d_volumes_with_a_monai_backbone(tmp_path: Path) -> None:
    npz = write_npz(tmp_path / "nodule3d.npz", (28, 28, 28))
    result = run_train(
        tmp_path,
        "datamodule=npz",
        f"datamodule.path={npz}",
        "backbone=3d_resnet18",
        "datamodule.volume_size=[16,16,16]",
        "datamodule.batch_size=8",
        "augment=default",
        *FAST,
    )
    run = finished(tmp_path, result)
    assert "3D, 1 channel(s)" in result.stdout
    assert_multiclass_metrics(run)


def test_2d_backbone_with_3d_data_is_a_config_error(tmp_path: Path) -> None:
    npz = write_npz(tmp_path / "v.npz", (28, 28, 28))
    result = run_train(
        tmp_path, "datamodule=npz", f"datamodule.path={npz}", "datamodule.batch_size=8", *FAST
    )
    assert result.returncode == 2
    assert "backbone=resnet18 takes 2D images but the data holds 3D volumes" in result.stderr
    assert search_runs(tmp_path).empty


def write_medical_folder(root: Path) -> Path:
    """Two classes, each with a DICOM, a NIfTI slice and a 16-bit TIFF per sample."""
    import nibabel as nib
    import tifffile
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    rng = np.random.default_rng(5)
    for label, name in enumerate(("healthy", "lesion")):
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(9):
            image = class_image(label, rng).astype(np.uint16) * 200
            meta = FileMetaDataset()
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
            meta.MediaStorageSOPInstanceUID = generate_uid()
            ds = FileDataset(str(folder / f"ct_{i}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
            ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, generate_uid()
            ds.Modality, ds.PhotometricInterpretation = "CT", "MONOCHROME2"
            ds.Rows, ds.Columns = image.shape
            ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, 16, 16, 15
            ds.PixelRepresentation, ds.RescaleSlope, ds.RescaleIntercept = 0, 1, -1024
            ds.PixelData = image.tobytes()
            ds.save_as(folder / f"ct_{i}.dcm", enforce_file_format=True)
            nib.save(
                nib.Nifti1Image(image.T.astype(np.float32), np.eye(4)), folder / f"mr_{i}.nii.gz"
            )
            tifffile.imwrite(folder / f"micro_{i}.tif", image)
    return root


def test_folder_of_dicom_nifti_and_16bit_tiff(tmp_path: Path) -> None:
    data = write_medical_folder(tmp_path / "scans")
    result = run_train(
        tmp_path,
        "datamodule=folder",
        f"datamodule.data_dir={data}",
        "datamodule.image_size=32",
        "datamodule.batch_size=8",
        "datamodule.num_workers=0",
        *FAST,
        *TINY,
    )
    frame = assert_multiclass_metrics(finished(tmp_path, result))
    suffixes = {Path(s).name.split(".", 1)[1] for s in frame["sample"]}
    assert suffixes <= {"dcm", "nii.gz", "tif"} and len(frame) >= 6


def test_four_channel_microscopy_keeps_its_channels(tmp_path: Path) -> None:
    import tifffile

    rng = np.random.default_rng(9)
    for label, name in enumerate(("g1", "mitosis")):
        (tmp_path / "cells" / name).mkdir(parents=True)
        for i in range(12):
            stack = np.stack([class_image(label, rng) for _ in range(4)]).astype(np.uint8)
            tifffile.imwrite(
                tmp_path / "cells" / name / f"{i}.tif",
                stack,
                photometric="minisblack",
                metadata={"axes": "CYX"},
            )
    result = run_train(
        tmp_path,
        "datamodule=folder",
        f"datamodule.data_dir={tmp_path / 'cells'}",
        "datamodule.image_size=32",
        "datamodule.batch_size=8",
        "datamodule.num_workers=0",
        *FAST,
        *TINY,
    )
    run = finished(tmp_path, result)
    assert "4 channel(s)" in result.stdout
    assert_multiclass_metrics(run)
