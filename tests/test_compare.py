"""medclf-compare end to end on the session's grid sweep (conftest.grid_sweep: four runs on
the same digits test split): the table against a recomputation from the runs' own CSVs, the
page in headless Chromium, the MLflow run that records it; runs tested on other data are
refused, naming both digests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from helpers import FAST, TINY, open_in_chromium, run_command, run_train, search_runs, tracking_uri
from medclf.evaluation.comparison import SECTIONS

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("grid_sweep")]


@pytest.fixture
def store(grid_sweep, tmp_path: Path) -> Path:
    """A root whose MLflow store is a copy of the grid sweep's (the other grid tests read
    that store as the sweep left it)."""
    import shutil

    root, _ = grid_sweep
    (tmp_path / "mlruns").mkdir()
    shutil.copy(root / "mlruns" / "mlflow.db", tmp_path / "mlruns" / "mlflow.db")
    return tmp_path


def _compare(root: Path, *args: str):
    import sys

    from medclf.cli.compare import main

    argv = ["medclf-compare", "--tracking-uri", tracking_uri(root), *args]
    return run_command(lambda: sys.exit(main()), argv)


def test_a_sweep_compared_through_the_command(store: Path, tmp_path: Path) -> None:
    from medclf.evaluation.paired import delong_test, mcnemar_test

    root = store
    runs = search_runs(root)
    finished = runs[runs["status"] == "FINISHED"]
    sweep = finished["tags.sweep_id"].iloc[0]
    out = tmp_path / "compare"
    result = _compare(root, "--sweep-id", sweep, "--output", str(out), "--bootstrap", "200")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = pd.read_csv(out / "comparison.csv")
    # the baseline: the best run by optimized_metric (val/f1), compared with the three others
    client = MlflowClient(tracking_uri(root))
    best = {
        r: max(m.value for m in client.get_metric_history(r, "val/f1")) for r in finished["run_id"]
    }
    baseline = max(best, key=best.get)
    assert table["model_a"].str.endswith(f"({baseline[:8]})").all()
    assert table["model_b"].nunique() == 3
    # DeLong and McNemar from the two runs' own prediction CSVs
    row = table[(table["metric"] == "accuracy") & (table["class"] == "all")].iloc[0]
    other = next(r for r in finished["run_id"] if row["model_b"].endswith(f"({r[:8]})"))
    frames = {}
    for run_id in (baseline, other):
        path = client.download_artifacts(run_id, "test/test_predictions.csv", str(tmp_path))
        frames[run_id] = pd.read_csv(path).sort_values("sample").reset_index(drop=True)
    a, b = frames[baseline], frames[other]
    test = mcnemar_test(a["label"] == a["prediction"], b["label"] == b["prediction"])
    assert row["p"] == pytest.approx(test.p, rel=1e-6)
    assert row["value_b"] - row["value_a"] == pytest.approx(row["difference"])
    auroc = table[(table["metric"] == "auroc") & (table["class"].astype(str) == "3")]
    truth = (a["label"].astype(str) == "3").to_numpy()
    delong = delong_test(truth, a["prob_3"], b["prob_3"])
    if len(auroc) and np.isfinite(delong.p):
        mine = auroc[auroc["model_b"] == row["model_b"]].iloc[0]
        assert mine["p"] == pytest.approx(delong.p, rel=1e-6)
    assert (table["p_holm"].dropna() >= table["p"].dropna() - 1e-12).all()
    # logged as its own run, tagged with the runs it compares
    after = search_runs(root)
    logged = after[after["tags.compared_runs"].notna()]
    assert len(logged) == 1 and logged.iloc[0]["tags.baseline_run"] == baseline
    assert set(logged.iloc[0]["tags.compared_runs"].split(";")) == set(finished["run_id"])
    shown = open_in_chromium(out / "compare.html")
    assert shown["headings"] == SECTIONS
    assert shown["images"] and all(done and width > 0 for _, done, width in shown["images"])
    assert not shown["requests"] and not shown["problems"] and shown["scripts"] == 0
    assert "Holm" in shown["body"] and "DeLong" in shown["body"]


def test_runs_on_other_test_data_are_refused(store: Path) -> None:
    """Another split (seed 7) of the same digits: another test digest; the command names both
    and compares nothing."""
    root = store
    before = search_runs(root)
    result = run_train(root, *FAST, *TINY, "seed=7", "logger.mlflow.save_model=false")
    assert result.returncode == 0, result.stderr[-3000:]
    after = search_runs(root)
    new = after[~after["run_id"].isin(before["run_id"])].iloc[0]["run_id"]
    old = before[before["status"] == "FINISHED"].iloc[0]["run_id"]
    result = _compare(root, old, new)
    assert result.returncode == 2
    assert "tested on different data: test digests" in result.stderr
    digests = []
    for run_id in (old, new):
        run = MlflowClient(tracking_uri(root)).get_run(run_id)
        (test,) = [d for d in run.inputs.dataset_inputs if d.tags[0].value == "test"]
        digests.append(test.dataset.digest)
    assert digests[0] != digests[1] and all(d in result.stderr for d in digests)
    assert len(search_runs(root)) == len(after)  # no comparison run
