"""Compare an experiment's runs in the terminal (``medclf-report [EXPERIMENT]``).

One row per run (newest sweep first unless ``--sweep-id`` picks one), with the parameters
that usually differ (backbone, loss, data), the data the run saw (its dataset inputs' name
and the training split's digest), an Optuna search trial's state, and the ``test/``
metrics, best first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from medclf.tracking import names


def run_tags(tracking_uri: str, run_id: str) -> dict[str, str] | str:
    """The tags of MLflow run ``run_id``, or why it cannot be read (a message)."""
    import mlflow

    try:
        return dict(mlflow.MlflowClient(tracking_uri).get_run(run_id).data.tags)
    except mlflow.exceptions.MlflowException as exc:
        return str(exc)


def trained_checkpoints(tags: dict[str, str]) -> tuple[list[str], str | None]:
    """From a training run's tags: its cross-validation folds' best checkpoints (a CV parent
    run; else empty) and its run directory (None if not tagged)."""
    folds = tags.get(names.FOLD_CHECKPOINTS)
    return (folds.split(";") if folds else []), tags.get(names.OUTPUT_DIR)


PARAMS = ("backbone.name", "loss.name", "datamodule._target_", "optimizer.lr")
METRICS = ("test/accuracy", "test/precision", "test/recall", "test/f1", "test/auroc")


def runs_table(
    tracking_uri: str, experiment: str, sweep_id: str | None = None, metric: str = "test/f1"
) -> pd.DataFrame:
    """The comparison table: run name, status, key params, test metrics; best ``metric`` first."""
    import mlflow

    from medclf.tracking.datasets import run_datasets

    client = mlflow.MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise SystemExit(f"error: no experiment {experiment!r} at {tracking_uri}")
    mlflow.set_tracking_uri(tracking_uri)
    runs = mlflow.search_runs(experiment_names=[experiment])
    if runs.empty:
        return runs
    if sweep_id:
        runs = runs[runs.get(f"tags.{names.SWEEP_ID}") == sweep_id]
    table = pd.DataFrame(
        {
            "run": runs[f"tags.{names.RUN_NAME}"],
            "status": runs["status"],
            "sweep_id": runs.get(
                f"tags.{names.SWEEP_ID}", pd.Series(index=runs.index, dtype=object)
            ),
        }
    )
    for name in PARAMS:
        column = runs.get(f"params.{name}")
        if column is not None:
            table[name.split(".")[0] if name != "optimizer.lr" else "lr"] = column
    if "datamodule" in table:
        table["datamodule"] = table["datamodule"].str.rsplit(".", n=1).str[-1]
    seen = {
        run.info.run_id: run_datasets(run).get("train")
        for run in client.search_runs([found.experiment_id], max_results=50_000)
    }
    table["data"] = [f"{seen[r][0]}@{seen[r][1]}" if seen.get(r) else "" for r in runs["run_id"]]
    if f"tags.{names.OPTUNA_STATE}" in runs:
        table["trial"] = runs[f"tags.{names.OPTUNA_STATE}"]
    for name in METRICS:
        column = runs.get(f"metrics.{name}")
        if column is not None:
            table[name] = column
    key = metric if metric in table else None
    return table.sort_values(key, ascending=False, na_position="last") if key else table


def print_table(table: pd.DataFrame, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    view = Table(title=title)
    for column in table.columns:
        view.add_column(column, justify="right" if column.startswith("test/") else "left")
    for _, row in table.iterrows():
        view.add_row(
            *(
                f"{v:.4f}"
                if isinstance(v, float) and not pd.isna(v)
                else ("" if pd.isna(v) else str(v))
                for v in row
            )
        )
    Console(width=200).print(view)


@dataclass
class RunRecord:
    """What a comparison needs of one training run: its name, task, test data digest,
    best ``optimized_metric`` value, and its test predictions and splits (local copies)."""

    run_id: str
    name: str
    experiment_id: str
    task: str | None
    test_digest: str | None
    optimized_metric: str | None
    best: float | None
    predictions: Path | None
    splits: Path | None


def _best(client, run, metric: str | None) -> float | None:
    """The best value ``metric`` took over the run's history (a loss: the smallest)."""
    from medclf.search import minimizes

    if not metric:
        return None
    history = [m.value for m in client.get_metric_history(run.info.run_id, metric)]
    history = [v for v in history if v == v]  # not NaN
    if not history:
        return None
    return min(history) if minimizes(metric) else max(history)


