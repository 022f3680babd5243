"""The MLflow store a run logs to: where it is (a SQLite file or a server), whether it
answers, its experiment (made if new, tagged for MLflow's runs table) and whether a run is in
it."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from medclf.tracking import names

log = logging.getLogger(__name__)

EXPERIMENT_KIND = "custom_model_development"


def ensure_experiment(tracking_uri: str, name: str, artifact_location: str | None = None) -> str:
    """Get or create the experiment, tagged so MLflow 3 opens it on the training-runs table
    (a worker that loses the race to create it takes the winner's)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        if artifact_location and "://" not in artifact_location:
            Path(artifact_location).mkdir(parents=True, exist_ok=True)
            artifact_location = Path(artifact_location).resolve().as_uri()
        try:
            return client.create_experiment(
                name,
                artifact_location=artifact_location,
                tags={names.EXPERIMENT_KIND: EXPERIMENT_KIND},
            )
        except MlflowException as exc:  # another worker created it first
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            experiment = client.get_experiment_by_name(name)
    experiment_id = experiment.experiment_id
    if experiment.tags.get(names.EXPERIMENT_KIND) != EXPERIMENT_KIND:
        client.set_experiment_tag(experiment_id, names.EXPERIMENT_KIND, EXPERIMENT_KIND)
    return experiment_id


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (None for servers and other stores)."""
    prefix = "sqlite:///"
    return Path(tracking_uri[len(prefix) :]) if tracking_uri.startswith(prefix) else None


def server_answers(tracking_uri: str, timeout: float = 5.0) -> str | None:
    """None when the MLflow server at ``tracking_uri`` answers its health check, else why not
    (one request, no retries: MLflow's client would retry for minutes)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(tracking_uri.rstrip("/") + "/health", timeout=timeout):
            return None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return str(getattr(exc, "reason", exc))


def run_exists(tracking_uri: str, run_id: str) -> bool:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        MlflowClient(tracking_uri=tracking_uri).get_run(run_id)
    except MlflowException:
        return False
    return True


def reachable_uri(tracking_uri: str, fallback: bool, offline_uri: str | None) -> str:
    """``tracking_uri`` if it is a local store or a server that answers; else the local
    ``offline_uri`` with ``fallback``, or a ConfigError naming the URI."""
    from medclf.errors import ConfigError

    if not tracking_uri.startswith(("http://", "https://")):
        return tracking_uri
    # MLflow's client retries a failed request 7 times with doubling waits (minutes); a
    # server that goes away mid-run should cost seconds per logging call, not stall training
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    why = server_answers(tracking_uri)
    if why is None:
        return tracking_uri
    if fallback and offline_uri:
        log.warning(
            "MLflow server %s does not answer (%s): logging to the local store %s instead "
            "(logger.mlflow.offline_fallback=true)",
            tracking_uri,
            why,
            offline_uri,
        )
        return offline_uri
    raise ConfigError(
        f"logger.mlflow.tracking_uri={tracking_uri}: the MLflow server does not answer "
        f"({why}). Start it (make mlflow-server), fix the URI, or set "
        "logger.mlflow.offline_fallback=true to log to the local store instead."
    )
