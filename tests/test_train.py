"""End to end: ``medclf-train`` as a user runs it (in this process), read back from MLflow.
(Ctrl-C ending the run KILLED: tests/test_interrupt.py, in a real process.)"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import FAST, TINY, run_train, search_runs, tracking_uri

pytestmark = pytest.mark.slow


def finished_run(root: Path, result) -> pd.Series:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    runs = search_runs(root)
    assert len(runs) == 1
    run = runs.iloc[0]
    assert run["status"] == "FINISHED"
    assert "metrics.test/f1" in run and np.isfinite(run["metrics.test/f1"])
    return run


def assert_metrics_equal_sklearn(run: pd.Series) -> pd.DataFrame:
    """Logged test metrics equal scikit-learn's on the logged test_predictions.csv."""
    import mlflow
    from sklearn import metrics

    client = mlflow.MlflowClient()
    local = client.download_artifacts(run["run_id"], "test/test_predictions.csv")
    frame = pd.read_csv(local, dtype={"label": str, "prediction": str})
    classes = [c[len("prob_") :] for c in frame.columns if c.startswith("prob_")]
    probs = frame[[f"prob_{c}" for c in classes]].to_numpy()
    assert (frame["prediction"] == np.asarray(classes)[probs.argmax(axis=1)]).all()
    y, p = frame["label"], frame["prediction"]
    expected = {
        "accuracy": metrics.accuracy_score(y, p),
        "precision": metrics.precision_score(y, p, average="macro", zero_division=0),
        "recall": metrics.recall_score(y, p, average="macro", zero_division=0),
        "f1": metrics.f1_score(y, p, average="macro", zero_division=0),
        "auroc": metrics.roc_auc_score(
            y, probs, multi_class="ovr", average="macro", labels=classes
        ),
    }
    for name, value in expected.items():
        assert run[f"metrics.test/{name}"] == pytest.approx(value, abs=1e-6), name
    per_class = metrics.f1_score(y, p, average=None, labels=classes, zero_division=0)
    for name, value in zip(classes, per_class, strict=True):
        assert run[f"metrics.test/f1_{name}"] == pytest.approx(value, abs=1e-6)
    return frame


@pytest.mark.parametrize(
    ("loss", "backbone"), [("ce", "resnet18"), ("focal", "tiny"), ("kl", "tiny")]
)
def test_digits_each_loss_trains_tests_and_tracks(tmp_path: Path, loss: str, backbone: str):
    """Each loss; the default backbone once, the tests' tiny one for the others."""
    extra = () if backbone == "resnet18" else TINY
    result = run_train(tmp_path, f"loss={loss}", *FAST, *extra)
    run = finished_run(tmp_path, result)
    assert run["params.loss.name"] == loss
    assert run["params.backbone.name"] == backbone
    assert run["tags.mlflow.runName"] == f"{backbone}·{loss}·digits"  # what ran, at a glance
    assert f"loss={loss}" in run["tags.overrides"]
    frame = assert_metrics_equal_sklearn(run)
    assert len(frame) == 270 and set(frame["label"]) == {str(i) for i in range(10)}
    assert list(frame.columns[:3]) == ["sample", "label", "prediction"]
    output = result.stdout + result.stderr
    link = f"http://127.0.0.1:5000/#/experiments/{run['experiment_id']}/runs/{run['run_id']}"
    assert f"MLflow run {run['run_id']}" in output and f"`make ui`, then {link}" in output


