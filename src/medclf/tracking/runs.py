"""Compare an experiment's runs in the terminal (``medclf-report [EXPERIMENT]``).

One row per run (newest sweep first unless ``--sweep-id`` picks one), with the parameters
that usually differ (backbone, loss, data), the data the run saw (its dataset inputs' name
and the training split's digest), an Optuna search trial's state, and the ``test/``
metrics, best first.
"""

from __future__ import annotations

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
