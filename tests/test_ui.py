"""``make ui``: an MLflow server on 127.0.0.1 and the direct link to our runs table."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from helpers import tracking_uri, ui_server
from medclf.tracking.logger import ensure_experiment

pytestmark = pytest.mark.slow


def test_ui_serves_the_store_and_prints_the_runs_link(tmp_path: Path) -> None:
    with ui_server(tmp_path) as (link, _):
        port, experiment_id = link.groups()
        assert experiment_id == ensure_experiment(tracking_uri(tmp_path), "medclf")
        url = (
            f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/get?experiment_id={experiment_id}"
        )
        with urllib.request.urlopen(url, timeout=10) as reply:
            experiment = json.load(reply)["experiment"]
        assert experiment["name"] == "medclf"
        tags = {t["key"]: t["value"] for t in experiment.get("tags", [])}
        assert tags["mlflow.experimentKind"] == "custom_model_development"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as reply:
            assert reply.status == 200
