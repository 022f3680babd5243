"""A study's run end to end (trained once for the module, in this process): 40 patients with
3 images each, grouped by patient, a binary task with a temperature and a Youden threshold
fitted on validation, subgroups and patient-level metrics. Every number the report shows is
checked against an independent computation (scikit-learn on the run's own CSVs)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import class_image

from helpers import run_train, search_runs, tracking_uri

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("study_run")]
PATIENTS = 40
CLASSES = ("benign", "malignant")
PROBS = [f"prob_{c}" for c in CLASSES]


def _write_patients(root: Path) -> Path:
    """labels.csv: image, label, patient_id, sex, age; a patient's images share its class."""
    from PIL import Image

    rng = np.random.default_rng(3)
    (root / "img").mkdir(parents=True)
    rows = []
    for p in range(PATIENTS):
        label = p % 2
        for k in range(3):
            name = f"img/P{p:02d}_{k}.png"
            image = class_image(1 - label if p % 5 == 0 else label, rng)  # label noise
            image = np.clip(image.astype(int) + rng.integers(-40, 40, image.shape), 0, 255)
            Image.fromarray(image.astype(np.uint8)).save(root / name)
            sex = "F" if (p // 2) % 2 else "M"
            rows.append((name, CLASSES[label], f"P{p:02d}", sex, 20 + 2 * p))
    path = root / "labels.csv"
    pd.DataFrame(rows, columns=["image", "label", "patient_id", "sex", "age"]).to_csv(
        path, index=False
    )
    return path


@pytest.fixture(scope="session")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    csv = _write_patients(root / "data")
    result = run_train(
        root,
        "datamodule=csv",
        f"datamodule.csv_path={csv}",
        "datamodule.group_column=patient_id",
        "datamodule.image_size=32",
        "datamodule.batch_size=8",
        "datamodule.num_workers=0",
        "datamodule.val_fraction=0.25",
        "datamodule.test_fraction=0.25",
        "head.n_outputs=1",
        "calibration=temperature",
        "threshold=youden",
        "eval.bootstrap=200",
        "eval.subgroups=[sex,age]",
        "eval.bins=[0,50,100]",
        "eval.aggregate=mean",
        "conformal.alpha=0.2",
        "logger.mlflow.save_model=true",
        "trainer.max_epochs=3",  # a model with some signal to calibrate (7 batches an epoch)
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (run,) = [r for _, r in search_runs(root).iterrows()]
    (run_dir,) = root.glob("logs/runs/*")
    (checkpoint,) = run_dir.glob("checkpoints/epoch_*.ckpt")
    report = pd.read_csv(run_dir / "test" / "test_predictions.csv")
    return {
        "root": root,
        "csv": csv,
        "run": run,
        "run_dir": run_dir,
        "checkpoint": checkpoint,
        "report": report,
        "splits": pd.read_csv(run_dir / "splits.csv"),
        "result": result,
    }


def _datamodule(study):
    from medclf.data.datamodule import CsvDataModule

    datamodule = CsvDataModule(
        csv_path=study["csv"],
        group_column="patient_id",
        image_size=32,
        batch_size=8,
        val_fraction=0.25,
        test_fraction=0.25,
        seed=42,
    )
    datamodule.setup()
    return datamodule


def test_splits_keep_patients_whole_and_are_logged(study) -> None:
    splits, run = study["splits"], study["run"]
    assert list(splits.columns) == ["sample", "split", "group", "label"]
    assert (splits.groupby("group")["split"].nunique() == 1).all()
    for split in ("train", "val", "test"):
        part = splits[splits["split"] == split]
        assert int(run[f"params.data.{split}.samples"]) == len(part)
        assert int(run[f"params.data.{split}.groups"]) == part["group"].nunique()
        for name in CLASSES:
            assert int(run[f"params.data.{split}.class.{name}"]) == (part["label"] == name).sum()
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri(study["root"]))
    paths = {a.path for a in client.list_artifacts(run["run_id"])}
    assert {"splits.csv", "report.html"} <= paths


def test_youden_threshold_is_chosen_on_validation_and_used_on_test(study) -> None:
    from sklearn.metrics import roc_curve

    from medclf.models.checkpoint import load_module
    from medclf.pipeline.posthoc import validation_logits

    module = load_module(study["checkpoint"])
    (threshold,) = [module.threshold] if isinstance(module.threshold, float) else module.threshold
    assert study["run"]["params.fitted.threshold"].strip("[]") == str(threshold)
    logits, targets = validation_logits(module, _datamodule(study))
    scores = module.probabilities(logits)[:, 1].numpy()
    fpr, tpr, cuts = roc_curve(targets.numpy(), scores)
    # the rule's spec: the threshold attains the largest TPR - FPR (scikit-learn's curve);
    # several thresholds may attain it (medclf takes the largest), so J is compared
    positive, calls = targets.numpy() == 1, scores >= np.float32(threshold)
    youden = calls[positive].mean() - calls[~positive].mean()
    assert youden == pytest.approx(float(np.max(tpr - fpr)), abs=1e-12)
    report = study["report"]
    positive = report["prob_malignant"].to_numpy(np.float32) >= np.float32(threshold)
    assert ((report["prediction"] == "malignant") == positive).all()


def test_temperature_recovers_a_scale_of_three_and_changes_no_ranking(study) -> None:
    """The run's temperature is the NLL optimum on validation; its calibrated logits times 3
    (an over-confident model) fit a temperature of 3; calibrating lowers ECE; accuracy and
    AUROC stay the same (binary: exactly). One patient in five is labelled against its
    images, so no model separates the classes and the temperature has a finite optimum."""
    from sklearn.metrics import accuracy_score, roc_auc_score

    from medclf.evaluation.calibration import expected_calibration_error, fit_temperature
    from medclf.models.checkpoint import load_module
    from medclf.pipeline.posthoc import validation_logits

    module = load_module(study["checkpoint"])
    assert module.temperature != 1.0
    logits, targets = validation_logits(module, _datamodule(study))
    base = fit_temperature(logits, targets, "binary")
    assert base == pytest.approx(module.temperature, rel=1e-4)
    over = 3 * logits / base  # the calibrated logits, made over-confident
    fitted = fit_temperature(over, targets, "binary")
    assert fitted == pytest.approx(3.0, rel=0.10)
    y = targets.numpy()
    raw = torch.sigmoid(over)[:, 0].numpy()
    calibrated = torch.sigmoid(over / fitted)[:, 0].numpy()

    def ece(p):
        return expected_calibration_error(np.stack([1 - p, p], 1), y, "binary")

    assert ece(calibrated) < ece(raw)
    assert accuracy_score(y, raw >= 0.5) == accuracy_score(y, calibrated >= 0.5)
    assert roc_auc_score(y, raw) == roc_auc_score(y, calibrated)
    assert accuracy_score(y, raw >= 0.5) == accuracy_score(y, calibrated >= 0.5)
    assert roc_auc_score(y, raw) == roc_auc_score(y, calibrated)


def test_every_inference_path_gives_the_calibrated_probabilities(study, tmp_path) -> None:
    import mlflow
    import onnxruntime
    from hydra import compose, initialize_config_dir

    from medclf.config import CONF_DIR
    from medclf.inference.export import export
    from medclf.inference.predict import predict

    report = study["report"]
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "predict",
            overrides=[
                f"ckpt_path={study['checkpoint']}",
                f"input={study['csv'].parent / 'img'}",
                f"output={tmp_path / 'p.csv'}",
            ],
        )
    predict(cfg)
    predicted = pd.read_csv(tmp_path / "p.csv").set_index("sample")
    names = report["sample"].str.replace("img/", "", regex=False)
    np.testing.assert_allclose(predicted.loc[names, PROBS], report[PROBS], atol=1e-5)
    assert list(predicted.loc[names, "prediction"]) == list(report["prediction"])
    # the conformal prediction sets: predict.py's equal the test report's
    for column in ("set", "abstain"):
        assert list(predicted.loc[names, column].fillna("")) == list(report[column].fillna(""))

    datamodule = _datamodule(study)
    test = datamodule.datasets["test"]
    images = torch.stack([test[i]["image"] for i in range(len(test))])
    mlflow.set_tracking_uri(tracking_uri(study["root"]))
    model = mlflow.pyfunc.load_model(study["run"]["tags.model_uri"])
    np.testing.assert_allclose(model.predict(images.numpy()), report[PROBS], atol=1e-5)
    labels = model.predict(images.numpy(), params={"output": "prediction"})
    assert list(labels) == list(report["prediction"])
    sets = model.predict(images.numpy(), params={"output": "set"})
    assert list(sets) == list(report["set"].fillna(""))

    path = export(study["checkpoint"], "onnx", output=tmp_path / "m.onnx", verify=False)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    probs, chosen = session.run(None, {"image": images.numpy()})
    np.testing.assert_allclose(probs, report[PROBS], atol=1e-4)
    assert [CLASSES[i] for i in chosen.argmax(1)] == list(report["prediction"])


