"""Stacked ensembles end to end on one composite run per session (``medclf-ensemble
members=[...] folds=2``: two 2-fold cross-validation runs trained by the command, then
stacked): the stack is scikit-learn's LogisticRegression fitted on the members' out-of-fold
predictions; poisoned test labels change nothing the metalearner sees; predict.py, the MLflow
model and the ONNX export give the ensemble's test probabilities; medclf-compare compares it
with its members; its run holds the full report."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import CLASSES, class_image

from helpers import FAST, run_command, seed_store, tracking_uri

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ensemble_run")]
PROBS = [f"prob_{c}" for c in CLASSES]


@pytest.fixture(scope="session")
def stacked(tmp_path_factory) -> dict:
    """The composite command, once per session: members tiny and tiny_plain, 2 folds each, on
    60 generated 24 px images, with conformal sets and the out-of-distribution gate (the
    default) fitted in each fold; the ensemble logs its MLflow model."""
    from PIL import Image

    from medclf.cli.ensemble import main

    root = tmp_path_factory.mktemp("stacked")
    rng = np.random.default_rng(0)
    data = root / "images"
    for label, name in enumerate(CLASSES):
        (data / name).mkdir(parents=True)
        for i in range(20):
            Image.fromarray(class_image(label, rng)).save(data / name / f"{name}_{i:02d}.png")
    seed_store(root)
    argv = [
        "medclf-ensemble",
        f"paths.root_dir={root}",
        "datamodule=folder",
        f"datamodule.data_dir={data}",
        "datamodule.image_size=32",
        "datamodule.batch_size=8",
        "backbone.name=tiny",
        "imports=[tiny_backbone]",
        *FAST,
        "eval.bootstrap=100",
        "model.bn_recalibration=never",  # not the subject: saves forward passes
        "conformal.alpha=0.2",
        'members=["backbone.name=tiny","backbone.name=tiny_plain"]',
        "folds=2",
        f"output_dir={root / 'ens'}",
    ]
    result = run_command(lambda: sys.exit(main()), argv)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    import json

    folder = root / "ens" / "stacked_ensemble"
    spec = json.loads((folder / "ensemble.json").read_text())
    runs = _runs(root)
    ensemble = runs[runs["tags.ensemble_members"].notna()].iloc[0]
    return {"root": root, "data": data, "folder": folder, "spec": spec, "run": ensemble}


def _runs(root: Path) -> pd.DataFrame:
    from helpers import search_runs

    return search_runs(root)


def _sorted(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"sample": str}).sort_values("sample").reset_index(drop=True)


def _member_tests(root: Path, member: int) -> pd.DataFrame:
    """A member's test probabilities: its two folds' averaged."""
    folds = [
        _sorted(root / "ens" / f"member_{member}" / f"fold_{k}" / "test" / "test_predictions.csv")
        for k in (0, 1)
    ]
    mean = folds[0].copy()
    mean[PROBS] = np.mean([f[PROBS].to_numpy() for f in folds], axis=0)
    return mean


def test_the_stack_is_logistic_regression_on_out_of_fold_predictions(stacked) -> None:
    from sklearn.linear_model import LogisticRegression

    root = stacked["root"]
    oofs = [_sorted(root / "ens" / f"member_{m}" / "oof_predictions.csv") for m in (0, 1)]
    assert list(oofs[0]["sample"]) == list(oofs[1]["sample"])  # same splits, every sample once
    X = np.concatenate([o[PROBS].to_numpy() for o in oofs], axis=1)
    y = oofs[0]["label"].map({c: i for i, c in enumerate(CLASSES)}).to_numpy()
    oracle = LogisticRegression(max_iter=1000).fit(X, y)
    tests = [_member_tests(root, m) for m in (0, 1)]
    expected = oracle.predict_proba(np.concatenate([t[PROBS].to_numpy() for t in tests], axis=1))
    got = _sorted(root / "ens" / "test" / "test_predictions.csv")
    assert list(got["sample"]) == list(tests[0]["sample"])
    assert got[PROBS].to_numpy() == pytest.approx(expected, abs=2e-6)
    # what the metalearner kept: exactly the out-of-fold rows, no test sample among them
    with np.load(stacked["folder"] / "metalearner.npz", allow_pickle=False) as stored:
        assert list(stored["samples"]) == list(oofs[0]["sample"])
        assert stored["X"] == pytest.approx(X, abs=1e-9)
    assert not set(oofs[0]["sample"]) & set(got["sample"])
    assert [m["kind"] for m in stacked["spec"]["models"]] == ["cv", "cv"]
    assert all(len(m["files"]) == 2 for m in stacked["spec"]["models"])


def test_predict_the_mlflow_model_and_the_export_give_the_test_probabilities(
    stacked, tmp_path
) -> None:
    import mlflow
    import onnxruntime
    from hydra import compose, initialize_config_dir

    from medclf.config import CONF_DIR
    from medclf.inference.export import export
    from medclf.inference.inputs import PredictDataset, input_table
    from medclf.inference.predict import load_models, predict
    from medclf.inference.stacking import load_ensemble

    root, run = stacked["root"], stacked["run"]
    expected = _sorted(root / "ens" / "test" / "test_predictions.csv")
    listed = tmp_path / "test_images.csv"  # the test split's images only
    pd.DataFrame({"path": [str(stacked["data"] / s) for s in expected["sample"]]}).to_csv(
        listed, index=False
    )
    ensemble = load_ensemble(stacked["folder"])
    first = ensemble.checkpoints()[0]  # member 0's fold 0: its gate is the ensemble's

    def predicted(source: str) -> pd.DataFrame:
        output = tmp_path / "predict.csv"
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            cfg = compose(
                "predict", [source, f"input={listed}", f"output={output}", f"paths.root_dir={root}"]
            )
        predict(cfg)
        table = pd.read_csv(output)
        table["sample"] = [str(Path(p).relative_to(stacked["data"])) for p in table["sample"]]
        return table.set_index("sample").loc[expected["sample"]]

    alone = predicted(f"ckpt_path={first}")
    assert {"set", "abstain", "ood_score", "ood"} <= set(alone.columns)  # one model: all of it
    for source in (f"ckpt_path={stacked['folder']}", f"run_id={run['run_id']}"):
        table = predicted(source)
        assert table[PROBS].to_numpy() == pytest.approx(expected[PROBS].to_numpy(), abs=1e-5)
        assert list(table["prediction"]) == list(expected["prediction"])
        # the gate judges the input (the first member's); the sets do not hold for a stack
        assert table["ood_score"].to_numpy() == pytest.approx(alone["ood_score"].to_numpy())
        assert list(table["ood"]) == list(alone["ood"])
        assert not {"set", "abstain"} & set(table.columns)
    _, spec = load_models(ensemble.checkpoints())
    rows = input_table(stacked["data"]).set_index("sample").loc[expected["sample"]].reset_index()
    dataset = PredictDataset(rows, spec)
    images = np.stack([dataset[i]["image"].numpy() for i in range(len(dataset))])
    mlflow.set_tracking_uri(tracking_uri(root))
    model = mlflow.pyfunc.load_model(run["tags.model_uri"])
    assert model.predict(images) == pytest.approx(expected[PROBS].to_numpy(), abs=1e-5)
    scores = model.predict(images, params={"output": "ood_score"})
    assert scores == pytest.approx(alone["ood_score"].to_numpy(), rel=1e-4)
    assert list(model.predict(images, params={"output": "ood"})) == list(alone["ood"])
    with pytest.raises(ValueError, match="stacked ensemble has no prediction sets"):
        model.predict(images, params={"output": "set"})
    path = export(stacked["folder"], output=str(tmp_path / "ensemble.onnx"))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    probs, chosen = session.run(None, {"image": images})
    assert probs == pytest.approx(expected[PROBS].to_numpy(), abs=1e-4)
    assert (chosen.argmax(1) == probs.argmax(1)).all()


def test_the_ensemble_run_holds_the_report_and_compares_with_its_members(stacked, tmp_path):
    from mlflow import MlflowClient

    from medclf.cli.compare import main as compare
    from medclf.tracking.datasets import run_datasets

    root, run = stacked["root"], stacked["run"]
    client = MlflowClient(tracking_uri(root))
    logged = client.get_run(run["run_id"])
    assert logged.data.tags["task"] == "multiclass"
    assert logged.data.params["stacking.metalearner"] == "logistic"
    assert {"test/f1", "test/accuracy_ci_low", "test/ece", "val/f1"} <= set(logged.data.metrics)
    names = {a.path for a in client.list_artifacts(run["run_id"])}
    assert {"report.html", "splits.csv", "stacked_ensemble", "test"} <= names
    tests = {a.path for a in client.list_artifacts(run["run_id"], "test")}
    assert {
        "test/test_predictions.csv",
        "test/members_comparison.csv",
        "test/reliability.png",
    } <= tests
    page = (root / "ens" / "report.html").read_text()
    assert all(f'id="{section}"' in page for section in ("metrics", "calibration", "threshold"))
    members = stacked["spec"]["models"]
    folds = _runs(root)
    fold = folds[folds["tags.mlflow.parentRunId"] == members[0]["run_id"]].iloc[0]
    assert run_datasets(logged)["test"] == run_datasets(client.get_run(fold["run_id"]))["test"]
    argv = [
        "medclf-compare",
        "--tracking-uri",
        tracking_uri(root),
        run["run_id"],
        fold["run_id"],
        "--output",
        str(tmp_path),
        "--bootstrap",
        "100",
    ]
    result = run_command(lambda: sys.exit(compare()), argv)
    assert result.returncode == 0, result.stderr[-2000:]
    table = pd.read_csv(tmp_path / "comparison.csv")
    assert (
        table["model_a"].str.contains(run["run_id"][:8]).any()
        or table["model_b"].str.contains(run["run_id"][:8]).any()
    )


def test_poisoned_test_labels_leave_the_metalearner_unchanged(stacked) -> None:
    """Rotate every test label the members logged; stacking them again fits the same
    metalearner on the same rows and gives the same test probabilities (only the scores,
    which read the labels, change)."""
    from hydra import compose, initialize_config_dir
    from mlflow import MlflowClient

    from medclf.config import CONF_DIR
    from medclf.pipeline.ensemble import build_ensemble

    root = stacked["root"]
    client = MlflowClient(tracking_uri(root))
    ids = [m["run_id"] for m in stacked["spec"]["models"]]
    runs = _runs(root)
    folds = runs[runs["tags.mlflow.parentRunId"].isin(ids)]["run_id"]
    files = [
        Path(client.get_run(f).info.artifact_uri.removeprefix("file://"))
        / "test"
        / "test_predictions.csv"
        for f in folds
    ]
    saved = {p: p.read_bytes() for p in files}
    try:
        for path in files:
            table = pd.read_csv(path)
            rotated = dict(zip(CLASSES, CLASSES[1:] + CLASSES[:1], strict=True))
            table["label"] = table["label"].map(rotated)
            table.to_csv(path, index=False)
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            cfg = compose(
                "ensemble",
                [
                    f"paths.root_dir={root}",
                    "eval.bootstrap=0",
                    "logger.mlflow.save_model=false",
                    "output_dir=unused",
                ],
            )
        built = build_ensemble(cfg, ids, root / "poisoned", "poisoned")
    finally:
        for path, content in saved.items():
            path.write_bytes(content)
    with (
        np.load(stacked["folder"] / "metalearner.npz", allow_pickle=False) as clean,
        np.load(built.folder / "metalearner.npz", allow_pickle=False) as poisoned,
    ):
        for key in ("X", "y", "samples", "fitted"):
            assert np.array_equal(clean[key], poisoned[key]), key
    clean = _sorted(root / "ens" / "test" / "test_predictions.csv")
    again = _sorted(root / "poisoned" / "test" / "test_predictions.csv")
    assert again[PROBS].to_numpy() == pytest.approx(clean[PROBS].to_numpy(), abs=1e-12)
    assert (again["label"] != clean["label"]).all()  # the poison reached the report


def test_ensemble_stack_needs_a_stacked_ensemble(tiny_checkpoint, tmp_path) -> None:
    from hydra import compose, initialize_config_dir

    from medclf.config import CONF_DIR
    from medclf.errors import ConfigError
    from medclf.inference.predict import predict

    ckpt, _ = tiny_checkpoint
    (tmp_path / "in").mkdir()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "predict", [f"ckpt_path={ckpt}", f"input={tmp_path / 'in'}", "ensemble=stack"]
        )
    with pytest.raises(ConfigError, match="ensemble=stack needs a stacked ensemble"):
        predict(cfg)
    shutil.rmtree(tmp_path / "in")
