"""medclf-compare's runs named by id or by name (medclf.tracking.runs.run_ids): a name is its
experiment's newest finished run of that name; an unknown name is a ConfigError."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from helpers import seed_store, tracking_uri
from medclf.errors import ConfigError
from medclf.tracking.runs import run_ids


def test_names_become_the_newest_finished_run(tmp_path: Path) -> None:
    seed_store(tmp_path)
    uri = tracking_uri(tmp_path)
    client = MlflowClient(uri)
    experiment = client.create_experiment("medclf", artifact_location=str(tmp_path / "art"))

    def run(name: str, status: str) -> str:
        created = client.create_run(experiment, run_name=name)
        if status != "RUNNING":
            client.set_terminated(created.info.run_id, status)
        time.sleep(0.01)  # distinct start times
        return created.info.run_id

    old, new = run("resnet18", "FINISHED"), run("resnet18", "FINISHED")
    run("resnet18", "FAILED")  # newer, but not finished
    running = run("densenet121", "RUNNING")
    assert run_ids(uri, "medclf", ["resnet18", running]) == [new, running]
    assert old != new
    with pytest.raises(ConfigError, match="Did you mean: densenet121"):
        run_ids(uri, "medclf", ["densenet12"])  # only a RUNNING run has the name
    with pytest.raises(ConfigError, match="experiment 'other'"):
        run_ids(uri, "other", ["resnet18"])
