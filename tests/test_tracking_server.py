"""``medclf-ui`` (``make ui``, ``make mlflow-server``): an MLflow server on 127.0.0.1 over the
default store, the direct link to our runs table, and a parallel (joblib) sweep logging both
jobs to it. One server for the module: it takes 10-18 s to start."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from helpers import FAST, run_train, tracking_uri, ui_server
from medclf.tracking.store import ensure_experiment

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("mlflow_server")]


@pytest.fixture(scope="session")  # one start even if the worker runs other tests between
def server(tmp_path_factory):
    """(store root, dashboard link match, tracking URI) of a running ``medclf-ui``."""
    root = tmp_path_factory.mktemp("server")
    with ui_server(root) as (link, uri):
        yield root, link, uri


def test_ui_serves_the_store_and_prints_the_runs_link(server) -> None:
    root, link, _ = server
    port, experiment_id = link.groups()
    assert experiment_id == ensure_experiment(tracking_uri(root), "medclf")
    url = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/get?experiment_id={experiment_id}"
    with urllib.request.urlopen(url, timeout=10) as reply:
        experiment = json.load(reply)["experiment"]
    assert experiment["name"] == "medclf"
    tags = {t["key"]: t["value"] for t in experiment.get("tags", [])}
    assert tags["mlflow.experimentKind"] == "custom_model_development"
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as reply:
        assert reply.status == 200


def test_parallel_sweep_logs_to_a_tracking_server(server, tmp_path: Path) -> None:
    import mlflow

    _, _, uri = server
    result = run_train(
        tmp_path / "client",
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "backbone=resnet18,mobilenetv2",
        f"logger.mlflow.tracking_uri={uri}",
        "trainer.limit_test_batches=1",
        *FAST,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["medclf"])
    assert len(runs) == 2 and set(runs["status"]) == {"FINISHED"}
    assert set(runs["params.backbone.name"]) == {"resnet18", "mobilenetv2"}
    assert runs["tags.sweep_id"].nunique() == 1
    for key in ("test/f1", "test/accuracy", "val/f1", "train/loss_epoch"):
        assert runs[f"metrics.{key}"].notna().all(), key
    assert not (tmp_path / "client" / "mlruns" / "mlflow.db").exists()
