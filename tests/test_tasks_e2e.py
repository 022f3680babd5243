"""End to end for every task and data kind: multi-label, binary, metadata, npz 2D/3D and
medical file formats, each through ``python train.py`` and checked against scikit-learn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import class_image
from helpers import FAST, run_train, search_runs

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
        rows.append({"file": f"img/{i:03d}.png", **dict(zip(LABELS, present.astype(int)))})
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
    )
    run = finished(tmp_path, result)
    frame = predictions(run)
    assert [c for c in frame.columns if c.startswith("prob_")] == [f"prob_{c}" for c in LABELS]
    y = np.array([[int(c in v.split(";")) for c in LABELS] for v in frame["label"]])
    probs = frame[[f"prob_{c}" for c in LABELS]].to_numpy()
    pred = (probs > 0.5).astype(int)
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


def metadata_table(root: Path, n: int = 160) -> Path:
    """One image shared by every sample, so only the metadata can tell the classes apart: the
    label is age > 50. Numeric, categorical and missing values."""
    rng = np.random.default_rng(7)
    (root / "img").mkdir(parents=True)
    age = rng.uniform(20, 80, n).round(1)
    bmi = rng.normal(25, 4, n).round(1).astype(object)
    bmi[rng.random(n) < 0.15] = ""
    sex = rng.choice(["F", "M", ""], n, p=[0.45, 0.45, 0.10])
    site = rng.choice(["berlin", "lyon", "oslo"], n)
    noise = rng.integers(0, 255, (16, 16), dtype=np.uint8)
    for i in range(n):
        Image.fromarray(noise).save(root / "img" / f"{i:03d}.png")
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
    """Label depends on metadata only: >= 0.9 test accuracy with meta_columns, chance without."""
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
    ]
    with_meta = run_train(
        tmp_path / "meta",
        *common,
        "trainer.max_epochs=10",
        "datamodule.meta_columns=[age,bmi,sex,site]",
    )
    run = finished(tmp_path / "meta", with_meta)
    assert run["metrics.test/accuracy"] >= 0.9
    frame = predictions(run)
    from sklearn.metrics import accuracy_score

    assert run["metrics.test/accuracy"] == pytest.approx(
        accuracy_score(frame["label"], frame["prediction"]), abs=1e-6
    )
    assert "8 metadata variables" in with_meta.stdout  # age, bmi, bmi_missing, sex x2, site x3
    without = run_train(tmp_path / "plain", *common, "trainer.max_epochs=3")
    plain = finished(tmp_path / "plain", without)
    assert plain["metrics.test/accuracy"] <= 0.75