def run_records(tracking_uri: str, run_ids: list[str], folder: Path) -> list[RunRecord]:
    """The runs ``run_ids`` with their test predictions and splits downloaded into
    ``folder``; an unknown run is a ConfigError naming it."""
    import mlflow

    from medclf.errors import ConfigError
    from medclf.tracking.datasets import run_datasets

    client = mlflow.MlflowClient(tracking_uri)
    records = []
    for run_id in run_ids:
        try:
            run = client.get_run(run_id)
        except mlflow.exceptions.MlflowException as exc:
            raise ConfigError(f"run {run_id}: no such run at {tracking_uri} ({exc}).") from None
        tags, params = run.data.tags, run.data.params
        target = folder / run_id
        target.mkdir(parents=True, exist_ok=True)
        files = {}
        for key, artifact in (
            ("predictions", f"{names.TEST_DIR}/{names.TEST_PREDICTIONS_FILE}"),
            ("splits", names.SPLITS_FILE),
        ):
            try:
                files[key] = Path(client.download_artifacts(run_id, artifact, str(target)))
            except (mlflow.exceptions.MlflowException, OSError):
                files[key] = None
        test = run_datasets(run).get("test")
        metric = params.get("optimized_metric")
        records.append(
            RunRecord(
                run_id=run_id,
                name=tags.get(names.RUN_NAME, run_id),
                experiment_id=run.info.experiment_id,
                task=tags.get(names.TASK),
                test_digest=test[1] if test else None,
                optimized_metric=metric,
                best=_best(client, run, metric),
                predictions=files["predictions"],
                splits=files["splits"],
            )
        )
    return records


def download_artifact(tracking_uri: str, run_id: str, path: str, folder: Path) -> Path | None:
    """A local copy of artifact ``path`` of run ``run_id`` (in ``folder``), None when the run
    or the artifact does not exist."""
    import mlflow

    try:
        return Path(mlflow.MlflowClient(tracking_uri).download_artifacts(run_id, path, str(folder)))
    except (mlflow.exceptions.MlflowException, OSError):
        return None


def run_ids(tracking_uri: str, experiment: str, refs: list[str]) -> list[str]:
    """Each of ``refs`` as a run id: a run id of the store as it is, else a run name of
    ``experiment``, standing for its newest FINISHED run of that name. A name with no such
    run is a ConfigError listing the names there are."""
    import mlflow

    from medclf.errors import ConfigError, did_you_mean

    client = mlflow.MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    ids = []
    for ref in refs:
        try:
            ids.append(client.get_run(ref).info.run_id)
            continue
        except mlflow.exceptions.MlflowException:
            pass
        runs = []
        if found is not None:
            quoted = str(ref).replace("'", "\\'")
            finished = f"attributes.run_name = '{quoted}' and attributes.status = 'FINISHED'"
            runs = client.search_runs(
                [found.experiment_id],
                filter_string=finished,
                order_by=["attributes.start_time DESC"],
                max_results=1,
            )
        if not runs:
            names = set()
            if found is not None:
                names = {r.info.run_name for r in client.search_runs([found.experiment_id])}
            raise ConfigError(
                f"run {ref!r}: neither a run id nor the name of a finished run of experiment "
                f"{experiment!r} at {tracking_uri}.{did_you_mean(ref, names)} Give run ids "
                "(medclf-report lists them) or run names (logger.mlflow.run_name=NAME when "
                "training), and --experiment for another experiment."
            )
        ids.append(runs[0].info.run_id)
    return ids


def sweep_run_ids(tracking_uri: str, experiment: str, sweep_id: str) -> list[str]:
    """The FINISHED runs of a sweep (tag ``sweep_id``), oldest first."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    runs = client.search_runs(
        [found.experiment_id],
        filter_string=f"tags.{names.SWEEP_ID} = '{sweep_id}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time ASC"],
    )
    return [run.info.run_id for run in runs]


def log_files_run(
    tracking_uri: str,
    experiment_id: str,
    name: str,
    tags: dict[str, str],
    files: list[Path],
    folder: str,
) -> str:
    """A run of its own holding a comparison's or an audit's files (in artifact ``folder``),
    with ``tags`` naming what it looked at; returns its id."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    run = client.create_run(experiment_id, run_name=name, tags=tags)
    try:
        for path in files:
            client.log_artifact(run.info.run_id, str(path), folder)
    except Exception:
        client.set_terminated(run.info.run_id, "FAILED")
        raise
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


def run_by_output_dir(tracking_uri: str, experiment: str, output_dir: str) -> str | None:
    """The newest run of ``experiment`` whose run directory (tag ``output_dir``) is
    ``output_dir``: a cross-validation run's parent, a training run."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None
    quoted = str(output_dir).replace("'", "\\'")
    runs = client.search_runs(
        [found.experiment_id],
        filter_string=f"tags.{names.OUTPUT_DIR} = '{quoted}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0].info.run_id if runs else None
