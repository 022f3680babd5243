"""One inference path: on the session's trained digits model (the digits_run fixture), eval,
predict, the MLflow model, the ONNX and TorchScript exports and Grad-CAM all reproduce the
probabilities and predictions of the training run's own test report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir

from helpers import tracking_uri
from medclf.config import CONF_DIR

PROBS = [f"prob_{c}" for c in range(10)]
pytestmark = pytest.mark.xdist_group("digits_run")  # one worker trains the session's run


@pytest.fixture(scope="module")
def trained(digits_run):
    """(best checkpoint, the run's test report, the test images as the model takes them)."""
    from medclf.data.datamodule import DigitsDataModule

    root, run, run_dir, _ = digits_run
    (checkpoint,) = run_dir.glob("checkpoints/epoch_*.ckpt")
    report = pd.read_csv(run_dir / "test" / "test_predictions.csv", dtype={"prediction": str})
    datamodule = DigitsDataModule(image_size=32, seed=42)
    datamodule.setup()
    test = datamodule.datasets["test"]
    images = torch.stack([test[i]["image"] for i in range(len(test))])
    assert list(datamodule.split_frame("test")["sample"]) == list(report["sample"])
    raw = datamodule.table.arrays[datamodule.split_frame("test")["path"].to_numpy()]
    return checkpoint, report, images, raw


def test_eval_reproduces_the_training_runs_test_report(trained, tmp_path: Path) -> None:
    from medclf.pipeline.evaluate import evaluate

    checkpoint, report, _, _ = trained
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "eval",
            overrides=[
                f"ckpt_path={checkpoint}",
                "datamodule.image_size=32",
                "split=test",
                "logger=none",
                f"paths.root_dir={tmp_path}",
                f"paths.output_dir={tmp_path / 'eval'}",
            ],
        )
    evaluate(cfg)
    again = pd.read_csv(tmp_path / "eval" / "test" / "test_predictions.csv", dtype=str)
    assert list(again["sample"]) == list(report["sample"])
    assert list(again["prediction"]) == list(report["prediction"])
    np.testing.assert_allclose(again[PROBS].astype(float), report[PROBS], atol=1e-6)


def test_a_training_runs_id_names_its_best_checkpoint(digits_run, trained) -> None:
    """``run_id=`` (predict.py, medclf-label) of a training run: its best checkpoint."""
    from medclf.errors import ConfigError
    from medclf.inference.predict import checkpoint_paths

    root, run, _, _ = digits_run
    assert checkpoint_paths(None, run["run_id"], tracking_uri(root)) == [str(trained[0])]
    with pytest.raises(ConfigError, match="no such run"):
        checkpoint_paths(None, "0" * 32, tracking_uri(root))


def test_predict_on_the_image_files_gives_the_reports_probabilities(trained, tmp_path) -> None:
    from medclf.inference.predict import predict

    checkpoint, report, _, raw = trained
    folder = tmp_path / "images"
    folder.mkdir()
    for sample, image in zip(report["sample"], raw, strict=True):
        np.save(folder / f"{sample}.npy", image.astype(np.float32))
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "predict",
            overrides=[
                f"ckpt_path={checkpoint}",
                f"input={folder}",
                f"output={tmp_path / 'p.csv'}",
            ],
        )
    predict(cfg)
    predicted = pd.read_csv(tmp_path / "p.csv", dtype={"prediction": str})
    assert list(predicted["sample"]) == [f"{s}.npy" for s in report["sample"]]
    assert list(predicted["prediction"]) == list(report["prediction"])
    np.testing.assert_allclose(predicted[PROBS], report[PROBS], atol=1e-5)


def test_the_mlflow_model_gives_the_reports_probabilities_and_labels(digits_run, trained):
    import mlflow

    root, run, _, _ = digits_run
    _, report, images, _ = trained
    mlflow.set_tracking_uri(tracking_uri(root))  # models:/ URIs are read from that store
    model = mlflow.pyfunc.load_model(run["tags.model_uri"])
    probs = model.predict(images[:40].numpy())
    np.testing.assert_allclose(probs, report[PROBS].to_numpy()[:40], atol=1e-5)
    labels = model.predict(images[:40].numpy(), params={"output": "prediction"})
    assert list(labels) == list(report["prediction"][:40])


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_exported_models_give_the_reports_probabilities(trained, tmp_path, fmt: str) -> None:
    from medclf.inference.export import export

    checkpoint, report, images, _ = trained
    path = export(checkpoint, fmt, output=tmp_path / f"model.{fmt}", verify=False)
    x = images[:40]
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        probs, chosen = session.run(None, {"image": x.numpy()})
    else:
        loaded = torch.jit.load(str(path))
        with torch.no_grad():
            probs, chosen = loaded(x).numpy(), loaded.prediction(x).numpy()
    np.testing.assert_allclose(probs, report[PROBS].to_numpy()[:40], atol=1e-4)
    assert [str(i) for i in chosen.argmax(1)] == list(report["prediction"][:40])


def test_gradcam_explains_the_predicted_class(trained) -> None:
    from medclf.inference import xai
    from medclf.models.checkpoint import load_module

    checkpoint, report, images, _ = trained
    module = load_module(checkpoint)
    probs = report[PROBS].to_numpy()[:4]
    targets = xai.predicted_targets(module, probs, 0.5)
    assert [str(t) for t in targets] == list(report["prediction"][:4])
    maps = xai.heatmaps(module, images[:4], targets=targets)
    assert maps.shape == (4, 32, 32) and maps.min() >= 0 and maps.max() <= 1