def test_intervals_calibration_and_summary_are_logged(study) -> None:
    run, output = study["run"], study["result"].stdout + study["result"].stderr
    for name in ("accuracy", "f1", "auroc", "sensitivity_malignant", "specificity_benign"):
        low, high = run[f"metrics.test/{name}_ci_low"], run[f"metrics.test/{name}_ci_high"]
        assert low <= run[f"metrics.test/{name}"] <= high, name
    assert run["metrics.test/ece"] >= 0 and "metrics.test/ece_uncalibrated" in run.index
    table = pd.read_csv(study["run_dir"] / "test" / "metrics.csv").set_index("metric")
    assert table.loc["f1", "value"] == pytest.approx(run["metrics.test/f1"], abs=1e-6)
    assert set(table["interval"]) <= {"bootstrap", "clopper-pearson", "wilson", "too small", "none"}
    assert re.search(r"test/f1=\d\.\d{4} \[\d\.\d{4}, \d\.\d{4}\]", output), output[-2000:]
    assert re.search(r"calibration: temperature \d+\.\d{3}, test ECE", output)
    note = run["tags.mlflow.note.content"]
    assert "f1" in note and "[" in note and "medclf-train" in note


def test_subgroup_and_patient_metrics_equal_sklearn(study) -> None:
    from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

    run_dir, report, run = study["run_dir"], study["report"], study["run"]
    table = pd.read_csv(study["csv"]).set_index("image").loc[report["sample"]]
    threshold = float(run["params.fitted.threshold"].strip("[]"))
    y = (report["label"] == "malignant").to_numpy()
    p = report["prob_malignant"].to_numpy()
    pred = (report["prediction"] == "malignant").to_numpy()
    subgroups = pd.read_csv(run_dir / "test" / "subgroups.csv")
    masks = {
        ("sex", "F"): table["sex"].to_numpy() == "F",
        ("sex", "M"): table["sex"].to_numpy() == "M",
        ("age", "[0, 50)"): table["age"].to_numpy() < 50,
        ("age", "[50, 100]"): table["age"].to_numpy() >= 50,
    }
    for (column, value), mask in masks.items():  # subgroups.csv holds 6 decimals
        row = subgroups[(subgroups["column"] == column) & (subgroups["subgroup"] == value)]
        assert int(row["n"].iloc[0]) == mask.sum()
        assert row["accuracy"].iloc[0] == pytest.approx(
            accuracy_score(y[mask], pred[mask]), abs=1e-6
        )
        assert row["f1"].iloc[0] == pytest.approx(
            f1_score(y[mask], pred[mask], zero_division=0), abs=1e-6
        )
        if len(set(y[mask])) == 2:
            assert row["auroc"].iloc[0] == pytest.approx(roc_auc_score(y[mask], p[mask]), abs=1e-6)
    assert (run_dir / "test" / "subgroups_forest.png").stat().st_size > 0

    patients = report.assign(patient=table["patient_id"].to_numpy(), y=y)
    pooled = patients.groupby("patient").agg(p=("prob_malignant", "mean"), y=("y", "max"))
    decided = pooled["p"].to_numpy(np.float32) >= np.float32(threshold)
    assert run["metrics.test_patient/accuracy"] == pytest.approx(
        accuracy_score(pooled["y"], decided)
    )
    assert run["metrics.test_patient/auroc"] == pytest.approx(
        roc_auc_score(pooled["y"], pooled["p"])
    )


