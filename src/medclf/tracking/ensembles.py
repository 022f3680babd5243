"""What a stacked ensemble reads of its member runs and writes into its own run: the
members' held-out and test predictions and splits (downloaded), a search's best runs, and
the ensemble run's dataset inputs (the members' own, so that medclf-compare sees one test
set) and its artifact folder."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from medclf.tracking import names


@dataclass
class MemberRun:
    """A member's MLflow run as the ensemble reads it; files are local copies (None: not
    logged). A cross-validation run brings its out-of-fold predictions and each fold's test
    predictions; a training run its test predictions only."""

    run_id: str
    name: str
    task: str | None
    output_dir: str | None
    optimized_metric: str | None
    fold_checkpoints: list[str]
    oof: Path | None = None
    tests: list[Path] = field(default_factory=list)
    splits: Path | None = None
    tested_in: str | None = None  # the run whose dataset inputs name the test split
    best: float | None = None

    @property
    def cross_validation(self) -> bool:
        return bool(self.fold_checkpoints)


def _download(client, run_id: str, artifact: str, folder: Path) -> Path | None:
    import mlflow

    folder.mkdir(parents=True, exist_ok=True)
    try:
        return Path(client.download_artifacts(run_id, artifact, str(folder)))
    except (mlflow.exceptions.MlflowException, OSError):
        return None


def member_run(tracking_uri: str, run_id: str, folder: Path) -> MemberRun:
    """Run ``run_id`` with its predictions downloaded into ``folder``; an unknown run is a
    ConfigError naming it."""
    import mlflow

    from medclf.errors import ConfigError
    from medclf.tracking.runs import _best

    client = mlflow.MlflowClient(tracking_uri)
    try:
        run = client.get_run(run_id)
    except mlflow.exceptions.MlflowException as exc:
        raise ConfigError(f"runs: no run {run_id} at {tracking_uri} ({exc}).") from None
    tags, params = run.data.tags, run.data.params
    folds = [p for p in tags.get(names.FOLD_CHECKPOINTS, "").split(";") if p]
    metric = params.get("optimized_metric")
    member = MemberRun(
        run_id,
        tags.get(names.RUN_NAME, run_id),
        tags.get(names.TASK),
        tags.get(names.OUTPUT_DIR),
        metric,
        folds,
    )
    test_file = f"{names.TEST_DIR}/{names.TEST_PREDICTIONS_FILE}"
    if not folds:
        member.tests = [p for p in [_download(client, run_id, test_file, folder / "test")] if p]
        member.splits = _download(client, run_id, names.SPLITS_FILE, folder)
        member.tested_in = run_id
        member.best = _best(client, run, metric)
        return member
    member.oof = _download(client, run_id, names.OOF_FILE, folder)
    children = client.search_runs(
        [run.info.experiment_id],
        filter_string=f"tags.`{names.PARENT_RUN}` = '{run_id}'",
    )
    children = sorted(children, key=lambda r: int(r.data.tags.get(names.CV_FOLD, "0")))
    for child in children:
        found = _download(
            client, child.info.run_id, test_file, folder / f"fold_{len(member.tests)}"
        )
        if found is not None:
            member.tests.append(found)
    if children:
        first = children[0]
        member.task = member.task or first.data.tags.get(names.TASK)
        member.splits = _download(client, first.info.run_id, names.SPLITS_FILE, folder)
        member.tested_in = first.info.run_id
        mean = run.data.metrics.get(f"{metric}_mean") if metric else None
        member.best = mean
    return member


def sweep_best_runs(tracking_uri: str, experiment: str, sweep_id: str, k: int) -> list[str]:
    """The ``k`` finished runs of a sweep (or search) with the best ``optimized_metric``."""
    import mlflow

    from medclf.search import minimizes
    from medclf.tracking.runs import _best, sweep_run_ids

    client = mlflow.MlflowClient(tracking_uri)
    scored = []
    for run_id in sweep_run_ids(tracking_uri, experiment, sweep_id):
        run = client.get_run(run_id)
        metric = run.data.params.get("optimized_metric")
        value = _best(client, run, metric)
        if value is not None:
            scored.append((value if minimizes(metric) else -value, run_id))
    return [run_id for _, run_id in sorted(scored)[:k]]


def copy_inputs(tracker, source_run: str) -> None:
    """Give the ensemble's run (``tracker``) the dataset inputs of ``source_run``: the same
    test digest as its members (medclf-compare's check)."""
    client = tracker.experiment
    run = client.get_run(source_run)
    inputs = list(run.inputs.dataset_inputs) if run.inputs else []
    if inputs:
        from medclf.tracking.datasets import log_inputs

        log_inputs(client, tracker.run_id, inputs)


def log_folder(tracker, folder: Path, artifact_path: str) -> None:
    """A folder's files as the run's artifacts under ``artifact_path``."""
    tracker.experiment.log_artifacts(tracker.run_id, str(folder), artifact_path)


def close_running_under(tracking_uri: str, experiment: str, folder: str) -> int:
    """Mark KILLED the RUNNING runs whose run directory (tag ``output_dir``) lies under
    ``folder``: left by a killed session of the command that owns ``folder``; returns how
    many."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return 0
    quoted = str(folder).replace("'", "\\'")
    runs = client.search_runs(
        [found.experiment_id],
        filter_string=f"tags.{names.OUTPUT_DIR} LIKE '{quoted}%' and attributes.status = 'RUNNING'",
    )
    for run in runs:
        client.set_terminated(run.info.run_id, "KILLED")
    return len(runs)


def attach_file(tracking_uri: str, run_id: str, path: Path) -> None:
    """Log one more file into a finished run (the AutoML report into its ensemble's run)."""
    import mlflow

    mlflow.MlflowClient(tracking_uri).log_artifact(run_id, str(path))
