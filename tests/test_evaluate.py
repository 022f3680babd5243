"""eval.py: the test report of a checkpoint on labelled data, its metrics equal to
scikit-learn's on the written predictions, logged to MLflow as a linked run or into one."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest
from conftest import CLASSES
from hydra import compose, initialize_config_dir
from test_predict import save_checkpoint

from helpers import run_command
from medclf.config import CONF_DIR
from medclf.errors import DataError
from medclf.pipeline.evaluate import evaluate


def run_eval(tmp_path, data_dir, *overrides):
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "eval",
            overrides=[
                "datamodule=folder",
                f"datamodule.data_dir={data_dir}",
                f"paths.root_dir={tmp_path}",
                f"paths.output_dir={tmp_path / 'eval'}",
                *([] if "logger=none" in overrides else [f"logger.mlflow.tracking_uri={uri}"]),
                *overrides,
            ],
        )
    return evaluate(cfg), uri


def test_report_files_and_metrics_equal_sklearn(tmp_path, image_folder) -> None:
    from sklearn.metrics import (
        accuracy_score,
        f1_score,
        precision_score,
        recall_score,
        roc_auc_score,
    )

    save_checkpoint(tmp_path / "m.ckpt", seed=3)
    metrics, uri = run_eval(tmp_path, image_folder, f"ckpt_path={tmp_path / 'm.ckpt'}", "split=all")
    test = tmp_path / "eval" / "test"
    names = {p.name for p in test.iterdir()}
    assert names == {
        "test_predictions.csv",
        "per_class_report.csv",
        "metrics.csv",
        "confusion_matrix.png",
        "roc_curves.png",
        "pr_curves.png",
        "per_class_metrics.png",
        "reliability.png",
    }
    assert (tmp_path / "eval" / "report.html").is_file()
    frame = pd.read_csv(test / "test_predictions.csv")
    assert len(frame) == 36  # split=all: every sample
    y, p = frame["label"], frame["prediction"]
    probs = frame[[f"prob_{c}" for c in CLASSES]].to_numpy()
    macro = {"average": "macro", "zero_division": 0}
    assert metrics["test/accuracy"] == pytest.approx(accuracy_score(y, p), abs=1e-6)
    assert metrics["test/f1"] == pytest.approx(f1_score(y, p, **macro), abs=1e-6)
    assert metrics["test/precision"] == pytest.approx(precision_score(y, p, **macro), abs=1e-6)
    assert metrics["test/recall"] == pytest.approx(recall_score(y, p, **macro), abs=1e-6)
    codes = pd.Categorical(y, categories=list(CLASSES)).codes
    assert metrics["test/auroc"] == pytest.approx(
        roc_auc_score(codes, probs, multi_class="ovr", average="macro"), abs=1e-4
    )
    report = pd.read_csv(test / "per_class_report.csv", index_col="class")
    assert {"sensitivity", "specificity"} <= set(report.columns)
    (run,) = mlflow.MlflowClient(uri).search_runs(
        [mlflow.MlflowClient(uri).get_experiment_by_name("medclf").experiment_id]
    )
    assert run.info.status == "FINISHED"
    assert run.data.tags["eval_checkpoint"] == str((tmp_path / "m.ckpt").resolve())
    assert run.data.metrics["test/f1"] == pytest.approx(metrics["test/f1"])
    assert f"test/specificity_{CLASSES[0]}" in run.data.metrics


def test_log_into_an_existing_run_and_test_split(tmp_path, image_folder, tiny_checkpoint) -> None:
    ckpt = tiny_checkpoint[0]
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    run_eval(tmp_path, image_folder, f"ckpt_path={ckpt}")  # creates the store
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("medclf").experiment_id
    target = client.create_run(experiment).info.run_id
    metrics, _ = run_eval(tmp_path, image_folder, f"ckpt_path={ckpt}", f"mlflow_run_id={target}")
    frame = pd.read_csv(tmp_path / "eval" / "test" / "test_predictions.csv")
    assert 0 < len(frame) < 36  # the test split only
    assert client.get_run(target).data.metrics["test/f1"] == pytest.approx(metrics["test/f1"])
    assert len(client.search_runs([experiment])) == 2


def test_classes_the_model_does_not_know(tmp_path, image_folder) -> None:
    save_checkpoint(tmp_path / "m.ckpt", class_names=["benign", "malignant", "other"])
    with pytest.raises(DataError, match="normal"):
        run_eval(tmp_path, image_folder, f"ckpt_path={tmp_path / 'm.ckpt'}", "logger=none")


def test_command_line(tmp_path, image_folder, tiny_checkpoint) -> None:
    """medclf-eval (python eval.py) as a user runs it."""
    from medclf.cli.eval import main

    done = run_command(
        main,
        [
            "medclf-eval",
            f"ckpt_path={tiny_checkpoint[0]}",
            "datamodule=folder",
            f"datamodule.data_dir={image_folder}",
            "split=all",
            "logger=none",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert np.isfinite(pd.read_csv(tmp_path / "run" / "test" / "per_class_report.csv")["f1"]).all()