@pytest.mark.xdist_group("digits_run")
def test_default_run_logs_artifacts_and_tags_experiment(digits_run) -> None:
    """The default run (trained once per session: the digits_run fixture)."""
    import mlflow

    root, _, _, result = digits_run
    run = finished_run(root, result)
    client = mlflow.MlflowClient(tracking_uri(root))
    experiment = client.get_experiment(run["experiment_id"])
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    top = {a.path for a in client.list_artifacts(run["run_id"])}
    assert {"config.yaml", "checkpoints", "test", "plots", "splits.csv", "report.html"} <= top
    test_files = {a.path for a in client.list_artifacts(run["run_id"], "test")}
    assert test_files == {
        "test/test_predictions.csv",
        "test/per_class_report.csv",
        "test/metrics.csv",
        "test/confusion_matrix.png",
        "test/per_class_metrics.png",
        "test/roc_curves.png",
        "test/pr_curves.png",
        "test/reliability.png",
    }
    plots = {a.path for a in client.list_artifacts(run["run_id"], "plots")}
    assert plots == {"plots/training_curves.png", "plots/history.csv"}
    history = pd.read_csv(client.download_artifacts(run["run_id"], "plots/history.csv"))
    assert list(history.columns) == ["epoch", "train/loss", "train/f1", "val/loss", "val/f1"]
    val_f1 = [m.value for m in client.get_metric_history(run["run_id"], "val/f1")]
    assert history["val/f1"].tolist() == pytest.approx(val_f1)
    train_f1 = [m.value for m in client.get_metric_history(run["run_id"], "train/f1")]
    assert len(train_f1) == len(history) and history["train/f1"].tolist() == pytest.approx(train_f1)
    (checkpoint,) = client.list_artifacts(run["run_id"], "checkpoints")
    assert checkpoint.path.endswith(".ckpt") and checkpoint.file_size > 1e6
    for key in (
        "train/loss_epoch",
        "train/accuracy",
        "val/loss",
        "val/f1",
        "val/auroc",
        "test/precision",
        "test/recall",
        "test/accuracy",
    ):
        assert f"metrics.{key}" in run, key
    assert_logged_model_predicts_like_the_test(client, run)
    assert run["params.datamodule.image_size"] == "32"
    assert run["params.optimizer.lr"] == "0.001"
    _check_dataset_inputs(run, digits_run[2])
    # the start-up's phases (medclf.runtime): in the run directory and as metrics
    startup = json.loads((digits_run[2] / "startup.json").read_text())
    cache = startup.pop("decoded_cache")
    assert cache["mode"] == "memory" and cache["images"] == 1797  # digits, on the device
    phases = ["imports", "config", "data", "model", "trainer"]
    assert list(startup)[-6:] == [*phases, "total"]
    total = sum(v for k, v in startup.items() if k != "total")
    assert startup["total"] == pytest.approx(total, abs=0.01)
    assert all(startup[k] >= 0 for k in startup)
    assert run["metrics.startup/total_s"] == pytest.approx(startup["total"])
    assert run["metrics.startup/trainer_s"] == pytest.approx(startup["trainer"])


def _check_dataset_inputs(run, run_dir: Path) -> None:
    """Three MLflow dataset inputs (train, val, test) named by the data, whose digests are
    SHA-256 over the split's sample, label and file size (0: digits are arrays) rows."""
    import hashlib

    import mlflow

    logged = mlflow.MlflowClient(tracking_uri(run_dir.parents[2])).get_run(run["run_id"])
    inputs = logged.inputs.dataset_inputs
    contexts = {
        t.value: i.dataset for i in inputs for t in i.tags if t.key == "mlflow.data.context"
    }
    assert sorted(contexts) == ["test", "train", "val"] and len(inputs) == 3
    splits = pd.read_csv(run_dir / "splits.csv", dtype=str, keep_default_na=False)
    for split, dataset in contexts.items():
        rows = splits[splits["split"] == split]
        lines = sorted(
            f"{s}\t{lab}\t0" for s, lab in zip(rows["sample"], rows["label"], strict=True)
        )
        assert dataset.digest == hashlib.sha256("\n".join(lines).encode()).hexdigest()[:12]
        assert dataset.name == "digits"
        assert json.loads(dataset.profile)["num_rows"] == len(rows)


def test_folder_datamodule_on_generated_images(tmp_path: Path, image_folder: Path) -> None:
    result = run_train(
        tmp_path,
        "datamodule=folder",
        f"datamodule.data_dir={image_folder}",
        "datamodule.image_size=32",
        "datamodule.batch_size=8",
        "datamodule.num_workers=0",
        "loss=focal",
        "loss.class_weights=balanced",
        *FAST,
        *TINY,
    )
    run = finished_run(tmp_path, result)
    frame = assert_metrics_equal_sklearn(run)
    assert set(frame["label"]) == {"benign", "malignant", "normal"}
    assert frame["sample"].str.endswith(".png").all()


