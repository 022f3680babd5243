"""What a training run records in its MLflow run, start to end: the config as params, the
splits (counts as params, ``splits.csv``, the dataset inputs), the run's tags, the start-up's
phases, the pruned state of a search trial, and after the test the config, the best
checkpoint and the model. Names come from medclf.tracking.names."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from medclf.tracking import names
from medclf.tracking.logger import flatten, mlflow_key


def split_params(counts: Any) -> dict[str, int]:
    """``data.<split>.samples``, ``data.<split>.groups`` (with groups) and
    ``data.<split>.class.<name>`` from the datamodule's split counts."""
    params = {}
    for row in counts.to_dict("records"):
        split = row.pop("split")
        for key, value in row.items():
            if key == "groups" and value != value:  # NaN: no groups
                continue
            name = key if key in ("samples", "groups") else f"class.{key}"
            params[mlflow_key(names.param(names.DATA_PARAM, split, name))] = int(value)
    return params


def write_splits(output_dir: Path, datamodule: Any) -> tuple[Path, Any, list[int]]:
    """``splits.csv`` in ``output_dir``; returns its path, the table and each sample's file
    size (0 for in-memory rows), what :func:`start_run` logs."""
    table = datamodule.splits_table()
    splits = output_dir / names.SPLITS_FILE
    table.to_csv(splits, index=False)
    return splits, table, [_size(path) for path in datamodule.frame["path"]]


def start_run(
    tracker: Any,
    config: dict,
    counts: Any,
    tags: dict[str, str],
    splits: tuple[Path, Any, list[int]],
    data_name: str,
    data_source: str,
) -> None:
    """A new run's params (the flattened resolved ``config``, the splits' ``counts``), tags,
    ``splits.csv`` and dataset inputs (``splits``: from :func:`write_splits`)."""
    from medclf.tracking.datasets import log_split_inputs

    path, table, sizes = splits
    tracker.log_hyperparams(flatten(config))
    tracker.log_hyperparams(split_params(counts))
    tracker.log_artifact(path)
    tracker.set_tags(tags)
    log_split_inputs(tracker.experiment, tracker.run_id, table, sizes, data_name, data_source)


def write_run_file(output_dir: Path, tracker: Any) -> Path:
    """``mlflow_run.json`` in the run directory: the tracking URI, experiment and run id of
    its MLflow run, written once the run is made and has its params and tags."""
    import json

    from medclf.files import write_text

    run = {
        "tracking_uri": tracker.tracking_uri,
        "experiment_id": tracker.experiment_id,
        "run_id": tracker.run_id,
    }
    return write_text(output_dir / names.MLFLOW_RUN_FILE, json.dumps(run, indent=1))


def _size(path: Any) -> int:
    if not isinstance(path, str):  # a row of in-memory arrays (an int: not a file)
        return 0
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def log_startup(trackers: list, phases: dict[str, float], cache: dict | None = None) -> None:
    """The start-up's phases as ``startup/<phase>_s`` metrics; the decoded cache's build
    time and rate (when it decoded images) as ``startup/cache_build_s`` and
    ``startup/cache_images_per_s``."""
    metrics = {f"startup/{k.replace(' ', '_')}_s": v for k, v in phases.items()}
    if cache and cache.get("decoded"):
        metrics["startup/cache_build_s"] = cache["build_s"]
        metrics["startup/cache_images_per_s"] = cache["images_per_s"]
    for tracker in trackers:
        tracker.log_metrics(metrics)


def log_fitted(trackers: list, chosen: dict) -> None:
    """What was fitted on the validation split (``fitted.temperature``, ``fitted.threshold``)."""
    for tracker in trackers:
        tracker.log_hyperparams({names.param(names.FITTED_PARAM, k): v for k, v in chosen.items()})


def mark_pruned(trackers: list, epoch: int) -> None:
    """A search trial the pruner stopped after ``epoch``: ``optuna_state=PRUNED``."""
    from medclf.tracking.sweeps import pruned_tags

    for tracker in trackers:
        tracker.set_tags(pruned_tags(epoch))


def log_outputs(trackers: list, output_dir: Path, checkpoint: str | None, model, example) -> None:
    """The resolved config, the best checkpoint and (``save_model``) the model itself, with
    ``example`` (a test sample) as its input example."""
    from medclf.tracking.model import log_model

    for tracker in trackers:
        tracker.log_artifact(output_dir / names.CONFIG_FILE)
        if checkpoint:
            tracker.log_artifact(checkpoint, names.CHECKPOINTS_DIR)
        if tracker.save_model:
            metadata = example.get("metadata")
            log_model(
                tracker, model, example["image"][None], None if metadata is None else metadata[None]
            )
