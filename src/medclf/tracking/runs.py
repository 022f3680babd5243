"""Compare an experiment's runs in the terminal (``medclf-report [EXPERIMENT]``).

One row per run (newest sweep first unless ``--sweep-id`` picks one), with the parameters
that usually differ (backbone, loss, data), the data the run saw (its dataset inputs' name
and the training split's digest), an Optuna search trial's state, and the ``test/``
metrics, best first.
"""

from __future__ import annotations

import pandas as pd

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
        runs = runs[runs.get("tags.sweep_id") == sweep_id]
    table = pd.DataFrame(
        {
            "run": runs["tags.mlflow.runName"],
            "status": runs["status"],
            "sweep_id": runs.get("tags.sweep_id", pd.Series(index=runs.index, dtype=object)),
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
    if "tags.optuna_state" in runs:
        table["trial"] = runs["tags.optuna_state"]
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
