"""One decision rule: a probability exactly at the threshold gets the same label from the
test report, predict.py, the MLflow model, the ONNX model, Grad-CAM's target and the logged
metrics (at or above the threshold is positive)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from helpers import tiny_module, write_checkpoint
from medclf.config import CONF_DIR
from medclf.models.metrics import summary_metrics
from medclf.models.outputs import decide, metric_threshold, predicted_labels

CLASSES = ["negative", "positive"]


def _tie_model():
    """A binary model whose output is exactly p = 0.5 for every image: its classifier's
    weights and bias are zero, so the logit is 0 and sigmoid(0) = 0.5."""
    module = tiny_module(CLASSES, task="binary", head={"activation": "sigmoid"}, threshold=0.5)
    with torch.no_grad():
        module.head.classifier.weight.zero_()
        module.head.classifier.bias.zero_()
    return module.eval()


def _folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for name in CLASSES:
        (root / name).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(
                root / name / f"{i}.png"
            )
    return root


def test_decide_at_the_threshold_for_each_task() -> None:
    probs = np.array([[0.5, 0.5], [0.7, 0.3]], dtype=np.float32)
    assert decide(probs, "binary", 0.5).tolist() == [[False, True], [True, False]]
    assert decide(probs, "multilabel", 0.5).tolist() == [[True, True], [True, False]]
    assert decide(probs, "multiclass", 0.5).tolist() == [[True, False], [True, False]]
    assert predicted_labels(probs, ["a", "b"], "multilabel", 0.5) == ["a;b", "a"]
    assert decide(torch.from_numpy(probs), "binary", 0.3).dtype == torch.bool


@pytest.mark.parametrize("threshold", [0.5, 0.3, 1.0])
def test_logged_metrics_decide_as_the_rule(threshold: float) -> None:
    """torchmetrics counts p > t as positive; medclf gives it the float32 just below t, so a
    probability equal to t counts as positive there too."""
    t = float(np.float32(threshold))
    probs = torch.tensor([t, t, 0.9, 0.1, np.nextafter(np.float32(t), np.float32(-1))])
    probs = probs.clamp(0, 1).float()
    target = torch.tensor([1, 0, 1, 0, 1])
    chosen = decide(torch.stack([1 - probs, probs], 1), "binary", threshold)[:, 1]
    metrics = summary_metrics("binary", 2, ("accuracy",), threshold=threshold)
    metrics.update(probs, target)
    expected = float((chosen.long() == target).float().mean())
    assert float(metrics.compute()["accuracy"]) == pytest.approx(expected)
    assert metric_threshold(threshold) <= threshold


def test_a_probability_at_the_threshold_gets_one_label_everywhere(tmp_path: Path) -> None:
    import mlflow
    import onnxruntime

    from medclf.inference import xai
    from medclf.inference.export import export
    from medclf.inference.predict import predict
    from medclf.pipeline.evaluate import evaluate
    from medclf.tracking.logger import MLflowRunLogger
    from medclf.tracking.model import log_model

    module = _tie_model()
    ckpt = write_checkpoint(module, tmp_path / "tie.ckpt")
    data = _folder(tmp_path / "images")
    image = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        assert (module.predict_proba(image)[:, 1] == 0.5).all()  # exactly at the threshold

    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        eval_cfg = compose(
            "eval",
            overrides=[
                f"ckpt_path={ckpt}",
                "datamodule=folder",
                f"datamodule.data_dir={data}",
                "datamodule.image_size=32",
                "split=all",
                f"paths.root_dir={tmp_path}",
                f"paths.output_dir={tmp_path / 'eval'}",
                f"logger.mlflow.tracking_uri={uri}",
            ],
        )
        predict_cfg = compose(
            "predict",
            overrides=[f"ckpt_path={ckpt}", f"input={data}", f"output={tmp_path / 'p.csv'}"],
        )
    metrics = evaluate(eval_cfg)
    report = pd.read_csv(tmp_path / "eval" / "test" / "test_predictions.csv")
    predict(predict_cfg)
    predicted = pd.read_csv(tmp_path / "p.csv")

    tracker = MLflowRunLogger(tracking_uri=uri, experiment_name="tie", run_name="tie")
    model_uri = log_model(tracker, module, image[:1])
    tracker.end_run("FINISHED")
    pyfunc = mlflow.pyfunc.load_model(model_uri)
    pyfunc_labels = pyfunc.predict(image.numpy(), params={"output": "prediction"})
    np.testing.assert_allclose(pyfunc.predict(image.numpy())[:, 1], 0.5)

    onnx_path = export(ckpt, "onnx", output=tmp_path / "tie.onnx", verify=False)
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    probs, chosen = session.run(["probabilities", "prediction"], {"image": image.numpy()})
    np.testing.assert_allclose(probs[:, 1], 0.5)

    assert set(report["prediction"]) == {"positive"}
    assert set(predicted["prediction"]) == {"positive"}
    assert set(pyfunc_labels) == {"positive"}
    assert chosen.tolist() == [[0, 1]] * 3
    assert xai.predicted_targets(module, probs, 0.5) == [1, 1, 1]
    # the logged metrics count the tie as positive too: half the images are positive
    assert metrics["test/accuracy"] == pytest.approx(0.5)
    assert metrics["test/recall"] == pytest.approx(1.0)
    probs_columns = ["prob_negative", "prob_positive"]
    assert list(report.columns) == ["sample", "label", "prediction", *probs_columns]
    assert list(predicted.columns) == ["sample", "prediction", *probs_columns]
