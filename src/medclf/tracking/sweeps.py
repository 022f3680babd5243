"""The MLflow runs of a Hydra multirun: tags that group a sweep's jobs, finding them, and the
tags an Optuna search puts on its trials' runs (medclf.search.study)."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from medclf.tracking import names

log = logging.getLogger("medclf.search")


def sweep_tags(sweep_dir: str | Path, job: int) -> dict[str, str]:
    """``sweep_id`` (shared by all jobs of the sweep), ``sweep_dir`` and ``sweep_job``."""
    sweep_dir = Path(sweep_dir).resolve()
    digest = hashlib.sha1(str(sweep_dir).encode()).hexdigest()[:8]
    return {
        names.SWEEP_ID: f"{sweep_dir.name}-{digest}",
        names.SWEEP_DIR: str(sweep_dir),
        names.SWEEP_JOB: str(job),
    }


def _quoted(value: str | Path) -> str:
    return str(value).replace("'", "\\'")


def sweep_filter(sweep_dir: str | Path) -> str:
    """MLflow filter for the runs of the multirun in ``sweep_dir`` (its ``sweep_dir`` tag)."""
    return f"tags.{names.SWEEP_DIR} = '{_quoted(sweep_dir)}'"


def _client(tracking_uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def sweep_job_runs(tracking_uri: str, experiment_name: str, sweep_dir: str, job: int) -> list:
    """The MLflow runs of job ``job`` of the multirun in ``sweep_dir`` (tags ``sweep_dir``
    and ``sweep_job`` set by train.py), newest first; an interrupted job may have several."""
    client = _client(tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return []
    return client.search_runs(
        [experiment.experiment_id],
        filter_string=f"{sweep_filter(sweep_dir)} and tags.{names.SWEEP_JOB} = '{job}'",
        order_by=["attributes.start_time DESC"],
    )


def close_interrupted_runs(
    tracking_uri: str, experiment: str, sweep_dir: str, job: int, retried_as: int | None = None
) -> None:
    """Mark the RUNNING MLflow runs of an interrupted job KILLED; ``retried_as``: the trial
    that runs its parameters again (tag ``optuna_retried_as``)."""
    client = _client(tracking_uri)
    for run in sweep_job_runs(tracking_uri, experiment, sweep_dir, job):
        if run.info.status == "RUNNING":
            if retried_as is not None:
                client.set_tag(run.info.run_id, names.OPTUNA_RETRIED_AS, str(retried_as))
            client.set_terminated(run.info.run_id, "KILLED")
            log.info("MLflow run %s of interrupted trial %d: KILLED", run.info.run_id, job)


def trial_run_id(tracking_uri: str, experiment: str, sweep_dir: str, job: int) -> str | None:
    """The id of the MLflow run of trial ``job`` (not an interrupted attempt's; a pruned
    trial's run is KILLED too, but tagged ``optuna_state=PRUNED``)."""
    runs = [
        r
        for r in sweep_job_runs(tracking_uri, experiment, sweep_dir, job)
        if r.info.status != "KILLED" or r.data.tags.get(names.OPTUNA_STATE) == "PRUNED"
    ]
    return runs[0].info.run_id if runs else None


def tag_trial(
    tracking_uri: str,
    run_id: str,
    study: str,
    number: int,
    state: str,
    retry_of: int | None = None,
) -> None:
    """``optuna_study``, ``optuna_trial`` and ``optuna_state`` on a trial's run, and
    ``optuna_retry_of`` on a retry's (the trial whose worker died)."""
    client = _client(tracking_uri)
    client.set_tag(run_id, names.OPTUNA_STUDY, study)
    client.set_tag(run_id, names.OPTUNA_TRIAL, str(number))
    client.set_tag(run_id, names.OPTUNA_STATE, state)
    if retry_of is not None:
        client.set_tag(run_id, names.OPTUNA_RETRY_OF, str(retry_of))


def tag_best(tracking_uri: str, experiment_name: str, sweep_dir: str, run_id: str) -> None:
    """``optuna_best=true`` on ``run_id`` and false on the sweep's earlier best."""
    client = _client(tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    for run in client.search_runs(
        [experiment.experiment_id],
        filter_string=f"{sweep_filter(sweep_dir)} and tags.{names.OPTUNA_BEST} = 'true'",
    ):
        if run.info.run_id != run_id:
            client.set_tag(run.info.run_id, names.OPTUNA_BEST, "false")
    client.set_tag(run_id, names.OPTUNA_BEST, "true")


def pruned_tags(epoch: int) -> dict[str, str]:
    """The tags of a trial's run that the pruner stopped after ``epoch``."""
    return {names.OPTUNA_STATE: "PRUNED", names.OPTUNA_PRUNED_EPOCH: str(epoch)}
