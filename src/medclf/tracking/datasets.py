"""The data a run saw, as MLflow dataset inputs: one per split (context ``train``, ``val``,
``test``), so that the runs table's Dataset column names the data and two runs on other
data (a relabelled image, an added file, another split) are told apart by their digests.

Each input is built from the run's sample table (``splits.csv``: sample, split, group,
label) and the files' sizes, never from the pixels: its name is ``datamodule:data``
(``folder:xray``), its digest a SHA-256 of the split's samples, labels and file sizes, its
source the data's path, its schema the table's columns and its profile the counts.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence

import pandas as pd

from medclf.tracking import names

CONTEXT_TAG = names.DATASET_CONTEXT
SPLITS = ("train", "val", "test")


def digest(rows: pd.DataFrame, sizes: Sequence[int]) -> str:
    """12 hex digits of SHA-256 over the (sample, label, size) rows, in sample order."""
    lines = sorted(
        f"{sample}\t{label}\t{size}"
        for sample, label, size in zip(rows["sample"], rows["label"], sizes, strict=True)
    )
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:12]


def split_inputs(table: pd.DataFrame, sizes: Sequence[int], name: str, source: str) -> list:
    """One ``mlflow.entities.DatasetInput`` per split of ``table`` (the sample table, with
    ``sizes`` the files' sizes in bytes, row for row)."""
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.types import ColSpec, Schema

    table = table.assign(size=list(sizes))
    schema = Schema([ColSpec("string", column) for column in ("sample", "group", "label")])
    inputs = []
    for split in SPLITS:
        rows = table[table["split"] == split]
        if rows.empty:
            continue
        profile = {
            "num_rows": len(rows),
            "bytes": int(rows["size"].sum()),
            "labels": {
                str(k): int(v) for k, v in rows["label"].value_counts().sort_index().items()
            },
        }
        dataset = Dataset(
            name=name,
            digest=digest(rows, rows["size"]),
            source_type="local",
            source=json.dumps({"uri": source}),
            schema=json.dumps({"mlflow_colspec": schema.to_dict()}),
            profile=json.dumps(profile),
        )
        inputs.append(DatasetInput(dataset, tags=[InputTag(CONTEXT_TAG, split)]))
    return inputs


def log_split_inputs(client, run_id: str, table, sizes, name: str, source: str) -> None:
    """Log the splits of ``table`` as the run's dataset inputs (see :func:`split_inputs`)."""
    log_inputs(client, run_id, split_inputs(table, sizes, name, source))


def log_inputs(client, run_id: str, inputs: list, attempts: int = 4) -> None:
    """``client.log_inputs``, tried again when another run stored the same dataset at the same
    moment. MLflow's database store looks for the dataset, then inserts it: two runs that
    start together (a team's search, workers on one MLflow server) can both insert it, and
    one fails on the table's unique key (seen with PostgreSQL: ``UniqueViolation ...
    dataset_pk``). Nothing of that call was stored; the next try finds the dataset and
    links it to the run. Any other error is raised at once."""
    from mlflow.exceptions import MlflowException

    for attempt in range(attempts):
        try:
            client.log_inputs(run_id, datasets=inputs)
            return
        except MlflowException as exc:
            if attempt == attempts - 1 or not _duplicate_dataset(exc):
                raise
            time.sleep(0.2 * (attempt + 1))


def _duplicate_dataset(exc: Exception) -> bool:
    """A unique-key violation on MLflow's datasets table, in PostgreSQL's, SQLite's or
    MySQL's words."""
    text = str(exc).lower()
    return "dataset" in text and any(w in text for w in ("unique", "duplicate entry"))


def run_datasets(run) -> dict[str, tuple[str, str]]:
    """``{context: (name, digest)}`` of a run's dataset inputs (``mlflow.get_run(...)``)."""
    found = {}
    for item in run.inputs.dataset_inputs if run.inputs else []:
        tags = {tag.key: tag.value for tag in item.tags}
        found[tags.get(CONTEXT_TAG, "")] = (item.dataset.name, item.dataset.digest)
    return found
