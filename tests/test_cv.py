"""Cross-validation: K stratified folds, each an MLflow child run; the parent holds the mean
and std of the folds' metrics; predict.py run_id=<parent> averages the fold models."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest

from helpers import FAST, TINY, run_train
from medclf.data.splits import assign_fold, assign_splits


def test_folds_partition_the_non_test_samples() -> None:
    labels = [i % 3 for i in range(60)]
    frame = pd.DataFrame({"sample": range(60), "label": labels, "split": None})
    frame = assign_splits(frame, 0.15, 0.2, seed=0)
    test = set(frame.index[frame["split"] == "test"])
    vals = []
    for fold in range(4):
        folded = assign_fold(frame, 4, fold, seed=0)
        assert set(folded.index[folded["split"] == "test"]) == test
        val = folded[folded["split"] == "val"]
        assert val["label"].value_counts().min() >= 3  # stratified: every class in every fold
        vals.append(set(val.index))
    assert set.union(*vals) == set(frame.index) - test  # every sample validated once
    assert sum(len(v) for v in vals) == len(frame) - len(test)


@pytest.mark.slow
def test_cv_parent_and_child_runs(tmp_path) -> None:
    result = run_train(tmp_path, "cv.folds=2", *TINY, *FAST)
    assert result.returncode == 0, result.stderr[-3000:]
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    experiment = client.get_experiment_by_name("medclf").experiment_id
    runs = client.search_runs([experiment])
    (parent,) = [r for r in runs if "cv_folds" in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.data.tags["cv_fold"] for r in children) == ["0", "1"]
    assert all(r.info.status == "FINISHED" for r in [parent, *children])
    f1 = np.array([r.data.metrics["test/f1"] for r in children])
    assert parent.data.metrics["test/f1_mean"] == pytest.approx(f1.mean())
    assert parent.data.metrics["test/f1_std"] == pytest.approx(f1.std())
    checkpoints = parent.data.tags["fold_checkpoints"].split(";")
    assert len(checkpoints) == 2 and all("fold_" in c for c in checkpoints)
    # out-of-fold predictions: each train/val sample once, predicted by the fold that held it out
    (run_dir,) = tmp_path.glob("logs/runs/*")
    oof = pd.read_csv(run_dir / "oof_predictions.csv", dtype={"sample": str})
    splits = pd.read_csv(run_dir / "fold_0" / "splits.csv", dtype={"sample": str})
    held = splits[splits["split"] != "test"]["sample"]
    assert sorted(oof["sample"]) == sorted(held) and set(oof["fold"]) == {0, 1}
    for fold in (0, 1):
        own = pd.read_csv(run_dir / f"fold_{fold}" / "splits.csv", dtype={"sample": str})
        val = set(own.loc[own["split"] == "val", "sample"])
        assert set(oof.loc[oof["fold"] == fold, "sample"]) == val
    assert "oof_predictions.csv" in {a.path for a in client.list_artifacts(parent.info.run_id)}

    from hydra import compose, initialize_config_dir

    from medclf.config import CONF_DIR
    from medclf.inference.predict import predict

    images = tmp_path / "new"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        np.save(images / f"x{i}.npy", rng.random((8, 8, 1), dtype=np.float32))
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "predict",
            overrides=[
                f"run_id={parent.info.run_id}",
                f"paths.root_dir={tmp_path}",
                f"input={images}",
                f"output={tmp_path / 'p.csv'}",
            ],
        )
    predict(cfg)
    table = pd.read_csv(tmp_path / "p.csv")
    probs = [c for c in table.columns if c.startswith("prob_")]
    assert len(table) == 3 and np.allclose(table[probs].sum(1), 1.0, atol=1e-5)
