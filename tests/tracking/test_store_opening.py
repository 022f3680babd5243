"""A training run's MLflow store opens in the logger's own thread while training starts
(medclf.tracking.logger.MLflowRunLogger with ``open_in_background``): the first step does
not wait for it, the run still gets everything logged before it opened, and a store that
fails to open stops the run with its error."""

from __future__ import annotations

import json
import os
import select
import threading

import mlflow

from helpers import FAST, TINY, run_train, search_runs, tracking_uri
from medclf.models.module import ClassificationModule
from medclf.tracking import logger as tracking_logger


def _signal(monkeypatch, hook_name: str) -> threading.Event:
    """An event set when the model's Lightning hook ``hook_name`` is first called."""
    called = threading.Event()
    hook = getattr(ClassificationModule, hook_name)

    def signalled(self, *args, **kwargs):
        called.set()
        return hook(self, *args, **kwargs)

    monkeypatch.setattr(ClassificationModule, hook_name, signalled)
    return called


def test_the_first_step_does_not_wait_for_the_store(tmp_path, monkeypatch) -> None:
    """The store opens only once the first training step has ended: a run that waited for
    it before training would stop here (the opening gives up after 30 s)."""
    first_step = _signal(monkeypatch, "on_train_batch_end")
    seen: list[bool] = []
    open_store = tracking_logger.MLflowRunLogger._open

    def open_after_the_first_step(self, *args, **kwargs):
        seen.append(first_step.wait(timeout=30))
        return open_store(self, *args, **kwargs)

    monkeypatch.setattr(tracking_logger.MLflowRunLogger, "_open", open_after_the_first_step)
    result = run_train(tmp_path, *FAST, *TINY, "trainer.log_every_n_steps=1")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert seen == [True]
    runs = search_runs(tmp_path)
    assert len(runs) == 1 and runs["status"].tolist() == ["FINISHED"]
    run = runs.iloc[0]
    # logged before the store was open: the params, tags, start-up metrics and first steps
    assert run["params.trainer.limit_train_batches"] == "4"
    assert run["tags.task"] == "multiclass"
    assert run["metrics.startup/total_s"] > 0
    client = mlflow.MlflowClient(tracking_uri(tmp_path))
    steps = client.get_metric_history(run["run_id"], "train/loss_step")
    assert sorted(m.step for m in steps) == [0, 1, 2, 3]
    inputs = client.get_run(run["run_id"]).inputs.dataset_inputs
    assert len(inputs) == 3
    (named,) = tmp_path.glob("logs/runs/*/mlflow_run.json")  # the run directory names it
    assert json.loads(named.read_text()) == {
        "tracking_uri": tracking_uri(tmp_path),
        "experiment_id": run["experiment_id"],
        "run_id": run["run_id"],
    }


def test_a_store_that_fails_to_open_stops_the_run_with_its_error(tmp_path, monkeypatch) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("the store's disk is gone")

    monkeypatch.setattr(tracking_logger, "ensure_experiment", broken)
    result = run_train(tmp_path, *FAST, *TINY, "trainer.log_every_n_steps=1")
    assert result.returncode != 0
    assert "the store's disk is gone" in result.stdout + result.stderr
    assert len(search_runs(tmp_path)) == 0  # no run was made, so none is left RUNNING


def test_the_store_opens_after_the_loaders_workers_start(tmp_path, monkeypatch) -> None:
    """Opening the store starts programs (MLflow runs ``uname`` and ``git``). A DataLoader
    worker forked meanwhile inherits the pipe a program's end is read from, and the opening
    waits for that worker's exit, which waits for the run: a run hung so. Here the opening
    makes such a pipe and keeps it until training has started; its end must be read at
    once, although the loaders' workers (kept between epochs) live for the whole run."""
    training = _signal(monkeypatch, "on_train_batch_start")
    ended: list[bool] = []
    open_store = tracking_logger.MLflowRunLogger._open

    def open_with_a_program(self, *args, **kwargs):
        read_end, write_end = os.pipe()  # as subprocess makes them: not inherited by exec
        training.wait(timeout=30)
        os.close(write_end)
        ended.append(bool(select.select([read_end], [], [], 0.5)[0]))  # at once, or never
        os.close(read_end)
        return open_store(self, *args, **kwargs)

    monkeypatch.setattr(tracking_logger.MLflowRunLogger, "_open", open_with_a_program)
    result = run_train(
        tmp_path,
        *FAST,
        *TINY,
        "datamodule.on_device=false",
        "datamodule.num_workers=2",
        "datamodule.persistent_workers=true",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert ended == [True]
    assert search_runs(tmp_path)["status"].tolist() == ["FINISHED"]
