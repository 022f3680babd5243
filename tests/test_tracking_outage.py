"""An MLflow server that is down: at start the run stops before training naming the URI (or
falls back to the local store); mid-run, metrics are kept and sent when it answers again."""

from __future__ import annotations

import json
import logging

import mlflow
import pytest

from helpers import FAST, TINY, run_train, search_runs
from medclf.tracking.logger import MLflowRunLogger

DOWN = "http://127.0.0.1:9"  # the discard port: nothing listens there


@pytest.mark.slow
def test_unreachable_server_stops_before_training(tmp_path) -> None:
    result = run_train(tmp_path, f"logger.mlflow.tracking_uri={DOWN}", *FAST)
    assert result.returncode == 2
    assert f"logger.mlflow.tracking_uri={DOWN}: the MLflow server does not answer" in result.stderr
    assert "offline_fallback=true" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "logs" / "runs").exists() or not list(
        (tmp_path / "logs" / "runs").rglob("*.ckpt")
    )  # nothing trained


@pytest.mark.slow
def test_offline_fallback_logs_to_the_local_store(tmp_path) -> None:
    result = run_train(
        tmp_path,
        f"logger.mlflow.tracking_uri={DOWN}",
        "logger.mlflow.offline_fallback=true",
        "logger.mlflow.save_model=false",
        *FAST,
        *TINY,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "logging to the local store" in result.stdout + result.stderr
    assert list(search_runs(tmp_path)["status"]) == ["FINISHED"]


def test_metrics_kept_while_the_server_is_away(tmp_path, monkeypatch, caplog) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    spool = tmp_path / "run" / "mlflow_unsent.jsonl"
    logger = MLflowRunLogger(tracking_uri=uri, spool_path=str(spool))
    logger.log_metrics({"train/loss": 1.0}, step=0)
    logger.flush()
    client = logger.experiment
    real = client.log_batch

    def down(*args, **kwargs):
        raise ConnectionError("server went away")

    monkeypatch.setattr(client, "log_batch", down)
    with caplog.at_level(logging.WARNING):
        logger.log_metrics({"train/loss": 2.0}, step=1)  # no exception: training goes on
        logger.log_metrics({"train/loss": 3.0}, step=2)
        logger.flush()  # metrics are sent in the background: wait for these two
    assert "training goes on" in caplog.text and str(spool) in caplog.text
    lines = [json.loads(line) for line in spool.read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2]
    monkeypatch.setattr(client, "log_batch", real)
    logger.log_metrics({"train/loss": 4.0}, step=3)  # the server is back: all are sent
    logger.end_run("FINISHED")
    history = mlflow.MlflowClient(uri).get_metric_history(logger.run_id, "train/loss")
    assert sorted((m.step, m.value) for m in history) == [(0, 1.0), (1, 2.0), (2, 3.0), (3, 4.0)]
    assert mlflow.MlflowClient(uri).get_run(logger.run_id).info.status == "FINISHED"


def test_end_while_still_away_reports_the_spool(tmp_path, monkeypatch, caplog) -> None:
    spool = tmp_path / "unsent.jsonl"
    logger = MLflowRunLogger(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", spool_path=str(spool))
    logger.log_metrics({"val/f1": 0.5}, step=0)
    logger.flush()
    client = logger.experiment

    def down(*args, **kwargs):
        raise ConnectionError("server went away")

    monkeypatch.setattr(client, "log_batch", down)
    monkeypatch.setattr(client, "set_terminated", down)
    logger.log_metrics({"val/f1": 0.6}, step=1)
    with caplog.at_level(logging.ERROR):
        logger.end_run("FINISHED")  # no exception
    assert "1 metric record(s) were not sent" in caplog.text and str(spool) in caplog.text


def test_a_step_does_not_wait_for_the_store(tmp_path, monkeypatch) -> None:
    """log_metrics returns at once; the slow write happens in the background, in order, and
    flush (also end_run) waits for it."""
    import time

    from helpers import seed_store, tracking_uri

    seed_store(tmp_path)  # a store with its schema (no migrations: this test is about speed)
    logger = MLflowRunLogger(tracking_uri=tracking_uri(tmp_path))
    client = logger.experiment
    real = client.log_batch

    def slow(*args, **kwargs):
        time.sleep(0.3)
        return real(*args, **kwargs)

    monkeypatch.setattr(client, "log_batch", slow)
    start = time.perf_counter()
    for step in range(3):
        logger.log_metrics({"train/loss": float(step)}, step=step)
    assert time.perf_counter() - start < 0.2
    logger.end_run("FINISHED")
    history = mlflow.MlflowClient(logger.tracking_uri).get_metric_history(
        logger.run_id, "train/loss"
    )
    assert sorted((m.step, m.value) for m in history) == [(0, 0.0), (1, 1.0), (2, 2.0)]
