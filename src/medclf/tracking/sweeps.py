"""The MLflow runs of a Hydra multirun: tags that group a sweep's jobs, and finding them."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sweep_tags(sweep_dir: str | Path, job: int) -> dict[str, str]:
    """``sweep_id`` (shared by all jobs of the sweep), ``sweep_dir`` and ``sweep_job``."""
    sweep_dir = Path(sweep_dir).resolve()
    digest = hashlib.sha1(str(sweep_dir).encode()).hexdigest()[:8]
    return {
        "sweep_id": f"{sweep_dir.name}-{digest}",
        "sweep_dir": str(sweep_dir),
        "sweep_job": str(job),
    }


def sweep_filter(sweep_dir: str | Path) -> str:
    """MLflow filter for the runs of the multirun in ``sweep_dir`` (its ``sweep_dir`` tag)."""
    quoted = str(sweep_dir).replace("'", "\\'")
    return f"tags.sweep_dir = '{quoted}'"


def sweep_job_runs(tracking_uri: str, experiment_name: str, sweep_dir: str, job: int) -> list:
    """The MLflow runs of job ``job`` of the multirun in ``sweep_dir`` (tags ``sweep_dir``
    and ``sweep_job`` set by train.py), newest first; an interrupted job may have several."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return []
    return client.search_runs(
        [experiment.experiment_id],
        filter_string=f"{sweep_filter(sweep_dir)} and tags.sweep_job = '{job}'",
        order_by=["attributes.start_time DESC"],
    )