def test_speed_switches_on_cpu(tmp_path: Path, image_folder: Path) -> None:
    """bf16-mixed autocast, channels_last and the decoded cache in memory (read by two loader
    workers) through a whole run: metrics agree with the predictions, and the logged model
    (channels_last weights) predicts."""
    import mlflow
    from PIL import Image

    result = run_train(
        tmp_path,
        "datamodule=folder",
        f"datamodule.data_dir={image_folder}",
        "datamodule.image_size=32",
        "datamodule.batch_size=8",
        "datamodule.num_workers=2",
        "datamodule.cache=memory",
        "trainer.precision=bf16-mixed",
        "model.channels_last=true",
        "logger.mlflow.save_model=true",  # the logged channels_last model predicts below
        *FAST,
        *TINY,
    )
    run = finished_run(tmp_path, result)
    output = result.stdout + result.stderr
    assert "Using bfloat16 Automatic Mixed Precision (AMP)" in output
    assert "decoded cache (memory): 36 images, 36 decoded" in output
    assert run["params.trainer.precision"] == "bf16-mixed"
    assert run["params.model.channels_last"] == "True"
    assert_metrics_equal_sklearn(run)
    files = sorted(image_folder.rglob("*.png"))[:2]
    images = np.stack(
        [np.asarray(Image.open(f).resize((32, 32)), np.float32)[None] / 255 for f in files]
    )
    probs = mlflow.pyfunc.load_model(run["tags.model_uri"]).predict(images)
    assert probs.shape == (2, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-5)


def test_csv_datamodule_on_generated_images(tmp_path: Path, image_csv: Path) -> None:
    result = run_train(
        tmp_path,
        "datamodule=csv",
        f"datamodule.csv_path={image_csv}",
        "datamodule.image_column=file",
        "datamodule.label_column=diagnosis",
        "datamodule.image_size=32",
        "datamodule.batch_size=8",
        "datamodule.num_workers=2",
        "backbone=mobilenetv2",
        "loss=kl",
        "augment=default",
        *FAST,
    )
    run = finished_run(tmp_path, result)
    assert_metrics_equal_sklearn(run)
    assert run["params.datamodule.channels"] == "auto"


def test_csv_and_none_loggers(tmp_path: Path) -> None:
    result = run_train(tmp_path, "logger=csv", *FAST, *TINY)
    assert result.returncode == 0, result.stderr[-3000:]
    assert list(tmp_path.glob("logs/runs/*/csv/version_0/metrics.csv"))
    assert not (tmp_path / "mlruns" / "mlflow.db").exists()
    result = run_train(tmp_path, "logger=none", "callbacks=none", *FAST, *TINY)
    assert result.returncode == 0, result.stderr[-3000:]
    assert list(tmp_path.glob("logs/runs/*/test/test_predictions.csv"))


def test_same_seed_same_metrics_on_cpu(tmp_path: Path) -> None:
    """Two runs with one seed: identical test predictions (augmentation and order seeded)."""
    frames = []
    for name in ("a", "b"):
        root = tmp_path / name
        result = run_train(
            root,
            "logger=none",
            "datamodule.num_workers=2",
            "trainer.limit_test_batches=3",
            *FAST,
            *TINY,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        (csv,) = root.glob("logs/runs/*/test/test_predictions.csv")
        frames.append(pd.read_csv(csv))
    pd.testing.assert_frame_equal(frames[0], frames[1])


def assert_logged_model_predicts_like_the_test(client, run: pd.Series) -> None:
    """mlflow.pyfunc loads the logged model; on the test images it gives the probabilities
    of test_predictions.csv (same weights: the best checkpoint)."""
    import mlflow

    from medclf.data.datamodule import DigitsDataModule

    mlflow.set_tracking_uri(client.tracking_uri)  # models:/ URIs are read from that store
    model = mlflow.pyfunc.load_model(run["tags.model_uri"])
    assert model.metadata.signature is not None
    datamodule = DigitsDataModule(image_size=32, seed=42)
    datamodule.setup()
    images = np.stack([datamodule.datasets["test"][i]["image"].numpy() for i in range(8)])
    probs = model.predict(images)
    frame = pd.read_csv(client.download_artifacts(run["run_id"], "test/test_predictions.csv"))
    expected = frame[[f"prob_{c}" for c in range(10)]].to_numpy()[:8]
    np.testing.assert_allclose(probs, expected, atol=1e-5)