def test_report_html_holds_every_section(study) -> None:
    from medclf.evaluation.report_data import SECTIONS

    html = (study["run_dir"] / "report.html").read_text()
    for section in SECTIONS:
        assert f'id="{section}"' in html, section
    assert html.count("data:image/png;base64,") >= 5
    assert "medclf-train" in html and "patient_id" in html
    assert "http://" not in html.replace("http://www.w3.org", "")


def test_prediction_sets_cover_as_reported_and_decision_curves_are_net_benefit(study) -> None:
    """conformal.alpha=0.2: each test image's set and abstain flag, their coverage table and
    metrics recomputed from test_predictions.csv; the binary model's decision curve is
    TP/n - FP/n * pt/(1 - pt) of its own probabilities; calibration slope and intercept."""
    report, run, run_dir = study["report"], study["run"], study["run_dir"]
    sets = report["set"].fillna("").str.split(";")
    held = np.array([label in s for label, s in zip(report["label"], sets, strict=True)])
    sizes = np.array([len([c for c in s if c]) for s in sets])
    assert list(report["abstain"]) == list(sizes != 1)
    table = pd.read_csv(run_dir / "test" / "conformal_sets.csv")
    overall = table.set_index("class").loc["all"]
    assert overall["coverage"] == pytest.approx(held.mean())
    assert overall["mean_size"] == pytest.approx(sizes.mean())
    assert run["metrics.test/conformal_coverage"] == pytest.approx(held.mean())
    assert run["metrics.test/conformal_abstain"] == pytest.approx((sizes != 1).mean())
    assert {"params.fitted.conformal_alpha", "params.fitted.conformal_score"} <= set(run.index)
    curve = pd.read_csv(run_dir / "test" / "decision_curve.csv")
    truth = (report["label"] == "malignant").to_numpy()
    n = len(truth)
    for pt in (0.1, 0.3, 0.5):
        treated = report["prob_malignant"].to_numpy() >= pt
        expected = (treated & truth).sum() / n - (treated & ~truth).sum() / n * pt / (1 - pt)
        row = curve[np.isclose(curve["threshold"], pt)].iloc[0]
        assert row["model"] == pytest.approx(expected, abs=1e-9)
        assert row["treat_all"] == pytest.approx(truth.mean() - (1 - truth.mean()) * pt / (1 - pt))
    assert (run_dir / "test" / "decision_curve.png").stat().st_size > 0
    assert np.isfinite(run["metrics.test/calibration_slope"])
    html = (run_dir / "report.html").read_text()
    assert "Net benefit" in html and "Split-conformal sets" in html
